"""Refuse hostile input before any git process runs.

Everything here is pure string work: a task id, a title or a repository URL comes from the
board, which anybody with a key can write to, so each of them is checked against an
allow-list *before* it reaches a command line or a path. What passes is then used only in
argument lists (never a shell) and after ``--`` where git's syntax allows.

Repository URLs (``check_repository_url``):

* ``https://host[:port]/path`` and ``ssh://[user@]host[:port]/path`` and the scp-like
  ``[user@]host:path``. Nothing else: no ``ext::``/``fd::`` transports (which run
  commands), no ``git://``, no ``file://``, no option-looking ``-...`` values, no whitespace
  or control characters, no credentials inside the URL (they would be stored in
  ``.git/config``; the token travels through a credential helper instead).
* Hosts and users must not start with ``-`` (``ssh://-oProxyCommand=...`` turns into an ssh
  option: CVE-2017-1000117), and use host-name characters only.
* With ``allow_local_repos`` (tests, development) also absolute paths, ``file:///...`` and
  plain ``http://`` to a loopback address (a local test server).

Ids (``check_id``) are refused when empty, too long, or when they contain ``/``, ``\\``,
``..``, NUL or control characters; folder names and branch names are then *derived* from
them with a strict character set, so even an id that passes cannot shape a path.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from taskinfa_worker.errors import UnsafeInputError

MAX_ID_LENGTH = 128
MAX_URL_LENGTH = 500  # what the board accepts for repository_url
SLUG_LENGTH = 40

UrlKind = Literal["https", "ssh", "local", "http"]

_CONTROL = re.compile(r"[\x00-\x20\x7f]")  # control characters and space
_ID_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
# Conservative: what GitHub, GitLab and Gitea paths use, plus percent-encoding.
_PATH = re.compile(r"[A-Za-z0-9._~/%+-]+")
_SCP = re.compile(r"(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+):(?P<path>.+)")
_LOOPBACK_NAMES = {"localhost"}


@dataclass(frozen=True)
class RepoUrl:
    """A repository URL that passed the checks."""

    url: str  # exactly as given; passed to git after ``--``
    kind: UrlKind
    host: str | None  # lower-case host (None for local paths), scopes the credential helper
    port: int | None = None

    @property
    def credential_scope(self) -> str | None:
        """``https://host[:port]``: the prefix git matches ``credential.<url>.helper`` to."""
        if self.kind not in ("https", "http") or self.host is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.kind}://{host}{port}"


def refuse(reason: str) -> UnsafeInputError:
    return UnsafeInputError(reason)


