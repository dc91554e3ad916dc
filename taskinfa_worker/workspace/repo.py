"""The per-project mirror and the per-task clones made from it.

Why a bare mirror plus a full clone per task, and not ``git worktree``:

* Worktrees share the mirror's refs. ``fetch --prune`` then deletes (or refuses to update)
  branches that another task has checked out, two tasks cannot check out one branch
  ("already used by worktree"), and a crashed task leaves administrative files that need
  ``git worktree prune`` with the exact right timing. A gc in the mirror must also know
  every worktree's index and HEAD.
* A clone made from a local path hard-links the mirror's object files (git never modifies
  an object or pack file in place, so sharing inodes is safe), so it costs little disk and
  time, yet it is a repository of its own: its refs, index and config are private, the
  mirror can fetch, prune and gc while trees exist, and deleting a tree is ``rm -rf``.
  (``--shared``/``--reference`` would make every tree depend on the mirror's objects; a
  gc after a force-push upstream could then corrupt a running task.) Where hard links are
  impossible git copies the objects instead.

The mirror is ``git clone --bare`` of the repository URL: it keeps the remote's HEAD (the
default branch) and gets only branches and tags (``--mirror`` would also download
``refs/pull/*``). It is cloned into ``<name>.tmp`` and renamed when complete, so a killed
clone never leaves a half mirror under the real name. Callers hold the project lock around
``sync_mirror`` and ``clone_tree``.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from taskinfa_worker.workspace.cleanup import remove_tree
from taskinfa_worker.workspace.git import Git
from taskinfa_worker.workspace.gitenv import AUTHOR_EMAIL, AUTHOR_NAME
from taskinfa_worker.workspace.safety import RepoUrl

FETCH_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
# Every task's latest commit is kept in its project's mirror under this namespace, whether
# or not it was pushed: the fetches above never prune outside heads and tags, so a result
# outlives its task tree, and the next round of the task starts from it.
KEPT_NAMESPACE = "refs/taskinfa/"


def kept_ref(branch: str) -> str:
    return KEPT_NAMESPACE + branch


def mirror_ready(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def _clear_clone_target(path: Path, tmp: Path) -> None:
    """Remove what a killed clone left (``tmp``) and a non-repository in ``path``'s place."""
    remove_tree(tmp, path.parent)
    if path.exists() or path.is_symlink():
        remove_tree(path, path.parent)


async def sync_mirror(git: Git, repo: RepoUrl, path: Path) -> None:
    """Clone the mirror, or fetch it up to date (branches deleted upstream go too)."""
    if mirror_ready(path):
        # The URL is given on the command line (not read from the mirror's config) and the
        # refspecs are explicit, so the mirror's config cannot redirect the fetch.
        await git.run(
            "fetch",
            "--prune",
            "--quiet",
            "--no-write-fetch-head",
            "--",
            repo.url,
            *FETCH_REFSPECS,
            cwd=path,
            repo=repo,
            action=f"fetch {repo.url}",
        )
        return
    tmp = path.with_name(path.name + ".tmp")
    await anyio.to_thread.run_sync(_clear_clone_target, path, tmp)
    await git.run(
        "clone",
        "--bare",
        "--quiet",
        "--",
        repo.url,
        str(tmp),
        cwd=path.parent,
        repo=repo,
        action=f"clone {repo.url}",
    )
    os.rename(tmp, path)


async def default_branch(git: Git, mirror: Path) -> tuple[str | None, str | None]:
    """(branch, commit) to start from: the remote's HEAD, else main, else master.

    (None, None) for an empty repository.
    """
    candidates: list[str] = []
    head = await git.run(
        "symbolic-ref", "-q", "HEAD", cwd=mirror, action="read the default branch", check=False
    )
    if head.ok and head.text.strip().startswith("refs/heads/"):
        candidates.append(head.text.strip())
    candidates += ["refs/heads/main", "refs/heads/master"]
    any_branch = await git.run(
        "for-each-ref",
        "--count=1",
        "--format=%(refname)",
        "refs/heads/",
        cwd=mirror,
        action="list branches",
    )
    if any_branch.text.strip():
        candidates.append(any_branch.text.strip())
    for ref in candidates:
        commit = await git.run(
            "rev-parse",
            "--verify",
            "-q",
            f"{ref}^{{commit}}",
            cwd=mirror,
            action="resolve the default branch",
            check=False,
        )
        if commit.ok:
            return ref.removeprefix("refs/heads/"), commit.text.strip()
    return None, None


async def task_branch_tip(git: Git, mirror: Path, prefix: str) -> tuple[str, str] | None:
    """(branch, commit) of the task's newest branch in the mirror, pushed or kept.

    ``prefix`` is ``taskinfa/<task id>-``: a branch of an earlier round may have another
    slug (the title changed), and the pushed branch may have a person's review commits on
    top of what we kept, so the newest commit among them wins. None for a first round.
    """
    found = await git.run(
        "for-each-ref",
        "--sort=-committerdate",
        "--count=1",
        "--format=%(refname) %(objectname)",
        f"refs/heads/{prefix}*",
        f"{KEPT_NAMESPACE}{prefix}*",
        cwd=mirror,
        action="look for the task's branch",
    )
    line = found.text.strip()
    if not line:
        return None
    ref, _, commit = line.partition(" ")
    branch = ref.removeprefix("refs/heads/").removeprefix(KEPT_NAMESPACE)
    return branch, commit


async def clone_tree(
    git: Git, mirror: Path, tree: Path, branch: str, base: str | None, repo: RepoUrl
) -> None:
    """A private clone of the mirror at ``tree``, on a new ``branch`` made from ``base``."""
    await git.run(
        "clone",
        "--no-checkout",
        "--quiet",
        "--",
        str(mirror),
        str(tree),
        cwd=tree.parent,
        local_copy=True,
        action="copy the repository for the task",
    )
    if base is not None:
        await git.run(
            "checkout", "--quiet", "-b", branch, base, cwd=tree, action="check out the task branch"
        )
    else:  # empty repository: the first commit will start the branch
        await git.run(
            "symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=tree, action="start the branch"
        )
    # origin is the real repository (for the agent and for a PR tool such as gh), never with
    # credentials in it: safety.py refuses URLs that carry any.
    for key, value in (
        ("remote.origin.url", repo.url),
        ("user.name", AUTHOR_NAME),
        ("user.email", AUTHOR_EMAIL),
        ("gc.auto", "0"),
    ):
        await git.run("config", "--", key, value, cwd=tree, action="configure the task tree")
