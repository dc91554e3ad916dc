"""The token reaches git only through a scoped credential helper, and never leaks.

A real git smart-HTTP server (``git http-backend`` behind Basic auth on 127.0.0.1) stands in
for a private GitHub repository.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from taskinfa_worker.errors import WorkspaceError
from taskinfa_worker.redact import Redactor
from taskinfa_worker.workspace.git import Git, GitResult, GitTimeoutError
from taskinfa_worker.workspace.gitenv import GitEnv
from tests.workspace.support import (
    files_containing,
    free_port,
    git_http_server,
    make_manager,
    make_origin,
    project,
    sh,
    task,
    tree_entries,
)

TOKEN = "ghp_" + "S3cr3tT0k3nV4lu3" * 2 + "abcd"  # GitHub-shaped, 40 characters


def served_repo(tmp_path: Path) -> Path:
    root = tmp_path / "served"
    root.mkdir()
    make_origin(root, {"README.md": "private\n"}, name="private.git")
    return root


async def test_private_https_repo_works_with_the_token_and_stores_it_nowhere(
    tmp_path: Path,
) -> None:
    root = served_repo(tmp_path)
    async with git_http_server(root, TOKEN) as server:
        url = server.url("private.git")
        manager = make_manager(
            tmp_path / "ws", github_token=TOKEN, git_token_hosts=["127.0.0.1"], push=True
        )
        ws = await manager.prepare(task(), project(url))
        (ws.path / "feature.txt").write_text("done\n")
        result = await manager.finish(ws, task())
        pushed = sh("rev-parse", f"refs/heads/{ws.branch}", cwd=root / "private.git").strip()
        assert pushed == result.commit
        # A second task fetches (not clones) with the token as well.
        second = await manager.prepare(task("task_2"), project(url))

        expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
        assert expected in server.authorizations
        # Not in any file of the workspace volume: configs, mirror, trees, logs of git.
        assert files_containing(tmp_path / "ws", TOKEN) == []
        for config in (ws.path / ".git" / "config", *(tmp_path / "ws" / "repos").glob("*/config")):
            text = config.read_text()
            assert TOKEN not in text
            assert "@" not in text.split("url = ", 1)[-1].split("\n", 1)[0]
        assert sh("config", "remote.origin.url", cwd=ws.path).strip() == url
        for workspace in (ws, second):
            await manager.discard(workspace)


async def test_without_a_token_a_private_repo_fails_fast_with_a_clear_error(
    tmp_path: Path,
) -> None:
    root = served_repo(tmp_path)
    async with git_http_server(root, TOKEN) as server:
        # A long timeout: a hang would show as GitTimeoutError or a test timeout.
        manager = make_manager(tmp_path / "ws", git_timeout=60.0)
        with pytest.raises(WorkspaceError) as caught:
            await manager.prepare(task(), project(server.url("private.git")))
        assert not isinstance(caught.value, GitTimeoutError)
        message = str(caught.value)
        assert "needs credentials" in message
        assert "GITHUB_TOKEN" in message
        assert server.authorizations == [None]  # asked once, nobody answered
    assert tree_entries(tmp_path / "ws" / "tasks") == []


async def test_a_refused_token_never_appears_in_the_error(tmp_path: Path) -> None:
    root = served_repo(tmp_path)
    wrong = "ghp_" + "WrongWrongWrong" * 2 + "0123456789"
    async with git_http_server(root, TOKEN) as server:
        manager = make_manager(tmp_path / "ws", github_token=wrong, git_token_hosts=["127.0.0.1"])
        with pytest.raises(WorkspaceError) as caught:
            await manager.prepare(task(), project(server.url("private.git")))
        assert "needs credentials" in str(caught.value)
        assert wrong not in str(caught.value)
        assert len(server.authorizations) == 2  # anonymous, then the (wrong) token
    assert files_containing(tmp_path / "ws", wrong) == []


async def test_the_token_is_not_sent_to_hosts_outside_git_token_hosts(tmp_path: Path) -> None:
    root = served_repo(tmp_path)
    async with git_http_server(root, TOKEN) as server:
        # Default hosts: github.com only. The board's URL points somewhere else.
        manager = make_manager(tmp_path / "ws", github_token=TOKEN)
        with pytest.raises(WorkspaceError, match="needs credentials"):
            await manager.prepare(task(), project(server.url("private.git")))
        assert server.authorizations == [None]


async def test_an_unreachable_https_remote_fails_fast(tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{free_port()}/acme/repo.git"
    manager = make_manager(tmp_path / "ws", github_token=TOKEN, git_token_hosts=["127.0.0.1"])
    with pytest.raises(WorkspaceError) as caught:
        await manager.prepare(task(), project(url))
    assert not isinstance(caught.value, GitTimeoutError)
    message = str(caught.value)
    assert f"could not clone {url}" in message
    assert "Failed to connect" in message or "Connection refused" in message
    assert TOKEN not in message


def test_git_errors_pass_through_the_redactor() -> None:
    env = GitEnv(os.environ, token=None, token_hosts=[], allow_local=False)
    git = Git(env, Redactor([TOKEN]), timeout=5)
    result = GitResult(
        argv=("git", "fetch"),
        returncode=128,
        stdout=b"",
        stderr=f"fatal: unable to access 'https://x:{TOKEN}@github.com/a/b.git/': 403",
    )
    message = git.failure("fetch the repository", result)
    assert TOKEN not in message
    assert "[REDACTED]" in message


def test_the_token_is_only_in_the_environment_of_network_calls_to_allowed_hosts() -> None:
    from pydantic import SecretStr

    from taskinfa_worker.workspace.safety import check_repository_url

    env = GitEnv(
        {"PATH": "/usr/bin", "TASKINFA_API_KEY": "tk_board_key", "HOME": "/h"},
        token=SecretStr(TOKEN),
        token_hosts=["github.com"],
        allow_local=False,
    )
    github = check_repository_url("https://github.com/a/b.git", allow_local=False)
    other = check_repository_url("https://gitlab.com/a/b.git", allow_local=False)
    assert env.env(github)["TASKINFA_GIT_TOKEN"] == TOKEN
    for child_env in (env.env(other), env.env(None)):
        assert TOKEN not in child_env.values()
    assert "TASKINFA_API_KEY" not in env.env(github)  # only allow-listed variables pass
    options = env.config(repo=github)
    assert TOKEN not in " ".join(options)  # the helper reads the variable, not the value
    assert any(o.startswith("credential.https://github.com.helper=!") for o in options)
    assert not any("credential" in o for o in env.config(repo=other))
    assert env.env(github)["GIT_TERMINAL_PROMPT"] == "0"
    # The PR command (gh) gets the token only for a repository on an allowed host.
    assert env.tool_env(github)["GH_TOKEN"] == TOKEN
    assert TOKEN not in env.tool_env(other).values()
