"""Hostile repository URLs, ids and titles are refused before any git process runs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskinfa_worker.errors import UnsafeInputError
from taskinfa_worker.redact import Redactor
from taskinfa_worker.workspace.git import Git
from taskinfa_worker.workspace.gitenv import GitEnv
from taskinfa_worker.workspace.safety import (
    check_id,
    check_repository_url,
    safe_name,
    slugify,
    task_branch,
)
from tests.workspace.support import (
    make_manager,
    make_origin,
    project,
    sh,
    task,
    tree_entries,
)

CANARY = "/tmp/taskinfa-canary-{token}"  # an injected command would create this file

# (url, allowed local repos?, words the refusal must contain)
HOSTILE_URLS = [
    ("ext::sh -c touch% {canary}", True, "whitespace"),
    ("ext::sh%20-c%20touch%20{canary}", True, "transports"),
    ("fd::17", True, "transports"),
    ("--upload-pack=touch {canary}", True, "whitespace"),
    ("--upload-pack=touch%20{canary}", True, "starts with '-'"),
    ("-oProxyCommand=touch%20{canary}", True, "starts with '-'"),
    ("ssh://-oProxyCommand=touch%20{canary}/repo", True, "host starts with '-'"),
    ("git@-oProxyCommand=touch%20x:repo.git", True, "host starts with '-'"),
    ("github.com:-upload-pack=touch%20{canary}", True, "path contains characters"),
    ("ssh://git@github.com/-upload-pack=x", True, "path contains characters"),
    ("https://github.com/acme/repo.git --upload-pack=touch%20{canary}", True, "whitespace"),
    ("https://github.com/acme/repo.git\n--upload-pack=x", True, "control"),
    ("https://github.com/acme/\x00repo.git", True, "control"),
    ("https://x-access-token:ghp_secret@github.com/acme/repo.git", True, "credentials"),
    ("https://ghp_secret@github.com/acme/repo.git", True, "credentials"),
    ("https://-evil.example/acme/repo.git", True, "host"),
    ("https://github.com/../../etc/passwd", True, "'..'"),
    ("https://github.com/acme/repo.git?upload-pack=x", True, "query"),
    ("https://github.com/acme/repo.git#x", True, "query"),
    ("git://github.com/acme/repo.git", True, "'git' protocol is not allowed"),
    ("http://github.com/acme/repo.git", True, "http://"),
    ("ftp://github.com/acme/repo.git", True, "'ftp' protocol"),
    ("file://remotehost/share/repo.git", True, "file:///"),
    ("file:///etc", False, "ALLOW_LOCAL_REPOS"),
    ("/etc/passwd", False, "ALLOW_LOCAL_REPOS"),
    ("../../etc", True, "not https://"),
    ("repo", True, "not https://"),
    ("C:\\repo", True, "path contains characters"),
    ("https://github.com/acme/répo.git", True, "non-ASCII"),
    ("", True, "empty"),
    ("https://github.com/" + "a" * 600, True, "longer than"),
]

HOSTILE_IDS = [
    ("", "empty"),
    ("task/1", "slash"),
    ("..\\..\\x", "slash"),
    ("..", "'..'"),
    ("../../etc", "slash"),
    ("a..b", "'..'"),
    ("x\x00y", "control"),
    ("x\ny", "control"),
    ("x\x1b[31m", "control"),
    (".", "only dots"),
    ("t" * 129, "longer than"),
]

ACCEPTED_URLS = [
    ("https://github.com/acme/repo.git", "https", "github.com"),
    ("https://GitHub.com/acme/repo", "https", "github.com"),
    ("https://git.example.com:8443/group/sub/repo.git", "https", "git.example.com"),
    ("https://[::1]:8443/repo.git", "https", "::1"),
    ("ssh://git@github.com/acme/repo.git", "ssh", "github.com"),
    ("ssh://git@github.com:2222/acme/repo.git", "ssh", "github.com"),
    ("git@github.com:acme/repo.git", "ssh", "github.com"),
    ("github.com:acme/repo.git", "ssh", "github.com"),
]


@pytest.fixture
def canary() -> Iterator[str]:
    path = CANARY.format(token=os.urandom(6).hex())
    yield path
    if os.path.exists(path):
        os.unlink(path)


@pytest.mark.parametrize(("url", "allow_local", "why"), HOSTILE_URLS)
def test_hostile_urls_are_refused_with_a_reason(
    url: str, allow_local: bool, why: str, canary: str
) -> None:
    with pytest.raises(UnsafeInputError) as caught:
        check_repository_url(url.format(canary=canary), allow_local=allow_local)
    assert why in str(caught.value)


@pytest.mark.parametrize(("url", "kind", "host"), ACCEPTED_URLS)
def test_ordinary_urls_pass(url: str, kind: str, host: str) -> None:
    checked = check_repository_url(url, allow_local=False)
    assert (checked.url, checked.kind, checked.host) == (url, kind, host)


def test_local_repositories_and_loopback_http_only_when_allowed() -> None:
    for url in ("/srv/repo.git", "file:///srv/repo.git", "http://127.0.0.1:8080/repo.git"):
        with pytest.raises(UnsafeInputError):
            check_repository_url(url, allow_local=False)
        assert check_repository_url(url, allow_local=True).url == url
    with pytest.raises(UnsafeInputError, match="http://"):
        check_repository_url("http://10.0.0.1/repo.git", allow_local=True)


@pytest.mark.parametrize(("value", "why"), HOSTILE_IDS)
def test_hostile_ids_are_refused(value: str, why: str) -> None:
    with pytest.raises(UnsafeInputError) as caught:
        check_id(value, "task id")
    assert why in str(caught.value)
    assert "task id" in str(caught.value)


def _fake_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `git` first on PATH that records being run: proof that nothing was executed."""
    folder = tmp_path / "fakebin"
    folder.mkdir()
    marker = tmp_path / "git-was-run"
    script = folder / "git"
    script.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 1\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return marker


