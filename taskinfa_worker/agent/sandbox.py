"""The agent's sandbox: every agent run inside bubblewrap, seeing only its own task.

The agent runs with permissions bypassed on text anyone who edits a task can write, so it
is treated as hostile. ``bwrap`` (a well-kept tool, not namespace code of ours) gives it:

- its own PID namespace: it cannot see or signal the worker or other agents, and every
  process of the run is killed by the kernel once the agent's main process exits;
- ``--die-with-parent``: it dies with the bwrap process, which dies with the worker
  (the parent-death shim arms that signal before it execs bwrap);
- the system read-only (``/`` bound read-only), fresh ``/proc`` and ``/dev``;
- empty, private folders over what it has no business reading: the worker's working
  directory (and the ``.env`` in it), the home folders, ``LOG_DIR`` (every transcript),
  ``WORKSPACE_DIR`` (mirrors, other task trees, other slots' config dirs), the source of
  the Claude credentials, the container's mounted secrets, and ``/tmp``;
- then, writable again, only this run's task tree and this slot's runtime folders
  (``CLAUDE_CONFIG_DIR``, ``TMPDIR``, ``XDG_RUNTIME_DIR``).

The network is shared: the agent needs its API; egress limits are the NetworkPolicy's job.
The process group, the run marker in the environment and the sweep work unchanged: bwrap
stays in the agent's process group (no ``--new-session``), passes the environment through,
and the host's ``/proc`` shows the sandboxed processes with their marker.

``SANDBOX=auto`` uses it where a probe (``bwrap ... true``) works, ``on`` refuses to start
without it (``check`` fails, ``run`` exits 6), ``off`` never uses it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from taskinfa_worker.processes import run_process
from taskinfa_worker.settings import Settings

BWRAP = "bwrap"
# A probe that takes longer than this is a broken bwrap, not a slow one (it takes ~ms).
PROBE_TIMEOUT = 10.0
# What an operator does about SANDBOX=on where bwrap cannot run.
SANDBOX_FIX = (
    "install bubblewrap and allow user namespaces (docs/operations.md#agent-sandbox), "
    "or set SANDBOX=auto"
)
# Where container runtimes mount secrets (Docker, Kubernetes service account tokens).
SECRET_MOUNTS = (Path("/run/secrets"), Path("/var/run/secrets"))
# Namespaces and mounts every sandboxed run gets; the probe starts with the same ones.
BASE_ARGS = (
    "--unshare-pid",
    "--unshare-ipc",
    "--die-with-parent",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
)
# A private, empty /tmp inside: one of the hidden folders (an agent's installation or
# script under it, a checkout cloned into /tmp, is bound back like any other).
PRIVATE_TMP = Path("/tmp")  # noqa: S108 - the agent's own /tmp, not a file of ours


@dataclass(frozen=True)
class SandboxState:
    """Whether agents run sandboxed here, and the sentence saying why."""

    enabled: bool
    reason: str
    bwrap: str | None = None
    # SANDBOX=on without a working bwrap: the worker must not start.
    refused: bool = False
    # SANDBOX=auto without a working bwrap: agents run unsandboxed, worth a warning.
    fell_back: bool = False


@dataclass(frozen=True)
class Probe:
    bwrap: str | None  # None: not usable here
    reason: str


_probed: Probe | None = None


async def probe_bwrap() -> Probe:
    """Run ``bwrap`` once with the sandbox's own options around ``true``; the answer is
    kept for the life of the process (the kernel's rules do not change under it)."""
    global _probed  # one probe per process, shared by check, run and the agents
    if _probed is None:
        _probed = await _probe()
    return _probed


async def _probe() -> Probe:
    if not sys.platform.startswith("linux"):
        return Probe(None, f"bubblewrap needs Linux, this is {sys.platform}")
    found = shutil.which(BWRAP)
    if found is None:
        return Probe(None, "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
    try:
        done = await run_process(
            [found, *BASE_ARGS, "--tmpfs", str(PRIVATE_TMP), "--", "true"],
            cwd=None,
            env={"PATH": os.defpath},  # for `true` inside; nothing of ours is needed
            timeout=PROBE_TIMEOUT,
        )
    except (OSError, TimeoutError) as exc:
        return Probe(None, f"{found} did not run: {exc}")
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        first = why[-1] if why else f"exit status {done.returncode}"
        return Probe(
            None,
            f"{found} cannot make namespaces here ({first}); the container runtime must "
            "allow user namespaces (docs/operations.md)",
        )
    return Probe(found, f"{found} works")


async def sandbox_state(settings: Settings) -> SandboxState:
    """What ``SANDBOX`` resolves to on this machine (the probe runs once per process)."""
    mode = settings.sandbox
    if mode == "off":
        return SandboxState(False, "SANDBOX=off: agents see what the worker's user sees")
    probe = await probe_bwrap()
    if probe.bwrap is not None:
        return SandboxState(
            True,
            f"SANDBOX={mode}: {probe.reason}; each agent sees its own task tree and slot, "
            "the system read-only, its own PID namespace",
            bwrap=probe.bwrap,
        )
    if mode == "on":
        return SandboxState(False, f"SANDBOX=on but {probe.reason}", refused=True)
    return SandboxState(
        False, f"SANDBOX=auto: {probe.reason}, so agents run without a sandbox", fell_back=True
    )


def _existing_dirs(paths: Iterable[Path]) -> list[Path]:
    """Real, existing folders, parents first, never ``/`` (hiding it would hide the system)."""
    found = set()
    for path in paths:
        try:
            real = path.expanduser().resolve()
        except OSError:
            continue
        if real != Path("/") and real.is_dir():
            found.add(real)
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


def hidden_paths(settings: Settings, cwd: Path, home: Path) -> list[Path]:
    """The folders an agent gets an empty tmpfs in place of (see the module docstring)."""
    return _existing_dirs(
        [
            cwd,
            home,
            Path("/home"),
            Path("/root"),
            settings.log_dir,
            settings.workspace_dir,
            settings.claude_config_source,
            *SECRET_MOUNTS,
            PRIVATE_TMP,
        ]
    )


def _under(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == folder or path.is_relative_to(folder) for folder in folders)


@dataclass(frozen=True)
class SandboxLayout:
    """One run's bwrap command line: what is hidden, what is writable again."""

    bwrap: str
    hidden: tuple[Path, ...]
    writable: tuple[Path, ...]  # the task tree first: the agent starts there
    # Files the operator's own command names (AGENT_COMMAND's words without a placeholder:
    # the agent's script): bound back like the executable, never what task text fills in.
    operator_files: tuple[Path, ...] = ()

    def command(self, executable: str, args: Sequence[str], search_path: str) -> list[str]:
        """The argv that runs ``executable`` (an absolute path) with ``args`` inside;
        ``search_path`` is the agent's PATH (where a script's ``env`` finds its
        interpreter)."""
        argv = [self.bwrap, *BASE_ARGS]
        for folder in self.hidden:
            argv += ["--tmpfs", str(folder)]
        argv += self._reachable(executable, search_path)
        for folder in self.writable:
            argv += ["--bind", str(folder), str(folder)]
        argv += ["--chdir", str(self.writable[0]), "--", executable, *args]
        return argv

    def _reachable(self, executable: str, search_path: str) -> list[str]:
        """Read-only binds for an agent installed inside a hidden folder (pyenv or nvm in
        a home, a tool in the worker's checkout or in /tmp). Only what the operator chose is
        bound back, never what task text could name (an argument may hold the prompt): the
        executable's installation, that of its script's interpreter, and the files the
        command itself names."""
        binds: list[str] = []
        given = Path(executable)
        needed = [
            given,
            *self._interpreter(given.resolve(), search_path),
            *(path for path in self.operator_files if path.is_file()),
        ]
        reals = {path.resolve() for path in needed}
        for shown in sorted({self._installation(real) for real in reals if self._hides(real)}):
            binds += ["--ro-bind", str(shown), str(shown)]
        # A path as written that leads elsewhere (a venv's python, a #! line through a
        # symlink) must still lead there inside.
        for path in dict.fromkeys(needed):
            real = path.resolve()
            if path != real and self._hides(path):
                binds += ["--symlink", str(real), str(path)]
        return binds

    def _hides(self, path: Path) -> bool:
        return _under(path, self.hidden)

    def _installation(self, real: Path) -> Path:
        """What an executable needs of its folder: its prefix for ``<prefix>/bin/x``
        (``lib`` and ``share`` come along), its package folder for an npm ``cli.js``, only
        the file when it sits in a hidden folder itself (its neighbours, the ``.env`` among
        them, stay hidden)."""
        folder = real.parent.parent if real.parent.name == "bin" else real.parent
        return real if folder in self.hidden or not self._hides(folder) else folder

    def _interpreter(self, real: Path, search_path: str) -> list[Path]:
        """A script's ``#!`` interpreter as the kernel will look for it (``env`` looks it
        up on the PATH)."""
        try:
            with real.open("rb") as handle:
                first = handle.readline(256)
        except OSError:
            return []
        words = first[2:].decode(errors="replace").split() if first.startswith(b"#!") else []
        if words and words[0].endswith("/env"):
            words = [word for word in words[1:] if not word.startswith("-")]
            found = shutil.which(words[0], path=search_path) if words else None
            words = [found] if found else []
        if not words:
            return []
        return [Path(words[0])]


def layout_for(
    state: SandboxState,
    settings: Settings,
    *,
    tree: Path,
    slot_dirs: Sequence[Path],
    operator_args: Sequence[str] = (),
) -> SandboxLayout | None:
    """The layout of one run, or None when agents run unsandboxed. ``operator_args``: the
    command's arguments as the operator wrote them (no task text in them); those that are
    absolute paths are bound back (a relative one is in the task tree, where it starts)."""
    if not state.enabled or state.bwrap is None:
        return None
    writable = tuple(path.resolve() for path in (tree, *slot_dirs))
    hidden = hidden_paths(settings, Path.cwd(), Path(os.path.expanduser("~")))
    named = tuple(Path(arg) for arg in operator_args if os.path.isabs(arg))
    return SandboxLayout(state.bwrap, tuple(hidden), writable, named)
