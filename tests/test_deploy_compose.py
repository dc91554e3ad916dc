"""compose.yaml: valid against the Compose specification (offline), and consistent with the
image, the seed's variable names and the worker's drain timeout."""

from __future__ import annotations

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


# The newest Compose features the file uses, with the release that brought each: the oldest
# Compose that accepts the file is the latest of these. Compose v1 knows none of them.
MINIMUM_COMPOSE = "2.24.0"
FEATURES = {
    "env_file entries with path/required (optional .env)": "2.24.0",
    "depends_on with required: false (optional board)": "2.20.0",
}


def _uses_optional_env_file(file: dict[str, Any]) -> bool:
    entries = file["services"]["worker"].get("env_file", [])
    return any(isinstance(entry, dict) and "required" in entry for entry in entries)


def _uses_optional_depends_on(file: dict[str, Any]) -> bool:
    depends = file["services"]["worker"].get("depends_on", {})
    return isinstance(depends, dict) and any("required" in v for v in depends.values())


def test_the_stated_minimum_compose_version_is_the_one_the_file_needs() -> None:
    file = compose()
    used = {
        "env_file entries with path/required (optional .env)": _uses_optional_env_file(file),
        "depends_on with required: false (optional board)": _uses_optional_depends_on(file),
    }
    needed = max(
        (FEATURES[name] for name, present in used.items() if present),
        key=lambda version: tuple(int(part) for part in version.split(".")),
    )
    # Dropping the feature that needs the minimum without lowering the docs fails here too.
    assert needed == MINIMUM_COMPOSE
    stated = f"Docker Compose v{MINIMUM_COMPOSE} or newer"
    for doc in ["README.md", "docs/quickstart.md", "docs/migration.md"]:
        text = " ".join((ROOT / doc).read_text().split())
        assert stated in text, f"{doc} does not say {stated!r}"
        # No other minimum may be stated beside it.
        others = set(re.findall(r"Docker Compose v(\d+\.\d+\.\d+) or newer", text))
        assert others == {MINIMUM_COMPOSE}, (doc, others)
    assert f"Docker Compose v{MINIMUM_COMPOSE} or newer" in COMPOSE.read_text().splitlines()[0]
