"""Deleting task trees: only inside the workspace folder, never through a symlink.

An agent can leave read-only files and folders (git's own object files are read-only), so a
failed deletion makes the parent writable and retries once. ``shutil.rmtree`` never follows
symlinks, and a symlink in place of a tree is unlinked, not followed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taskinfa_worker.workspace.safety import ensure_inside


def remove_tree(path: Path, root: Path) -> None:
    """Delete ``path`` (a folder strictly inside ``root``); missing is fine."""
    if path.is_symlink():
        path.unlink()
        return
    if not path.exists():
        return
    ensure_inside(path, root)
    if sys.version_info >= (3, 12):  # onerror is deprecated there
        shutil.rmtree(path, onexc=_make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=_make_writable_and_retry)


def remove_if_empty(path: Path, root: Path) -> bool:
    """Delete ``path`` if it is an empty folder strictly inside ``root`` (or a symlink, or
    missing); False when it has content (``remove_tree`` then, in a thread).

    One rmdir, cheap enough for the event loop: a tree the agent left empty (a command agent
    without a repository) costs no trip to a worker thread.
    """
    if path.is_symlink():
        path.unlink()
        return True
    ensure_inside(path, root)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # not empty, or not ours to remove here: the full removal decides
    return True


def _make_writable_and_retry(function: Callable[..., Any], failed: str, _exc_info: object) -> None:
    with contextlib.suppress(OSError):
        os.chmod(os.path.dirname(failed), stat.S_IRWXU)
    if os.path.isdir(failed) and not os.path.islink(failed):
        # An unreadable folder: open it up and delete it with whatever can be deleted.
        with contextlib.suppress(OSError):
            os.chmod(failed, stat.S_IRWXU)
        shutil.rmtree(failed, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        function(failed)
