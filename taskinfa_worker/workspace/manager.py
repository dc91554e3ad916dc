"""``GitWorkspaces``: an isolated tree per task, safe when slots and processes share a volume.

Layout under ``WORKSPACE_DIR``::

    repos/<project>-<url hash>.git     bare mirror of the repository (cache, kept)
    repos/<project>-<url hash>.lock    flock: one process fetches or copies it at a time
    tasks/<task>-<random>/             the task's own clone, on taskinfa/<task>-<slug>
    tasks/<task>-<random>.lock         flock held from prepare to discard
    tasks/<task>-<random>.kept         marker of a tree kept by KEEP_WORKSPACES

Concurrency: the mirror is fetched and copied under its project lock (an in-process lock for
the slots of this process, then a file lock for other processes); different projects never
wait for each other. Each task then works in a private clone (see ``repo.py`` for why not
``git worktree``), so two tasks of one project share no working tree, index or ref.

Crashes: a tree is in use exactly while its ``.lock`` is flock'ed, and the kernel drops
that lock when its process dies. ``prune_stale`` deletes every tree whose lock it can take,
so it is safe while other worker processes run on the same volume. Random suffixes keep
a retried task from meeting the tree of its earlier attempt.

Every id, title and URL is checked by ``safety.py`` before a path is built or git runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from loguru import logger

from taskinfa_worker.client.models import Project, Task
from taskinfa_worker.errors import WorkspaceError
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings, environment_snapshot
from taskinfa_worker.workspace import changes, publish, repo
from taskinfa_worker.workspace.cleanup import remove_if_empty, remove_tree
from taskinfa_worker.workspace.git import Git
from taskinfa_worker.workspace.gitenv import GitEnv
from taskinfa_worker.workspace.locks import FileLock, KeyedLocks
from taskinfa_worker.workspace.protocol import Delivery, Workspace, WorkspaceResult
from taskinfa_worker.workspace.safety import (
    RepoUrl,
    check_id,
    check_repository_url,
    ensure_inside,
    safe_name,
    task_branch,
    task_branch_prefix,
)


@dataclass
class _Active:
    """What the manager remembers about a prepared workspace until it is discarded."""

    name: str
    lock: FileLock
    repo: RepoUrl | None
    snapshot: changes.Snapshot = field(default_factory=dict)
    mirror_key: str = ""


class GitWorkspaces:
    """The ``Workspaces`` the pool uses: git clones per task, plain folders without a repo."""

    def __init__(self, settings: Settings, redactor: Redactor) -> None:
        self._settings = settings
        self._redact = redactor
        redactor.add(settings.github_token)
        self._root = settings.workspace_dir.expanduser().absolute()
        self._repos = self._root / "repos"
        self._tasks = self._root / "tasks"
        env = GitEnv(
            environment_snapshot(),
            token=settings.github_token,
            token_hosts=settings.git_token_hosts,
            allow_local=settings.allow_local_repos,
        )
        self._env = env
        self._git = Git(env, redactor, settings.git_timeout)
        self._projects = KeyedLocks(self._repos)
        # A slot may wait behind every other slot's fetch and copy of the same project.
        self._lock_wait = settings.git_timeout * (2 * settings.concurrency + 2)
        self._fetched: dict[str, float] = {}
        self._active: dict[Path, _Active] = {}

    def __repr__(self) -> str:
        return f"<GitWorkspaces {self._root} active={len(self._active)}>"

    @property
    def root(self) -> Path:
        return self._root

    # --- prepare -------------------------------------------------------------------------

    async def prepare(self, task: Task, project: Project | None) -> Workspace:
        task_id = check_id(task.id, "task id")
        url = (project.repository_url or "") if project is not None else ""
        checked: RepoUrl | None = None
        mirror_key = ""
        if project is not None and url:
            mirror_key = f"{safe_name(check_id(project.id, 'project id'))}-{_digest(url)}"
            checked = check_repository_url(url, allow_local=self._settings.allow_local_repos)
        self._make_folders()
        name = f"{safe_name(task_id)}-{secrets.token_hex(4)}"
        tree = self._tasks / name
        ensure_inside(tree, self._root)
        lock = FileLock(self._tasks / f"{name}.lock")
        if not lock.try_acquire():
            raise WorkspaceError(f"the task folder {name} is in use by another worker")
        try:
            if checked is None:
                tree.mkdir()
                active = _Active(name, lock, None, changes.snapshot(tree))
                self._active[tree] = active
                return Workspace(task_id=task.id, path=tree)
            branch, base, continues = await self._make_tree(
                checked, mirror_key, tree, task_id, task.title
            )
        except BaseException:
            # Failed or cancelled half-way: the half-made tree goes, whatever comes next.
            with anyio.CancelScope(shield=True):
                await self._drop_quietly(tree, lock)
            raise
        self._active[tree] = _Active(name, lock, checked, mirror_key=mirror_key)
        how = "continues" if continues else "starts"
        logger.debug("task {} works in {}; {} {}", task.id, tree, how, branch)
        return Workspace(
            task_id=task.id, path=tree, branch=branch, base_commit=base, continues=continues
        )

    async def _make_tree(
        self, checked: RepoUrl, key: str, tree: Path, task_id: str, title: str
    ) -> tuple[str, str | None, bool]:
        """Clone the task's tree: (branch, base commit, whether it continues an earlier
        round's branch rather than starting a new one from the default branch)."""
        mirror = self._repos / f"{key}.git"
        asked = time.monotonic()
        async with self._projects.hold(key, self._lock_wait):
            # A fetch that *started* after we asked is fresh enough: slots that start
            # together on one project fetch once or twice, not once each.
            if self._fetched.get(key, -1.0) < asked or not repo.mirror_ready(mirror):
                started = time.monotonic()
                await repo.sync_mirror(self._git, checked, mirror)
                self._fetched[key] = started
            branch = task_branch(task_id, title)
            _default, base = await repo.default_branch(self._git, mirror)
            tip = await repo.task_branch_tip(self._git, mirror, task_branch_prefix(task_id))
            if tip is not None:
                branch, base = tip
            # Copied under the lock too: no fetch or gc changes the mirror meanwhile.
            await repo.clone_tree(self._git, mirror, tree, branch, base, checked)
        return branch, base, tip is not None

    def _make_folders(self) -> None:
        for folder in (self._repos, self._tasks):
            folder.mkdir(parents=True, exist_ok=True)

    # --- finish --------------------------------------------------------------------------

    async def finish(self, workspace: Workspace, task: Task) -> WorkspaceResult:
        active = self._active.get(workspace.path)
        if active is None:
            raise WorkspaceError(f"{workspace.path} is not a workspace prepared by this worker")
        tree = workspace.path
        if active.repo is None:
            # A walk of the agent's whole tree: in a thread, the loop serves the other
            # slots; a tree left empty needs no walk (nor the thread's GIL hand-offs).
            empty = changes.is_empty(tree)
            after = {} if empty else await anyio.to_thread.run_sync(changes.snapshot, tree)
            return WorkspaceResult(files_changed=changes.compare_snapshots(active.snapshot, after))
        git = self._git
        base = workspace.base_commit
        if self._settings.commit:
            message = publish.commit_message(task.title, task.id)
            await publish.commit_all(git, tree, message)
        head = await changes.head_commit(git, tree)
        base_tree = base if base is not None else await changes.empty_tree(git, tree)
        if self._settings.commit:
            target = head if head is not None else base_tree
        else:
            target = await changes.working_tree(git, tree, head)
        files = await changes.changed_paths(git, tree, base_tree, target)
        commit = head if head is not None and head != base else None
        if commit is None or workspace.branch is None:
            return WorkspaceResult(files_changed=files)
        delivery = await self._deliver(active, tree, commit, workspace.branch)
        pr_url = None
        if delivery.pushed and self._settings.pr_command:
            values = {
                "branch": workspace.branch,
                "task_id": task.id,
                "title": task.title,
                "workspace": str(tree),
            }
            pr_url = await publish.open_pull_request(
                self._settings.pr_command,
                values,
                cwd=tree,
                env=self._env.tool_env(active.repo),
                timeout=self._settings.git_timeout,
                redactor=self._redact,
            )
        return WorkspaceResult(
            files_changed=files,
            branch_name=workspace.branch if delivery.pushed else None,
            commit=commit,
            pr_url=pr_url,
            delivery=delivery,
        )

    async def _deliver(self, active: _Active, tree: Path, commit: str, branch: str) -> Delivery:
        """Keep the commit in the mirror, then push it as ``PUSH`` says."""
        assert active.repo is not None
        mirror = self._repos / f"{active.mirror_key}.git"
        async with self._projects.hold(active.mirror_key, self._lock_wait):
            ref = await publish.keep_in_mirror(self._git, tree, mirror, commit, branch)
        kept = Delivery(branch, commit, ref, mirror, active.repo.url, pushed=False)
        mode = self._settings.push
        if mode == "off":
            return kept
        try:
            await publish.push_branch(self._git, tree, active.repo, commit, branch)
        except WorkspaceError as exc:
            if mode == "on":
                raise WorkspaceError(
                    f"{exc}. The commit {commit[:12]} is kept in the worker's mirror: "
                    f"{kept.show_command()}"
                ) from None
            logger.warning("{} not pushed (kept as {}): {}", branch, ref, exc)
            return dataclasses.replace(kept, push_error=str(exc))
        return dataclasses.replace(kept, pushed=True)

    # --- cleanup -------------------------------------------------------------------------

    async def discard(self, workspace: Workspace) -> None:
        active = self._active.pop(workspace.path, None)
        if active is None:
            return
        try:
            if self._settings.keep_workspaces:
                marker = self._tasks / f"{active.name}.kept"
                marker.write_text(f"{workspace.task_id}\n", encoding="utf-8")
                logger.info("kept the workspace of {} at {}", workspace.task_id, workspace.path)
                return
            await self._drop(workspace.path, active.lock)
        except Exception as exc:  # discard never raises: the task's outcome matters more
            logger.warning("could not remove {}: {}", workspace.path, exc)
        finally:
            active.lock.release()

    async def prune_stale(self) -> None:
        """Delete trees whose lock is free (left by a crash), and half-cloned mirrors."""
        self._make_folders()
        names = {
            entry.name.removesuffix(".lock")
            for entry in self._tasks.iterdir()
            if entry.name.endswith(".lock") or entry.is_dir()
        }
        removed = 0
        for name in sorted(names):
            tree = self._tasks / name
            if tree in self._active or (self._tasks / f"{name}.kept").exists():
                continue
            lock = FileLock(self._tasks / f"{name}.lock")
            if not lock.try_acquire():
                continue  # in use by a running task, here or in another process
            try:
                await anyio.to_thread.run_sync(remove_tree, tree, self._root)
                removed += 1
            except OSError as exc:
                logger.warning("could not remove stale workspace {}: {}", tree, exc)
            finally:
                lock.release(unlink=True)
        for tmp in self._repos.glob("*.git.tmp"):
            key = tmp.name.removesuffix(".git.tmp")
            held = self._projects.try_hold_file(key)
            if held is None:
                continue
            try:
                await anyio.to_thread.run_sync(remove_tree, tmp, self._root)
            finally:
                held.release()
        if removed:
            logger.info("removed {} stale workspace(s) from an earlier run", removed)

    async def _drop_quietly(self, tree: Path, lock: FileLock) -> None:
        """``_drop`` whose failure is logged: the error that led here is the one to raise."""
        try:
            await self._drop(tree, lock)
        except Exception as exc:
            logger.warning("could not remove the half-made workspace {}: {}", tree, exc)

    async def _drop(self, tree: Path, lock: FileLock) -> None:
        """Delete a tree, then its lock file (while holding it), then the lock."""
        try:
            if not remove_if_empty(tree, self._root):
                await anyio.to_thread.run_sync(remove_tree, tree, self._root)
        finally:
            lock.release(unlink=True)


def _digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:12]
