"""The agent's environment and private folders: what it may see, and where it may write.

Allow-list, not block-list: the agent gets the few parent variables a shell and git need
(plus the operator's ``AGENT_ENV_ALLOW``), never the worker's own secrets; a variable the
worker gains later cannot leak by accident. ``TASKINFA_API_KEY`` reaches it only with
``AGENT_GETS_BOARD_KEY``, even when named in ``AGENT_ENV_ALLOW``.

Each slot has a runtime folder ``{WORKSPACE_DIR}/.agents/<slot>/`` with its own
``CLAUDE_CONFIG_DIR`` (N sessions sharing one ``~/.claude.json`` corrupt it), temporary
folder and ``XDG_RUNTIME_DIR``. The credentials are copied in from the read-only
``CLAUDE_CONFIG_SOURCE`` when it has newer ones.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from loguru import logger

from taskinfa_worker.agent.job import ModelRoute
from taskinfa_worker.agent.reaper import identity
from taskinfa_worker.child_env import COMMON, inherit
from taskinfa_worker.errors import AgentUnavailableError
from taskinfa_worker.settings import Settings

# Names the agent inherits from the worker's environment. Not GIT_DIR, GIT_WORK_TREE,
# GIT_INDEX_FILE and friends: they would point the agent's git at another repository.
# Not GIT_ASKPASS or credential helpers: the agent does not push.
INHERITED = COMMON | {
    "SHELL",
    "LANGUAGE",
    "TERM",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
}
INHERITED_PREFIXES = ("LC_",)

BOARD_KEY = "TASKINFA_API_KEY"
# The Messages API variables of Claude Code (and of agents that follow it).
API_KEY = "ANTHROPIC_API_KEY"
AUTH_TOKEN = "ANTHROPIC_AUTH_TOKEN"  # noqa: S105 - the name of a variable, not a secret
BASE_URL = "ANTHROPIC_BASE_URL"
MODEL = "ANTHROPIC_MODEL"
# Identifies every process of one run, wherever it re-parents (see reaper.sweep_run).
MARKER_VAR = "TASKINFA_AGENT_RUN"
# Identifies the worker a run belongs to (BOT_NAME, pid and start time), so that a worker
# restarted after SIGKILL can stop what its dead earlier life left running, and only that
# (see reaper.sweep_leftovers).
OWNER_VAR = "TASKINFA_AGENT_OWNER"

# Files of CLAUDE_CONFIG_SOURCE each slot gets a copy of: credentials and user settings.
# Sessions, caches and history stay per slot.
CONFIG_FILES = (".credentials.json", "settings.json", "CLAUDE.md", ".claude.json")

# Claude Code gives up an API call after CLAUDE_CODE_MAX_RETRIES retries; the default (10)
# keeps a dead endpoint busy for ~3 minutes before the run fails.
MAX_RETRIES = 3
# Its stream timeouts are clamped to at least 10 s by the CLI itself.
MIN_API_TIMEOUT = 10.0
# Unix socket paths are limited to 108 bytes; the CLI puts sockets in its temporary
# folder, so a longer folder name moves the temporary folders to the system one.
MAX_SOCKET_DIR = 80


@dataclass(frozen=True)
class AgentRuntime:
    """One slot's private folders."""

    root: Path
    config_dir: Path  # CLAUDE_CONFIG_DIR
    tmp_dir: Path  # TMPDIR and CLAUDE_CODE_TMPDIR, emptied before each run
    run_dir: Path  # XDG_RUNTIME_DIR


def slot_folder_name(slot: str) -> str:
    """A folder name for a slot, whatever characters the slot name has."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", slot).strip(".") or "slot"
    if name != slot:
        name = f"{name}-{sha256(slot.encode()).hexdigest()[:8]}"
    return name


def prepare_runtime(settings: Settings, slot: str) -> AgentRuntime:
    """Create (or refresh) the slot's folders; blocking (see ``quick_to_prepare``).

    Raises AgentError when they cannot be made (the agent cannot start without them).
    """
    try:
        return _prepare_runtime(settings, runtime_paths(settings, slot))
    except OSError as exc:
        raise AgentUnavailableError(
            f"cannot prepare the agent's folders: {exc}",
            fix="make WORKSPACE_DIR writable and give its disk free space",
        ) from exc


def runtime_paths(settings: Settings, slot: str) -> AgentRuntime:
    """Where the slot's folders are (nothing is created; the same for every run)."""
    root = _slot_root(settings.workspace_dir, slot)
    config_dir = root / "config"
    scratch = root
    if len(str(root / "run")) > MAX_SOCKET_DIR:
        digest = sha256(str(root).encode()).hexdigest()[:16]
        scratch = Path(tempfile.gettempdir()) / f"taskinfa-{os.getuid()}" / digest
    return AgentRuntime(
        root=root, config_dir=config_dir, tmp_dir=scratch / "tmp", run_dir=scratch / "run"
    )


@functools.lru_cache(maxsize=1024)
def _slot_root(workspace_dir: Path, slot: str) -> Path:
    # Resolved once per slot, not once per run (a realpath is a stat per component).
    return (workspace_dir / ".agents" / slot_folder_name(slot)).resolve()


# What the previous run may leave in its temporary folder for the folders to be prepared
# on the event loop: a few files (a command agent's prompt) are a few unlinks; more, or
# any folder, go to a worker thread.
QUICK_TMP_ENTRIES = 16


