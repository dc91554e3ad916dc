"""GitWorkspaces with real git: isolation, files_changed, commit, push, PR command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskinfa_worker import workspace as workspace_package
from taskinfa_worker.errors import WorkspaceError
from taskinfa_worker.redact import Redactor
from taskinfa_worker.workspace import GitWorkspaces, make_workspaces
from tests.workspace.support import (
    changed_in,
    make_manager,
    make_origin,
    make_settings,
    project,
    push_commit,
    sh,
    task,
    tree_entries,
)


def test_exports() -> None:
    assert workspace_package.__all__ == [
        "GitWorkspaces",
        "Workspace",
        "WorkspaceResult",
        "Workspaces",
        "make_workspaces",
    ]
    manager = make_workspaces(make_settings(Path("/tmp/unused-ws")), Redactor())
    assert isinstance(manager, GitWorkspaces)


async def test_four_tasks_of_one_project_get_four_trees_and_four_branches(
    tmp_path: Path,
) -> None:
    origin = make_origin(tmp_path, {"README.md": "hello\n", "shared.txt": "base\n"})
    base = sh("rev-parse", "trunk", cwd=origin).strip()
    manager = make_manager(tmp_path / "ws", push=True)
    await manager.prune_stale()
    tasks = [task(f"task_{i}", f"Feature number {i}") for i in range(4)]
    spaces = await asyncio.gather(*(manager.prepare(t, project(str(origin))) for t in tasks))

    assert len({ws.path for ws in spaces}) == 4
    assert len({ws.branch for ws in spaces}) == 4
    for ws, t in zip(spaces, tasks, strict=True):
        assert ws.base_commit == base
        assert ws.branch == f"taskinfa/{t.id}-feature-number-{t.id[-1]}"
        assert (ws.path / ".git").is_dir()  # a repository of its own, not a worktree
        assert sh("branch", "--show-current", cwd=ws.path).strip() == ws.branch
        # Each agent writes its own file and edits the shared one differently.
        (ws.path / f"{t.id}.txt").write_text(f"work of {t.id}\n")
        (ws.path / "shared.txt").write_text(f"edited by {t.id}\n")

    results = await asyncio.gather(
        *(manager.finish(ws, t) for ws, t in zip(spaces, tasks, strict=True))
    )
    for ws, t, result in zip(spaces, tasks, results, strict=True):
        assert result.files_changed == ["shared.txt", f"{t.id}.txt"]
        assert result.branch_name == ws.branch
        assert result.commit is not None
        ref = f"refs/heads/{ws.branch}"
        assert sh("rev-parse", ref, cwd=origin).strip() == result.commit
        assert changed_in(origin, base, ref) == ["shared.txt", f"{t.id}.txt"]
        assert sh("show", f"{ref}:shared.txt", cwd=origin) == f"edited by {t.id}\n"
        author = sh("log", "-1", "--format=%an <%ae>|%s", ref, cwd=origin).strip()
        assert author == f"taskinfa-worker <worker@taskinfa.local>|taskinfa: {t.title} ({t.id})"
    # The default branch is untouched and only the four task branches were added.
    assert sh("rev-parse", "trunk", cwd=origin).strip() == base
    heads = sh("for-each-ref", "--format=%(refname)", "refs/heads/", cwd=origin).split()
    assert sorted(heads) == sorted(
        ["refs/heads/trunk", *(f"refs/heads/{w.branch}" for w in spaces)]
    )

    await asyncio.gather(*(manager.discard(ws) for ws in spaces))
    assert tree_entries(tmp_path / "ws" / "tasks") == []


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "no-commit"])
async def test_files_changed_is_exact(tmp_path: Path, commit: bool) -> None:
    origin = make_origin(
        tmp_path,
        {
            ".gitignore": "*.log\n",
            "keep.txt": "unchanged\n",
            "edit-committed.txt": "one\n",
            "edit-loose.txt": "one\n",
            "gone-committed.txt": "bye\n",
            "gone-loose.txt": "bye\n",
            "old-committed.txt": "a long enough body to be recognised as a rename\n" * 3,
            "old-loose.txt": "another long body that git will see as renamed\n" * 3,
        },
    )
    manager = make_manager(tmp_path / "ws", commit=commit, push="off")
    ws = await manager.prepare(task(), project(str(origin)))
    tree = ws.path
    # What the agent committed itself...
    (tree / "edit-committed.txt").write_text("two\n")
    (tree / "gone-committed.txt").unlink()
    sh("mv", "old-committed.txt", "new-committed.txt", cwd=tree)
    (tree / "add-committed.txt").write_text("new\n")
    sh("add", "--all", cwd=tree)
    sh("commit", "-q", "-m", "agent's own commit", cwd=tree)
    # ...and what it left behind, staged, unstaged and untracked.
    (tree / "edit-loose.txt").write_text("two\n")
    (tree / "gone-loose.txt").unlink()
    os.rename(tree / "old-loose.txt", tree / "new-loose.txt")
    (tree / "add-loose.txt").write_text("new\n")
    (tree / "sub").mkdir()
    (tree / "sub" / "deep.txt").write_text("deep\n")
    (tree / "debug.log").write_text("ignored by .gitignore\n")

    result = await manager.finish(ws, task())

    assert result.files_changed == sorted(
        [
            "add-committed.txt",
            "add-loose.txt",
            "edit-committed.txt",
            "edit-loose.txt",
            "gone-committed.txt",
            "gone-loose.txt",
            "new-committed.txt",
            "new-loose.txt",
            "old-committed.txt",
            "old-loose.txt",
            "sub/deep.txt",
        ]
    )
    status = sh("status", "--porcelain", cwd=tree)
    if commit:
        assert status == ""  # debug.log is ignored, everything else committed
        assert "debug.log" not in sh("ls-files", cwd=tree)
        assert result.commit == sh("rev-parse", "HEAD", cwd=tree).strip()
    else:
        # Nothing committed for the agent and its index left as it was.
        assert "?? add-loose.txt" in status
        assert sh("log", "-1", "--format=%s", cwd=tree).strip() == "agent's own commit"
    assert result.branch_name is None  # push is off
    await manager.discard(ws)


async def test_a_fetch_before_each_task_sees_new_upstream_commits(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    manager = make_manager(tmp_path / "ws")
    first = await manager.prepare(task("task_1"), project(str(origin)))
    newer = push_commit(origin, {"later.txt": "pushed after the first task started\n"})
    second = await manager.prepare(task("task_2"), project(str(origin)))
    assert second.base_commit == newer != first.base_commit
    assert (second.path / "later.txt").exists()
    assert not (first.path / "later.txt").exists()
    for ws in (first, second):
        await manager.discard(ws)


async def test_default_branch_falls_back_to_main_then_master(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {"a.txt": "a\n"}, branch="master")
    master = sh("rev-parse", "master", cwd=origin).strip()
    sh("symbolic-ref", "HEAD", "refs/heads/nothing-here", cwd=origin)  # a dangling HEAD
    manager = make_manager(tmp_path / "ws")
    ws = await manager.prepare(task(), project(str(origin)))
    assert ws.base_commit == master
    await manager.discard(ws)


async def test_empty_repository_starts_the_branch_with_the_first_commit(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {})
    manager = make_manager(tmp_path / "ws", push=True)
    ws = await manager.prepare(task(), project(str(origin)))
    assert ws.base_commit is None
    (ws.path / "first.txt").write_text("hello\n")
    result = await manager.finish(ws, task())
    assert result.files_changed == ["first.txt"]
    assert result.branch_name == ws.branch
    assert sh("rev-parse", f"refs/heads/{ws.branch}", cwd=origin).strip() == result.commit
    await manager.discard(ws)


async def test_nothing_changed_means_no_commit_and_no_push(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    manager = make_manager(tmp_path / "ws", push=True, pr_command="false")
    ws = await manager.prepare(task(), project(str(origin)))
    result = await manager.finish(ws, task())
    assert (result.files_changed, result.commit, result.branch_name) == ([], None, None)
    assert sh("for-each-ref", "refs/heads/taskinfa", cwd=origin) == ""
    await manager.discard(ws)


async def test_pr_command_gets_placeholders_per_argument_and_gives_the_last_url(
    tmp_path: Path,
) -> None:
    origin = make_origin(tmp_path)
    script = tmp_path / "make_pr.py"
    record = tmp_path / "pr-args.txt"
    script.write_text(
        "import sys, pathlib\n"
        f"pathlib.Path({str(record)!r}).write_text('\\n'.join(sys.argv[1:]))\n"
        "print('https://example.com/not-this-one')\n"
        "print('Created: https://example.com/acme/repo/pull/7')\n"
    )
    title = "Title with $(touch pwned) ; {branch} and 'quotes'"
    template = f"{sys.executable} {script} --head {{branch}} --title {{title}} {{workspace}}"
    manager = make_manager(tmp_path / "ws", push=True, pr_command=template)
    the_task = task(title=title)
    ws = await manager.prepare(the_task, project(str(origin)))
    (ws.path / "x.txt").write_text("x\n")
    result = await manager.finish(ws, the_task)
    assert result.pr_url == "https://example.com/acme/repo/pull/7"
    args = record.read_text().split("\n")
    # One argument per placeholder; the title's own "{branch}" is not substituted again.
    assert args == ["--head", str(ws.branch), "--title", title, str(ws.path)]
    assert not (ws.path / "pwned").exists()
    assert not Path("pwned").exists()
    await manager.discard(ws)


async def test_failed_pr_command_still_reports_the_pushed_branch(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    manager = make_manager(tmp_path / "ws", push=True, pr_command="false")
    ws = await manager.prepare(task(), project(str(origin)))
    (ws.path / "x.txt").write_text("x\n")
    result = await manager.finish(ws, task())
    assert result.pr_url is None
    assert result.branch_name == ws.branch
    await manager.discard(ws)


async def test_push_failure_raises_a_workspace_error(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    manager = make_manager(tmp_path / "ws", push=True)
    ws = await manager.prepare(task(), project(str(origin)))
    (ws.path / "x.txt").write_text("x\n")
    # The remote refuses every update (a hook on the server side).
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch protected by policy' >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(WorkspaceError, match="push the branch") as caught:
        await manager.finish(ws, task())
    assert "branch protected by policy" in str(caught.value)
    await manager.discard(ws)
    assert tree_entries(tmp_path / "ws" / "tasks") == []


async def test_plain_folder_for_a_project_without_repository(tmp_path: Path) -> None:
    manager = make_manager(tmp_path / "ws")
    for the_project in (None, project(None), project("")):
        ws = await manager.prepare(task(), the_project)
        assert ws.branch is None
        assert ws.base_commit is None
        assert ws.path.is_dir()
        assert list(ws.path.iterdir()) == []
        (ws.path / "notes").mkdir()
        (ws.path / "notes" / "a.md").write_text("a\n")
        (ws.path / "b.txt").write_text("b\n")
        result = await manager.finish(ws, task())
        assert result.files_changed == ["b.txt", "notes/a.md"]
        assert result.branch_name is None
        await manager.discard(ws)
        assert not ws.path.exists()


async def test_agent_identity_works_without_a_global_git_config(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    manager = make_manager(tmp_path / "ws")
    ws = await manager.prepare(task(), project(str(origin)))
    (ws.path / "a.txt").write_text("a\n")
    # The agent commits with plain git in its tree: HOME has no identity (git_home).
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "GIT_CONFIG_NOSYSTEM": "1"}
    sh("add", "a.txt", cwd=ws.path)
    proc = await asyncio.create_subprocess_exec(
        "git", "commit", "-qm", "by the agent", cwd=ws.path, env=env
    )
    assert await proc.wait() == 0
    assert sh("log", "-1", "--format=%an", cwd=ws.path).strip() == "taskinfa-worker"
    await manager.discard(ws)


async def test_keep_workspaces_keeps_the_tree_through_prune(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    manager = make_manager(tmp_path / "ws", keep_workspaces=True)
    ws = await manager.prepare(task(), project(str(origin)))
    await manager.discard(ws)
    assert ws.path.is_dir()
    await make_manager(tmp_path / "ws").prune_stale()
    assert ws.path.is_dir()


async def test_disk_use_does_not_grow_with_tasks(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    manager = make_manager(tmp_path / "ws", push=True)
    for number in range(5):
        the_task = task(f"task_{number}")
        ws = await manager.prepare(the_task, project(str(origin)))
        (ws.path / f"{number}.txt").write_text("x\n")
        await manager.finish(ws, the_task)
        await manager.discard(ws)
        assert tree_entries(tmp_path / "ws" / "tasks") == []
    repos = tree_entries(tmp_path / "ws" / "repos")
    assert len([name for name in repos if name.endswith(".git")]) == 1


async def test_finish_of_an_unknown_workspace_is_refused(tmp_path: Path) -> None:
    manager = make_manager(tmp_path / "ws")
    other = make_manager(tmp_path / "ws")
    ws = await other.prepare(task(), None)
    with pytest.raises(WorkspaceError, match="not a workspace prepared"):
        await manager.finish(ws, task())
    await manager.discard(ws)  # unknown: ignored, never raises
    assert ws.path.is_dir()
    await other.discard(ws)


async def test_trees_share_object_files_with_the_mirror_by_hard_links(tmp_path: Path) -> None:
    origin = make_origin(tmp_path, {f"f{i}.txt": f"{i}\n" for i in range(20)})
    sh("gc", "-q", cwd=origin)  # one pack, as a real remote serves it
    manager = make_manager(tmp_path / "ws")
    ws = await manager.prepare(task(), project(str(origin)))
    mirror = next((tmp_path / "ws" / "repos").glob("*.git"))
    mirror_packs = {p.name: p.stat().st_ino for p in (mirror / "objects" / "pack").iterdir()}
    tree_packs = {p.name: p.stat().st_ino for p in (ws.path / ".git/objects/pack").iterdir()}
    assert any(name.endswith(".pack") for name in tree_packs)
    assert tree_packs.items() & mirror_packs.items()  # same inodes: linked, not copied
    await manager.discard(ws)


async def test_upstream_rewrites_and_mirror_gc_do_not_disturb_running_trees(
    tmp_path: Path,
) -> None:
    origin = make_origin(tmp_path, {"a.txt": "a\n"})
    manager = make_manager(tmp_path / "ws", push=True)
    first = await manager.prepare(task("task_1"), project(str(origin)))
    (first.path / "work.txt").write_text("in progress\n")
    # Upstream force-pushes a new history and deletes the old branch's commit for good.
    sh("update-ref", "-d", "refs/heads/trunk", cwd=origin)
    push_commit(origin, {"rewritten.txt": "new history\n"}, message="rewrite")
    # Another task of the project fetches with --prune; then the mirror is gc'ed hard.
    second = await manager.prepare(task("task_2"), project(str(origin)))
    mirror = next((tmp_path / "ws" / "repos").glob("*.git"))
    sh("-c", "gc.reflogExpire=now", "reflog", "expire", "--all", "--expire=now", cwd=mirror)
    sh("gc", "-q", "--prune=now", cwd=mirror)
    gone = subprocess.run(
        ["git", "cat-file", "-e", f"{first.base_commit}^{{commit}}"],
        cwd=mirror,
        check=False,
        capture_output=True,
    )
    assert gone.returncode != 0  # the mirror no longer has the first tree's base commit
    # The first tree is untouched and still whole: it commits and pushes its work.
    sh("fsck", "--no-dangling", cwd=first.path)
    result = await manager.finish(first, task("task_1"))
    assert result.files_changed == ["work.txt"]
    assert sh("rev-parse", f"refs/heads/{first.branch}", cwd=origin).strip() == result.commit
    for ws in (first, second):
        await manager.discard(ws)
