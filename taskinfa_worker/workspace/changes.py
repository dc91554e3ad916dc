"""What the agent changed, from the files themselves (never from the agent's own account).

In a git tree: the difference between the base commit and "everything the agent left",
that is the tree of ``HEAD`` plus its uncommitted and untracked files (``.gitignore`` is
honoured, as a commit would). The working state is written into a throwaway index
(``GIT_INDEX_FILE``) so the agent's own index is not touched when nothing is committed.
Renames are detected (``-M``) and both their old and new paths are reported.

In a plain folder: a snapshot of (mtime, size) per file at prepare, compared at the end.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from taskinfa_worker.workspace.git import Git

Snapshot = dict[str, tuple[int, int]]


async def empty_tree(git: Git, tree: Path) -> str:
    result = await git.run(
        "hash-object", "-t", "tree", "--stdin", cwd=tree, stdin=b"", action="hash a tree"
    )
    return result.text.strip()


async def head_commit(git: Git, tree: Path) -> str | None:
    """The commit ``HEAD`` points to; None on a branch without commits."""
    result = await git.run(
        "rev-parse", "--verify", "-q", "HEAD^{commit}", cwd=tree, action="read HEAD", check=False
    )
    return result.text.strip() if result.ok else None


async def working_tree(git: Git, tree: Path, head: str | None) -> str:
    """The tree object of HEAD plus every uncommitted and untracked (not ignored) file."""
    git_dir = Path(
        (
            await git.run("rev-parse", "--absolute-git-dir", cwd=tree, action="find .git")
        ).text.strip()
    )
    handle, index = tempfile.mkstemp(prefix="taskinfa-index-", dir=git_dir)
    os.close(handle)
    os.unlink(index)  # git wants to create it; an empty file is not a valid index
    try:
        env = {"GIT_INDEX_FILE": index}
        if head is not None:
            await git.run("read-tree", head, cwd=tree, extra_env=env, action="read the base")
        await git.run("add", "--all", cwd=tree, extra_env=env, action="list the changes")
        result = await git.run("write-tree", cwd=tree, extra_env=env, action="list the changes")
        return result.text.strip()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(index)


async def changed_paths(git: Git, tree: Path, base: str, target: str) -> list[str]:
    """Paths added, modified, deleted or renamed (old and new) between two tree-ishes."""
    result = await git.run(
        "diff-tree",
        "-r",
        "-z",
        "-M",
        "--name-status",
        "--no-ext-diff",
        base,
        target,
        cwd=tree,
        action="compare with the base commit",
    )
    fields = result.stdout.split(b"\0")
    paths: set[str] = set()
    index = 0
    while index < len(fields):
        status = fields[index].decode("ascii", "replace")
        index += 1
        if not status:
            continue
        count = 2 if status[0] in "RC" else 1
        names = fields[index : index + count]
        index += count
        if status[0] == "C":
            names = names[1:]  # a copy leaves its source unchanged
        paths.update(name.decode("utf-8", "replace") for name in names)
    return sorted(paths)


def is_empty(root: Path) -> bool:
    """Whether the folder has no entries at all (its snapshot is then ``{}``)."""
    try:
        with os.scandir(root) as entries:
            return next(entries, None) is None
    except OSError:
        return False  # let the full walk (in a thread) meet the error


def snapshot(root: Path) -> Snapshot:
    """(mtime_ns, size) of every file below ``root``, symlinks not followed."""
    result: Snapshot = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            full = os.path.join(folder, name)
            try:
                info = os.lstat(full)
            except OSError:
                continue
            result[os.path.relpath(full, root)] = (info.st_mtime_ns, info.st_size)
    return result


def compare_snapshots(before: Snapshot, after: Snapshot) -> list[str]:
    """Files created, modified or deleted between two snapshots."""
    changed = {path for path, stamp in after.items() if before.get(path) != stamp}
    changed |= before.keys() - after.keys()
    return sorted(changed)