def quick_to_prepare(runtime: AgentRuntime) -> bool:
    """Whether ``prepare_runtime`` is a few syscalls this time (the temporary folder holds
    at most QUICK_TMP_ENTRIES files): cheaper on the loop than a trip to a worker thread."""
    try:
        with os.scandir(runtime.tmp_dir) as entries:
            for count, entry in enumerate(entries):
                if count >= QUICK_TMP_ENTRIES or entry.is_dir(follow_symlinks=False):
                    return False
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _prepare_runtime(settings: Settings, runtime: AgentRuntime) -> AgentRuntime:
    root, config_dir = runtime.root, runtime.config_dir
    for folder in (root, config_dir, runtime.run_dir):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
    # Whatever the previous run left in its temporary folder is not this run's business.
    _empty_folder(runtime.tmp_dir)
    _copy_credentials(settings.claude_config_source, config_dir)
    return runtime


def _empty_folder(folder: Path) -> None:
    """Leave ``folder`` existing, private and empty: files are unlinked (the usual case, a
    prompt file), anything else goes with the folder and a fresh one is made."""
    try:
        with os.scandir(folder) as scan:
            entries = list(scan)
        if all(not entry.is_dir(follow_symlinks=False) for entry in entries):
            for entry in entries:
                os.unlink(entry.path)
            folder.chmod(0o700)
            return
    except OSError:
        pass  # missing, or something in it resists: the full removal below
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)


def _copy_credentials(source: Path, target: Path) -> None:
    """Copy each config file that is newer in ``source``; never writes to ``source``.

    Only newer files: the CLI refreshes OAuth tokens in its own copy, and an older source
    file must not overwrite a fresher token.
    """
    if not source.is_dir():
        return  # nothing to copy (no Claude Code login on this machine): one stat, not four
    for name in CONFIG_FILES:
        src = source / name
        dst = target / name
        try:
            if not src.is_file():
                continue
            if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
                continue
            partial = target / f".{name}.copying"
            shutil.copy2(src, partial)
            partial.chmod(0o600)
            os.replace(partial, dst)
        except OSError as exc:
            logger.warning("could not copy {} into the agent's config: {}", src, exc)


def agent_environment(
    settings: Settings,
    runtime: AgentRuntime,
    *,
    marker: str,
    parent: Mapping[str, str],
    route: ModelRoute | None = None,
) -> dict[str, str]:
    """The complete environment of one agent run.

    ``parent`` is the worker's environment (``settings.environment_view()``); only
    allowed names are taken from it. ``marker`` is the run's unique id (``MARKER_VAR``).
    ``route``: the run's model and provider (``ModelRoute``); none, the worker's own.
    """
    env = inherit(parent, INHERITED | set(settings.agent_env_allow), INHERITED_PREFIXES)
    env.pop(BOARD_KEY, None)
    if settings.agent_gets_board_key:
        env[BOARD_KEY] = settings.taskinfa_api_key.get_secret_value()
        env["TASKINFA_API_URL"] = settings.taskinfa_api_url
    env.setdefault("PATH", os.defpath)
    if settings.anthropic_api_key is not None:
        env[API_KEY] = settings.anthropic_api_key.get_secret_value()
    if settings.anthropic_base_url:
        env[BASE_URL] = settings.anthropic_base_url
    _apply_route(env, route or ModelRoute(), settings.model)

    # Bounds, so that the CLI itself never stays silent longer than the stall timeout: each
    # retry prints an api_retry event, so silence lasts one attempt at most. An operator
    # who allow-listed one of these keeps their value.
    stall_ms = int(settings.stall_timeout * 1000)
    floor_ms = int(MIN_API_TIMEOUT * 1000)
    env.setdefault("CLAUDE_CODE_MAX_RETRIES", str(MAX_RETRIES))
    env.setdefault("API_TIMEOUT_MS", str(max(floor_ms, stall_ms * 9 // 10)))
    env.setdefault("CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS", str(max(floor_ms, stall_ms // 2)))

    env.update(
        {
            "CLAUDE_CONFIG_DIR": str(runtime.config_dir),
            "CLAUDE_CODE_TMPDIR": str(runtime.tmp_dir),
            "TMPDIR": str(runtime.tmp_dir),
            "XDG_RUNTIME_DIR": str(runtime.run_dir),
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            # Nobody can answer a credentials prompt: fail instead of hanging.
            "GIT_TERMINAL_PROMPT": "0",
            MARKER_VAR: marker,
            OWNER_VAR: owner_value(settings),
        }
    )
    if os.geteuid() == 0:
        # As root the CLI refuses bypassPermissions unless told it runs in a sandbox; the
        # worker's container is that sandbox.
        env["IS_SANDBOX"] = "1"
    return env


def _apply_route(env: dict[str, str], route: ModelRoute, own_model: str | None) -> None:
    """The run's provider and model. A dashboard provider brings the one credential the
    agent gets: the operator's ANTHROPIC_API_KEY stays behind, so no request can carry both
    (or go to the provider with the operator's key)."""
    if route.auth_token is not None and route.base_url:
        env.pop(API_KEY, None)
        env[AUTH_TOKEN] = route.auth_token.get_secret_value()
        env[BASE_URL] = route.base_url
    model = route.model or own_model
    if model:
        # Claude Code also gets --model; this is for agents that read only the variable.
        # An operator who allow-listed ANTHROPIC_MODEL keeps theirs.
        env.setdefault(MODEL, model)


def owner_value(settings: Settings) -> str:
    """``"<BOT_NAME> <worker pid> <worker start>"``: whose agent a process is."""
    return f"{settings.bot_name} {_own_identity(os.getpid())}"


@functools.cache
def _own_identity(pid: int) -> str:
    # A process's start never changes: read once per process, not once per run.
    return identity(pid) or str(pid)


def owner_entry(settings: Settings) -> bytes:
    """The environment entry every agent process of this worker carries."""
    return f"{OWNER_VAR}={owner_value(settings)}".encode()