async def test_the_manager_refuses_before_running_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, canary: str
) -> None:
    marker = _fake_git(tmp_path, monkeypatch)
    # The most permissive settings: local repositories allowed, token configured.
    manager = make_manager(tmp_path / "ws", allow_local_repos=True, github_token="ghp_" + "x" * 36)
    refused = 0
    for url, allow_local, _why in HOSTILE_URLS:
        if not allow_local or not url:
            continue  # local paths pass with ALLOW_LOCAL_REPOS; "" means no repository
        with pytest.raises(UnsafeInputError):
            await manager.prepare(task(), project(url.format(canary=canary)))
        refused += 1
    for value, _why in HOSTILE_IDS:
        with pytest.raises(UnsafeInputError):
            await manager.prepare(task(task_id=value), project("https://github.com/a/b.git"))
        with pytest.raises(UnsafeInputError):
            await manager.prepare(task(), project("https://github.com/a/b.git", value))
        refused += 2
    assert refused >= 15 + 2 * len(HOSTILE_IDS)
    assert not marker.exists(), marker.read_text()
    assert not os.path.exists(canary)
    assert tree_entries(tmp_path / "ws" / "tasks") == []
    assert tree_entries(tmp_path / "ws" / "repos") == []


async def test_local_paths_are_refused_without_allow_local_repos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = make_origin(tmp_path)
    marker = _fake_git(tmp_path, monkeypatch)
    manager = make_manager(tmp_path / "ws", allow_local_repos=False)
    for url in (str(origin), f"file://{origin}", "/etc/passwd", "file:///etc"):
        with pytest.raises(UnsafeInputError, match="ALLOW_LOCAL_REPOS"):
            await manager.prepare(task(), project(url))
    assert not marker.exists()


async def test_ext_transport_is_blocked_by_git_config_too(tmp_path: Path, canary: str) -> None:
    """Second net: should a URL ever slip past safety.py, git itself refuses ext::."""
    payload = f"ext::sh -c touch% {canary}"
    # Control: the payload does run a command when git is allowed to use ext::.
    subprocess.run(
        ["git", "-c", "protocol.ext.allow=always", "ls-remote", "--", payload],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert os.path.exists(canary)
    os.unlink(canary)
    env = GitEnv(os.environ, token=None, token_hosts=[], allow_local=True)
    git = Git(env, Redactor(), timeout=30)
    result = await git.run("ls-remote", "--", payload, cwd=tmp_path, action="list", check=False)
    assert not result.ok
    assert "not allowed" in result.stderr
    assert not os.path.exists(canary)


def test_hooks_of_the_tree_never_run_for_the_worker(tmp_path: Path) -> None:
    """core.hooksPath=/dev/null: a pre-commit hook left by the agent is not run by us."""
    env = GitEnv(os.environ, token=None, token_hosts=[], allow_local=False)
    assert "core.hooksPath=/dev/null" in env.config()
    assert "protocol.file.allow=never" in env.config()
    assert "protocol.file.allow=always" in env.config(local_copy=True)


async def test_a_hook_written_by_the_agent_does_not_run_on_our_commit(tmp_path: Path) -> None:
    origin = make_origin(tmp_path)
    manager = make_manager(tmp_path / "ws")
    ws = await manager.prepare(task(), project(str(origin)))
    hook_ran = tmp_path / "hook-ran"
    for name in ("pre-commit", "commit-msg", "post-commit", "pre-push"):
        hook = ws.path / ".git" / "hooks" / name
        hook.write_text(f"#!/bin/sh\ntouch {hook_ran}\n")
        hook.chmod(0o755)
    sh("config", "core.fsmonitor", f"touch {hook_ran}; false", cwd=ws.path)
    (ws.path / "a.txt").write_text("a\n")
    result = await manager.finish(ws, task())
    assert result.files_changed == ["a.txt"]
    assert not hook_ran.exists()
    await manager.discard(ws)


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Add a Feature", "add-a-feature"),
        ("../../etc/passwd; rm -rf /", "etc-passwd-rm-rf"),
        ("Ünïcödé — títle ☃", "unicode-title"),
        ("", "task"),
        ("☃☃☃", "task"),
        ("x" * 100, "x" * 40),
        ("a-" * 30, ("a-" * 20).rstrip("-")),
        ("refs/heads/main.lock", "refs-heads-main-lock"),
    ],
)
def test_slugs_and_branches_are_valid_git_names(title: str, slug: str) -> None:
    assert slugify(title) == slug
    branch = task_branch("task_abc", title)
    assert branch == f"taskinfa/task_abc-{slug}"
    sh("check-ref-format", "--branch", branch)


def test_safe_names_cannot_collide_or_escape() -> None:
    assert safe_name("task_abc-1") == "task_abc-1"
    odd = [safe_name(value) for value in ("a b", "a_b", "a:b", "a*b", "a.b")]
    assert len(set(odd)) == len(odd)
    for name in odd:
        assert "/" not in name
        assert "." not in name
    sh("check-ref-format", "--branch", task_branch("a:b~c^d", "x"))