def check_repository_url(url: str, *, allow_local: bool) -> RepoUrl:
    """Return the checked URL, or raise ``UnsafeInputError`` saying why it was refused."""
    if not isinstance(url, str) or not url:
        raise refuse("the repository URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise refuse(f"the repository URL is longer than {MAX_URL_LENGTH} characters")
    if _CONTROL.search(url) or not url.isascii():
        raise refuse("the repository URL contains whitespace, control or non-ASCII characters")
    if url.startswith("-"):
        raise refuse("the repository URL starts with '-' (it would be read as a git option)")
    if "::" in url.split("/", 1)[0]:
        raise refuse("git remote-helper transports (such as ext:: or fd::) are not allowed")

    lowered = url.lower()
    if lowered.startswith("https://"):
        return _check_http_like(url, "https")
    if lowered.startswith("http://"):
        result = _check_http_like(url, "http")
        if not (allow_local and _is_loopback(result.host)):
            raise refuse("plain http:// repositories are not allowed; use https:// or ssh://")
        return result
    if lowered.startswith("ssh://"):
        return _check_ssh(url)
    if lowered.startswith("file:") or url.startswith("/"):
        return _check_local(url, allow_local)
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise refuse(
            f"the {scheme!r} protocol is not allowed; use https://, ssh:// or git@host:path"
        )
    match = _SCP.fullmatch(url)
    if match and "/" not in url.split(":", 1)[0]:
        _check_user(match["user"])
        host = _check_host(match["host"])
        _check_path(match["path"])
        return RepoUrl(url=url, kind="ssh", host=host)
    raise refuse(
        "the repository URL is not https://, ssh:// or git@host:path "
        "(local paths are only allowed with ALLOW_LOCAL_REPOS)"
    )


def _check_http_like(url: str, kind: Literal["https", "http"]) -> RepoUrl:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise refuse(
            "credentials inside the repository URL are not allowed (they would be stored in "
            "the git config); set GITHUB_TOKEN instead"
        )
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise refuse("the repository URL must not have a query or fragment")
    host = _check_host(parts.hostname or "")
    try:
        port = parts.port
    except ValueError:
        raise refuse("the repository URL has an invalid port") from None
    _check_path(parts.path.lstrip("/"))
    return RepoUrl(url=url, kind=kind, host=host, port=port)


def _check_ssh(url: str) -> RepoUrl:
    parts = urlsplit(url)
    if parts.password is not None:
        raise refuse("passwords inside the repository URL are not allowed")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise refuse("the repository URL must not have a query or fragment")
    _check_user(parts.username)
    host = _check_host(parts.hostname or "")
    try:
        port = parts.port
    except ValueError:
        raise refuse("the repository URL has an invalid port") from None
    _check_path(parts.path.lstrip("/"))
    return RepoUrl(url=url, kind="ssh", host=host, port=port)


def _check_local(url: str, allow_local: bool) -> RepoUrl:
    if not allow_local:
        raise refuse("local repositories (paths, file://) are only allowed with ALLOW_LOCAL_REPOS")
    path = url
    if url.lower().startswith("file:"):
        if not url.lower().startswith("file:///"):
            raise refuse("only file:///absolute/path URLs are allowed")
        path = url[len("file://") :]
    if not path.startswith("/") or "\\" in path:
        raise refuse("a local repository must be an absolute path")
    return RepoUrl(url=url, kind="local", host=None)


def _check_host(host: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise refuse("the repository URL has no host")
    if host.startswith("-"):
        raise refuse("the repository host starts with '-' (it would be read as an ssh option)")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOST.fullmatch(host) or ".." in host:
        raise refuse("the repository host is not a valid host name")
    return host.lower()


def _check_user(user: str | None) -> None:
    if user is None:
        return
    if not _USER.fullmatch(user):
        raise refuse("the user name in the repository URL is not allowed")


def _check_path(path: str) -> None:
    if not path:
        raise refuse("the repository URL has no path")
    if path.startswith("-") or not _PATH.fullmatch(path):
        raise refuse("the repository path contains characters that are not allowed")
    if any(part == ".." for part in path.split("/")):
        raise refuse("the repository path must not contain '..'")


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_id(value: str, what: str) -> str:
    """A board id that is safe to derive names from, or ``UnsafeInputError``."""
    if not isinstance(value, str) or not value:
        raise refuse(f"the {what} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise refuse(f"the {what} is longer than {MAX_ID_LENGTH} characters")
    if "/" in value or "\\" in value:
        raise refuse(f"the {what} contains a slash")
    if ".." in value:
        raise refuse(f"the {what} contains '..'")
    if _ID_CONTROL.search(value):
        raise refuse(f"the {what} contains NUL or control characters")
    if value.strip(".") == "":
        raise refuse(f"the {what} is only dots")
    return value


def safe_name(value: str) -> str:
    """A folder/ref component derived from a checked id: ``[A-Za-z0-9_-]`` only.

    When characters had to be replaced, a short hash of the original is appended, so two
    different ids never share a name.
    """
    name = re.sub(r"[^A-Za-z0-9_-]", "_", value)[:64]
    if name != value:
        name = f"{name}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"
    return name


def slugify(title: str, length: int = SLUG_LENGTH) -> str:
    """Lower-case ASCII ``[a-z0-9-]`` of a title, at most ``length`` characters."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    slug = slug[:length].rstrip("-")
    return slug or "task"


def task_branch(task_id: str, title: str) -> str:
    """``taskinfa/{task_id}-{slug}``; always a valid git branch name (checked id assumed)."""
    return f"{task_branch_prefix(task_id)}{slugify(title)}"


def task_branch_prefix(task_id: str) -> str:
    """What every branch of one task starts with, whatever its title was at the time."""
    return f"taskinfa/{safe_name(task_id)}-"


def ensure_inside(path: Path, root: Path) -> Path:
    """``path`` resolved, if it lies strictly inside ``root`` (resolved); else refuse."""
    resolved_root = _resolved_root(root)
    resolved = path.resolve()
    if resolved == resolved_root or not resolved.is_relative_to(resolved_root):
        raise refuse(f"the path {path} is outside the workspace folder")
    return resolved


@functools.lru_cache(maxsize=16)
def _resolved_root(root: Path) -> Path:
    # The workspace folder is resolved once, not on every check (a realpath is a stat per
    # component). Were it re-pointed later, paths under it would resolve elsewhere and be
    # refused: the cache can only make the check stricter.
    return root.resolve()
