"""Helpers for the workspace tests: real git repositories in ``tmp_path``, settings, servers.

Every git command of the tests runs with ``HOME`` in ``tmp_path`` and no system config, so
the machine's own git identity or credential helpers never make a test pass by accident.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from taskinfa_worker.client.models import Project, Task
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings
from taskinfa_worker.workspace import GitWorkspaces

TEST_IDENTITY = ("-c", "user.name=Test Person", "-c", "user.email=test@example.com")


def sh(*args: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    """Run git (tests' own calls) and return stdout; fails the test on error."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run(
        ["git", *TEST_IDENTITY, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, f"git {args} failed: {done.stderr}"
    return done.stdout


def make_origin(
    tmp_path: Path,
    files: dict[str, str] | None = None,
    *,
    branch: str = "trunk",
    name: str = "origin.git",
) -> Path:
    """A bare repository with one commit on ``branch`` (its HEAD) holding ``files``."""
    origin = tmp_path / name
    sh("init", "-q", "--bare", "-b", branch, str(origin))
    if files is None:
        files = {"README.md": "hello\n"}
    if files:
        push_commit(origin, files, branch=branch, message="initial")
    return origin


def push_commit(
    origin: Path, files: dict[str, str], *, branch: str = "trunk", message: str = "more"
) -> str:
    """Commit ``files`` on top of ``branch`` of ``origin`` (from a scratch clone)."""
    scratch = origin.parent / f"scratch-{os.urandom(4).hex()}"
    sh("init", "-q", "-b", branch, str(scratch))
    has_branch = sh("ls-remote", "--heads", "--", str(origin), branch, cwd=scratch).strip()
    if has_branch:
        sh("fetch", "-q", "--", str(origin), branch, cwd=scratch)
        sh("reset", "-q", "--hard", "FETCH_HEAD", cwd=scratch)
    for path, content in files.items():
        target = scratch / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    sh("add", "--all", cwd=scratch)
    sh("commit", "-q", "-m", message, cwd=scratch)
    sh("push", "-q", "--", str(origin), f"HEAD:refs/heads/{branch}", cwd=scratch)
    return sh("rev-parse", "HEAD", cwd=scratch).strip()


def make_settings(workspace_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "taskinfa_api_url": "http://127.0.0.1:9/api",
        "taskinfa_api_key": "tk_test_workspace_key",
        "workspace_dir": workspace_dir,
        "allow_local_repos": True,
        "git_timeout": 30.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def make_manager(workspace_dir: Path, **overrides: Any) -> GitWorkspaces:
    settings = make_settings(workspace_dir, **overrides)
    return GitWorkspaces(settings, Redactor([settings.github_token]))


def task(task_id: str = "task_abc123", title: str = "Add a feature") -> Task:
    return Task(id=task_id, title=title, status="in_progress")


def project(url: str | None, project_id: str = "proj_1") -> Project:
    return Project(id=project_id, name="Project", repository_url=url)


def changed_in(origin: Path, base: str, ref: str) -> list[str]:
    out = sh("diff", "--name-only", "-z", base, ref, cwd=origin)
    return sorted(path for path in out.split("\0") if path)


def git_children() -> list[psutil.Process]:
    """Live (not zombie) git processes below this test process."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "git" in child.name():
                alive.append(child)
        except psutil.NoSuchProcess:
            continue
    return alive


def free_port() -> int:
    """A port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class HangingServer:
    """Accepts connections and never answers: a remote that hangs git."""

    port: int
    connected: asyncio.Event
    server: asyncio.Server
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def url(self, path: str = "repo.git") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


@asynccontextmanager
async def hanging_server() -> AsyncIterator[HangingServer]:
    connected = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        connected.set()
        await reader.read()  # until the client goes away

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    handle = HangingServer(port, connected, server, writers)
    try:
        yield handle
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@dataclass
class GitHttpServer:
    """Git smart HTTP (``git http-backend``) behind Basic auth, on 127.0.0.1."""

    root: Path
    base_url: str
    authorizations: list[str | None]

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


@asynccontextmanager
async def git_http_server(root: Path, token: str) -> AsyncIterator[GitHttpServer]:
    """Serves the bare repositories in ``root``; only ``x-access-token:<token>`` gets in."""
    expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        seen.append(auth)
        if auth != expected:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'})
        body = await request.read()  # aiohttp already undid any Content-Encoding
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query_string,
            "REQUEST_METHOD": request.method,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(root),
        }
        proc = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate(body)
        head, _, payload = out.replace(b"\r\n", b"\n", 20).partition(b"\n\n")
        status = 200
        headers: dict[str, str] = {}
        for line in head.decode().splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers[key.strip()] = value.strip()
        return web.Response(status=status, body=payload, headers=headers)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield GitHttpServer(root, f"http://127.0.0.1:{port}", seen)
    finally:
        await runner.cleanup()


def files_containing(folder: Path, needle: str) -> list[Path]:
    """Every file below ``folder`` whose bytes contain ``needle``."""
    found = []
    raw = needle.encode()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and raw in path.read_bytes():
            found.append(path)
    return found


def tree_entries(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir()) if folder.exists() else []
