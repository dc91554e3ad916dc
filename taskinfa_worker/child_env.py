"""What a child process (an agent, git) may inherit from the worker's environment.

Children get an allow-list, never the whole environment: the worker's own secrets
(``TASKINFA_API_KEY``, tokens) and variables that would redirect them (``GIT_DIR``, ...)
stay behind. This module holds the names every kind of child needs; each kind adds its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Who and where: without these, tools cannot find themselves or format text.
BASICS = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ"})
# Corporate CAs: without them HTTPS to the board, the API or git hosts fails behind a proxy.
TLS = frozenset({"SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH"})
PROXIES = frozenset(
    {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
    }
)
# The operator's choice of commit author applies to the worker's and the agent's commits.
GIT_IDENTITY = frozenset(
    {"GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"}
)
COMMON = BASICS | TLS | PROXIES | GIT_IDENTITY


def inherit(
    parent: Mapping[str, str], names: Iterable[str], prefixes: tuple[str, ...] = ()
) -> dict[str, str]:
    """The entries of ``parent`` whose name is in ``names`` or starts with a prefix."""
    allowed = set(names)
    # Names first, values only of the few taken: reading a value of os.environ decodes it.
    return {
        name: parent[name]
        for name in parent
        if name in allowed or (prefixes and name.startswith(prefixes))
    }
