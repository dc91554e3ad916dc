"""Who may use the board: a bearer key, or a page session that stands for one.

The page never holds the key in script-readable storage. A person gets a session cookie
(HttpOnly, SameSite=Strict) either from the one-time link the board prints at start
(``/?login=<token>``; the token is spent on first use) or by typing the key into the page
once (``POST /api/session`` with the key as a bearer). A session remembers only the hash of
the key it stands for, so revoking the key ends its sessions too, and it grants exactly
what that key grants: the same routes, the same validation, the same rate limit.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from taskinfa_worker.board.problems import Unauthenticated
from taskinfa_worker.board.store import BoardStore, hash_key

SESSION_COOKIE: Final = "taskinfa_board_session"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    """An authenticated request: its workspace, and the key (hash) its budget is counted on."""

    workspace: str
    key_hash: str
    by_cookie: bool


class PageAccess:
    """One-time login tokens and page sessions, in memory: a restart asks again."""

    def __init__(self) -> None:
        self._logins: dict[str, str] = {}  # one-time token -> key hash
        self._sessions: dict[str, str] = {}  # session cookie value -> key hash

    def mint_login(self, key_hash: str) -> str:
        """A token that opens one session for the key with ``key_hash``, once."""
        token = secrets.token_urlsafe(24)
        self._logins[token] = key_hash
        return token

    def spend_login(self, token: str) -> str | None:
        """A new session's cookie value for a valid token, which is then gone; else None."""
        key_hash = self._logins.pop(token, None)
        return None if key_hash is None else self.open_session(key_hash)

    def open_session(self, key_hash: str) -> str:
        session = secrets.token_urlsafe(32)
        self._sessions[session] = key_hash
        return session

    def close_session(self, session: str) -> None:
        self._sessions.pop(session, None)

    def caller(self, request: web.Request, store: BoardStore) -> Caller:
        """Who sent ``request``: a bearer key first, else a page session; 401 otherwise."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise Unauthenticated("Missing API key: send Authorization: Bearer tk_...")
            return _known(store, hash_key(key.strip()), by_cookie=False)
        session = request.cookies.get(SESSION_COOKIE)
        if session is None:
            raise Unauthenticated("Missing API key: send Authorization: Bearer tk_...")
        key_hash = self._sessions.get(session)
        if key_hash is None:
            raise Unauthenticated("The page session has ended: enter the board's key again")
        if request.method not in SAFE_METHODS and not _same_origin(request):
            # SameSite=Strict keeps other sites' requests from carrying the cookie; this is
            # the second lock, for browsers that do not honour it.
            raise Unauthenticated("A page session acts only from the board's own page")
        return _known(store, key_hash, by_cookie=True)


def set_session_cookie(response: web.StreamResponse, session: str) -> None:
    response.set_cookie(
        SESSION_COOKIE, session, httponly=True, samesite="Strict", path="/", max_age=None
    )


def _known(store: BoardStore, key_hash: str, *, by_cookie: bool) -> Caller:
    workspace = store.workspace_for_key_hash(key_hash)
    if workspace is None:
        raise Unauthenticated("Invalid API key")
    return Caller(workspace, key_hash, by_cookie)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not sent by browsers' fetch for same-origin GETs; writes do send it
    return origin in (f"http://{request.host}", f"https://{request.host}")
