"""Running a process as an ordinary user, the way the worker runs in production.

Tests of what one process may read of another of the same user mean nothing as root (root
reads everything). As root (CI), ``ordinary_user()`` creates one system user for the tests,
once per machine, and ``User.command`` runs an argv as that user through ``setpriv``; as
anyone else, the current user is already ordinary and commands run unchanged.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

TEST_USER = "taskinfa-test"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run as this user (unchanged when it is already ours)."""
        if self.uid == os.geteuid():
            return list(argv)
        ids = [f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        return ["setpriv", *ids, "--", *argv]

    def python(self) -> tuple[str, list[str]]:
        """An interpreter this user can run with the project's packages, and the folders
        to put on its PYTHONPATH: the test's own, or (when that one lives where the user
        cannot go, e.g. root's pyenv) the system's of the same version, given the
        virtualenv's site-packages."""
        if self._can_run(sys.executable):
            return sys.executable, []
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        system = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
        if system is None or not self._can_run(system):
            pytest.skip(f"no {version} that {self.name} may run (the tests' is {sys.executable})")
        return system, [path for path in sys.path if path.endswith("site-packages")]

    def _can_run(self, interpreter: str) -> bool:
        # Asked of access(2) as the worker will (shutil.which), not only by running it:
        # on some machines exec reaches a file that access() says is out of reach.
        probe = f"import os, sys; sys.exit(not os.access({interpreter!r}, os.X_OK))"
        done = subprocess.run(
            self.command([interpreter, "-c", probe]), capture_output=True, check=False
        )
        return done.returncode == 0

    def folder(self, prefix: str) -> Path:
        """A new folder under the system's temporary folder, owned by this user (pytest's
        own tmp_path is private to the user running pytest)."""
        path = Path(tempfile.mkdtemp(prefix=prefix))
        os.chown(path, self.uid, self.gid)
        return path


def ordinary_user() -> User:
    """A user without root's rights to run worker and agent as; skips the test when there
    is none to be had (root without useradd or setpriv)."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return User(entry.pw_name, entry.pw_uid, entry.pw_gid)
    for tool in ("useradd", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"running as root and {tool} is missing: no ordinary user to test as")
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        # Parallel test processes may race to create it: whoever loses finds it made.
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            capture_output=True,
            check=False,
        )
        try:
            entry = pwd.getpwnam(TEST_USER)
        except KeyError:
            pytest.skip(f"running as root and `useradd {TEST_USER}` failed")
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid)
