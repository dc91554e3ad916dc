"""Saving the agent's work: commit what it left, keep it in the mirror, push it, open a PR.

Keeping comes first and always happens: the commit is pushed into the project's local
mirror under ``refs/taskinfa/<branch>`` (see ``repo.KEPT_NAMESPACE``), so no setting and no
failed push can lose it when the task's tree is deleted.

The push goes straight from the task tree to the real repository URL (not via the mirror,
whose objects would then grow with every task), with ``+`` because the ``taskinfa/...``
branch belongs to the worker: a retried task replaces the branch of its failed attempt.
The URL and the refspec are given on the command line after ``--``, so neither a remote
configured in the tree nor a URL shaped like an option changes what is pushed where.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from loguru import logger

from taskinfa_worker.errors import WorkspaceError
from taskinfa_worker.redact import Redactor
from taskinfa_worker.workspace.git import Git, describe, run_process
from taskinfa_worker.workspace.repo import kept_ref
from taskinfa_worker.workspace.safety import RepoUrl

_PLACEHOLDER = re.compile(r"\{(branch|task_id|title|workspace)\}")
_URL = re.compile(r"https?://[^\s<>\"']+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def commit_message(title: str, task_id: str) -> str:
    """``taskinfa: <title> (<task_id>)`` on one line."""
    one_line = " ".join(_CONTROL.sub(" ", title).split()) or "task"
    return f"taskinfa: {one_line} ({task_id})\n"


async def commit_all(git: Git, tree: Path, message: str) -> bool:
    """Commit everything the agent left uncommitted or untracked; False when nothing was."""
    await git.run("add", "--all", cwd=tree, action="stage the agent's changes")
    staged = await git.run(
        "diff", "--cached", "--quiet", "--no-ext-diff", cwd=tree, action="check", check=False
    )
    if staged.returncode == 0:
        return False
    if staged.returncode != 1:
        raise WorkspaceError(git.failure("look for uncommitted changes", staged))
    await git.run(
        "commit",
        "--quiet",
        "--no-verify",
        "--cleanup=whitespace",  # a title starting with '#' must not be dropped as a comment
        "--file=-",
        cwd=tree,
        stdin=message.encode("utf-8", "replace"),
        identity=True,
        action="commit the agent's changes",
    )
    return True


async def keep_in_mirror(git: Git, tree: Path, mirror: Path, commit: str, branch: str) -> str:
    """Store ``commit`` in the mirror as the task's kept ref; returns the ref."""
    ref = kept_ref(branch)
    await git.run(
        "push",
        "--quiet",
        "--",
        str(mirror),
        f"+{commit}:{ref}",
        cwd=tree,
        local_copy=True,
        action="keep the agent's commit in the worker's mirror",
    )
    return ref


async def push_branch(git: Git, tree: Path, repo: RepoUrl, commit: str, branch: str) -> None:
    await git.run(
        "push",
        "--quiet",
        "--",
        repo.url,
        f"+{commit}:refs/heads/{branch}",
        cwd=tree,
        repo=repo,
        action=f"push the branch {branch} to {repo.url}",
    )


async def open_pull_request(
    template: str,
    values: Mapping[str, str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    redactor: Redactor,
) -> str | None:
    """Run the PR command; its last URL-looking output line is the PR's URL.

    The template is split like a shell would (``shlex``) *before* the placeholders are
    replaced, one argument at a time, so a title cannot add arguments or a shell command.
    A failing command is logged and gives no URL: the branch is pushed either way.
    """
    try:
        argv = [
            _PLACEHOLDER.sub(lambda match: values[match[1]], part) for part in shlex.split(template)
        ]
    except ValueError as exc:
        logger.warning("PR_COMMAND cannot be split: {}", exc)
        return None
    if not argv:
        return None
    try:
        result = await run_process(argv, cwd=cwd, timeout=timeout, env=env)
    except WorkspaceError as exc:
        logger.warning("PR command failed: {}", redactor(str(exc)))
        return None
    if not result.ok:
        logger.warning(
            "PR command exited with {}: {}", result.returncode, redactor(describe(result))
        )
        return None
    for line in reversed(result.text.splitlines()):
        match = _URL.search(line)
        if match:
            return redactor(match.group(0).rstrip(".,);"))
    logger.warning("PR command printed no URL")
    return None
