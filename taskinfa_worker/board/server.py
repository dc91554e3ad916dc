"""Runs the local board: opens the store, settles the API key, serves until cancelled.

``serve_board`` is what ``taskinfa-worker board`` calls; it also prints the kanban page's
one-time sign-in link (``page.py``, ``access.py``). ``start_board`` starts the same
server without blocking (tests and benchmarks use it and read the bound port back).

The API key: with ``--api-key`` that key is stored (as its SHA-256 only). Without it, the
first start mints a ``tk_`` key and prints it once; later starts on the same database find
the stored hash and print only a note, because the key itself was never kept.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from taskinfa_worker.board.page import PAGE
from taskinfa_worker.board.profiles import BoardOptions, options_for
from taskinfa_worker.board.routes import API_PREFIX, create_app
from taskinfa_worker.board.store import BoardStore, hash_key
from taskinfa_worker.errors import ConfigError


def generate_api_key() -> str:
    """A fresh board key in the real format, ``tk_`` and random characters."""
    return f"tk_{secrets.token_urlsafe(32)}"


def ensure_api_key(store: BoardStore, api_key: str | None) -> str | None:
    """Make sure the store knows a key; return the key only when it was generated here."""
    if api_key is not None:
        if not api_key.strip():
            raise ConfigError("--api-key must not be empty.")
        store.add_api_key(api_key.strip())
        return None
    if store.has_api_keys():
        return None
    generated = generate_api_key()
    store.add_api_key(generated)
    return generated


def _page_key_hash(store: BoardStore, api_key: str | None, generated: str | None) -> str:
    """The key the sign-in link stands for: the one given or made now, else the oldest."""
    known = api_key.strip() if api_key is not None else generated
    return hash_key(known) if known is not None else store.key_hashes()[0]


@dataclass
class RunningBoard:
    """A board serving HTTP. ``url`` ends in ``/api``; ``aclose()`` stops it."""

    url: str
    host: str
    port: int
    runner: web.AppRunner
    _closed: bool = False

    @property
    def page(self) -> str:
        """The kanban page's address (it asks for the key, or takes a ``login_link``)."""
        return self.url.removesuffix(API_PREFIX) + "/"

    def login_link(self, key_hash: str) -> str:
        """A one-time link that signs a browser in as the key with ``key_hash``."""
        token = self.runner.app[PAGE].access.mint_login(key_hash)
        return f"{self.page}?login={token}"

    async def aclose(self) -> None:
        """Stop serving (idempotent); the store stays open for its owner to close."""
        if not self._closed:
            self._closed = True
            await self.runner.cleanup()


async def start_board(
    store: BoardStore, options: BoardOptions, host: str = "127.0.0.1", port: int = 0
) -> RunningBoard:
    """Serve ``store`` on ``host:port`` (0 picks a free port) and return once listening."""
    # No access log: a benchmark sends thousands of requests and the lines say nothing new.
    runner = web.AppRunner(create_app(store, options), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
    except BaseException:
        await runner.cleanup()
        raise
    shown = f"[{host}]" if ":" in host else host
    return RunningBoard(f"http://{shown}:{bound}{API_PREFIX}", host, int(bound), runner)


async def serve_board(
    db: Path,
    host: str,
    port: int,
    api_key: str | None,
    profile: str = "full",
    **switches: Any,
) -> None:
    """Run the board on ``db`` until cancelled; print the URL (and a new key) when ready.

    ``profile`` picks the release to behave as (``profiles.py``); ``switches`` are
    ``BoardOptions`` fields that override it (the flags given on the command line).
    """
    if switches.get("rate_limit", 0) < 0:
        raise ConfigError("--rate-limit must be 0 (off) or a positive number per minute.")
    try:
        options = options_for(profile, **switches)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    store = BoardStore(db)
    try:
        generated = ensure_api_key(store, api_key)
        board = await start_board(store, options, host, port)
        try:
            if generated is not None:
                # Printed exactly once, on purpose: only its hash is stored.
                print(f"Generated API key (shown once): {generated}", flush=True)
            elif api_key is None:
                print(
                    f"Using the API key stored in {db} (only its hash is kept; "
                    "pass --api-key to set a key you know).",
                    flush=True,
                )
            # One use only: whoever opens it first is signed in, and it is spent.
            link = board.login_link(_page_key_hash(store, api_key, generated))
            print(f"Board page (one-time sign-in link): {link}", flush=True)
            if options.profile != "full":
                print(f"Behaving as the {options.profile} release (--profile)", flush=True)
            # Last line, so whoever waits for it also has the key.
            print(f"Board listening on {board.url}", flush=True)
            await asyncio.Event().wait()
        finally:
            await board.aclose()
    finally:
        store.close()
