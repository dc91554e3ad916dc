"""The environment and ``-c`` options every git call of the worker gets.

Why each piece is there:

* The child environment is built from an allow-list (``PATH``, ``HOME``, locale, proxies, CA
  files, ssh agent, ``GIT_AUTHOR_*``...). Nothing else of the worker's environment (the
  board key, the Anthropic key, ``GIT_DIR`` and friends) reaches git.
* Nothing may wait for a person: ``GIT_TERMINAL_PROMPT=0``, ``core.askPass`` emptied (unless
  the operator set ``GIT_ASKPASS``), ssh in ``BatchMode``. A private repository without
  credentials fails at once with a clear error instead of hanging until the timeout.
* The token never appears in a URL, a config file or an argument: git gets it from a
  credential helper given on the command line, which echoes an environment variable of
  that one child. The helper is scoped with ``credential.<scheme://host>.helper`` to the
  repository's host, and only for hosts in ``GIT_TOKEN_HOSTS`` (default ``github.com``):
  a repository URL written on the board cannot make the worker send the token elsewhere,
  not even through an ``insteadOf`` rewrite (git matches the helper against the final URL).
* Hardening against what a repository or the agent may have written into a tree's config:
  hooks and fsmonitor off (both run commands), no commit signing (could prompt), only the
  allowed protocols (``ext::`` never; ``file`` only for the worker's own local copies or with
  ``ALLOW_LOCAL_REPOS``), TLS verification on. The agent runs with the worker's user id and
  could read the worker's environment anyway, so this protects against accidents and hostile
  repository content, not against a hostile agent.
* ``gc.autoDetach=false``: an automatic gc must stay inside our process group and timeout,
  not daemonize and outlive the kill.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import SecretStr

from taskinfa_worker.child_env import COMMON, inherit
from taskinfa_worker.workspace.safety import RepoUrl

AUTHOR_NAME = "taskinfa-worker"
AUTHOR_EMAIL = "worker@taskinfa.local"
TOKEN_VAR = "TASKINFA_GIT_TOKEN"  # noqa: S105 - the name of a variable, not a secret

# Reads the token from the child's environment at the moment git asks; answers only "get".
CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; echo username=x-access-token; '
    f'echo "password=${TOKEN_VAR}"; }}; f'
)

# What git needs beyond the common names: ssh agent and command, askpass, a temp folder.
ENV_ALLOW = COMMON | {"TMPDIR", "SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "GIT_ASKPASS"}

_HARDENING = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "gc.autoDetach=false",
    "maintenance.autoDetach=false",
    "advice.detachedHead=false",
    "init.defaultBranch=main",
    "http.sslVerify=true",
    "protocol.allow=never",
    "protocol.https.allow=always",
    "protocol.ssh.allow=always",
    "protocol.ext.allow=never",
    "protocol.fd.allow=never",
)


def _pairs(values: Iterable[str]) -> list[str]:
    return [arg for value in values for arg in ("-c", value)]


class GitEnv:
    """Builds the environment and the ``-c`` options of one kind of git call."""

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        token: SecretStr | None,
        token_hosts: Iterable[str],
        allow_local: bool,
    ) -> None:
        self._token = token.get_secret_value() if token is not None else None
        self._token_hosts = {host.strip().lower() for host in token_hosts if host.strip()}
        self._allow_local = allow_local
        env = inherit(environ, ENV_ALLOW)
        env["GIT_TERMINAL_PROMPT"] = "0"
        env["GCM_INTERACTIVE"] = "never"
        env["LC_ALL"] = "C"  # git's messages in English, for the errors we classify
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        self._operator_askpass = "GIT_ASKPASS" in env
        self._env = env

    def env(self, repo: RepoUrl | None = None) -> dict[str, str]:
        """The child's environment; carries the token only for a network call it may see."""
        env = dict(self._env)
        if repo is not None and self._token_scope(repo) is not None and self._token:
            env[TOKEN_VAR] = self._token
        return env

    def config(self, *, repo: RepoUrl | None = None, local_copy: bool = False) -> list[str]:
        """``-c`` options: hardening, allowed protocols, and the credential helper.

        ``repo`` is the remote of a network call (clone, fetch, push); ``local_copy`` marks
        the worker's own clone of its mirror, which uses the ``file`` transport.
        """
        values = list(_HARDENING)
        file_ok = local_copy or self._allow_local
        values.append(f"protocol.file.allow={'always' if file_ok else 'never'}")
        # Plain http only reaches git for a loopback test server (safety.py checks that).
        values.append(f"protocol.http.allow={'always' if self._allow_local else 'never'}")
        if not self._operator_askpass:
            values.append("core.askPass=")
        if repo is not None:
            scope = self._token_scope(repo)
            if scope is not None and self._token:
                # An empty helper clears the helpers configured before (global, system,
                # the repository), so only ours answers, and only for this host.
                values.append("credential.helper=")
                values.append(f"credential.{scope}.helper={CREDENTIAL_HELPER}")
        return _pairs(values)

    @staticmethod
    def identity() -> list[str]:
        """The worker's commit identity; ``GIT_AUTHOR_*``/``GIT_COMMITTER_*`` still win."""
        return _pairs((f"user.name={AUTHOR_NAME}", f"user.email={AUTHOR_EMAIL}"))

    def tool_env(self, repo: RepoUrl) -> dict[str, str]:
        """Environment of the PR command: like git's, plus the token for ``gh`` when the
        repository's host is one the token may be sent to."""
        env = dict(self._env)
        if self._token and self._token_scope(repo) is not None:
            env["GH_TOKEN"] = self._token
            env["GITHUB_TOKEN"] = self._token
        return env

    def _token_scope(self, repo: RepoUrl) -> str | None:
        scope = repo.credential_scope
        if scope is None or repo.host not in self._token_hosts:
            return None
        return scope
