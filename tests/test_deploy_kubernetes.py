"""deploy/kubernetes: every manifest valid against the bundled Kubernetes schemas (offline),
the KEDA objects against tests/schemas/keda.json, and the manifests consistent with each
other and with the worker's settings."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jsonschema
import kubernetes_validate
import pytest
import yaml

from taskinfa_worker.settings import Settings, env_var
from tests.board_support import MakeBoard
from tests.deployfiles import KUBERNETES, ROOT

KEDA_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "keda.json").read_text())
# The oldest Kubernetes still commonly run, and the newest the validator knows.
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


# Outside deploy/kubernetes/: `kubectl apply -f deploy/kubernetes/` (with or without -R) must
# never replace the operator's real Secret with the example's empty values.
EXAMPLE_SECRET = ROOT / "deploy" / "secret.example.yaml"


def documents() -> list[tuple[str, dict[str, Any]]]:
    """Everything `kubectl apply -R -f deploy/kubernetes/` would apply."""
    found = []
    for path in sorted([*KUBERNETES.rglob("*.yaml"), *KUBERNETES.rglob("*.yml")]):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                found.append((path.name, document))
    return found


def example_secret() -> dict[str, Any]:
    secret = yaml.safe_load(EXAMPLE_SECRET.read_text())
    assert isinstance(secret, dict)
    return secret


def one(kind: str) -> dict[str, Any]:
    (document,) = [doc for _, doc in documents() if doc["kind"] == kind]
    return document


def container() -> dict[str, Any]:
    (worker,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return worker


def is_keda(document: dict[str, Any]) -> bool:
    return str(document["apiVersion"]).startswith("keda.sh/")


def test_expected_manifests_are_there() -> None:
    kinds = sorted(doc["kind"] for _, doc in documents())
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
    ]


def test_applying_the_folder_never_touches_a_secret() -> None:
    # The example once sat in the folder under the real name: applying the folder after
    # `kubectl create secret` blanked the keys. No Secret may be applied from there at all.
    assert not [name for name, doc in documents() if doc["kind"] == "Secret"]
    assert example_secret()["kind"] == "Secret"
    assert not EXAMPLE_SECRET.resolve().is_relative_to(KUBERNETES.resolve())


@pytest.mark.parametrize("version", VERSIONS)
def test_core_manifests_validate_strictly(version: str) -> None:
    checked = 0
    for _name, document in documents():
        if is_keda(document):
            continue
        # strict: unknown fields are errors, so a misspelt key cannot pass silently.
        kubernetes_validate.validate(document, version, strict=True)
        checked += 1
    assert checked == 4
    kubernetes_validate.validate(example_secret(), version, strict=True)


def test_disruption_budget_evicts_one_worker_pod_at_a_time() -> None:
    budget = one("PodDisruptionBudget")["spec"]
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    # maxUnavailable, not minAvailable: with 1 replica, minAvailable 1 blocks node drains.
    assert budget == {"maxUnavailable": 1, "selector": budget["selector"]}


def test_strict_validation_rejects_a_misspelt_field() -> None:
    broken = copy.deepcopy(one("Deployment"))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 10
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_keda_objects_match_the_schema() -> None:
    # The bundled Kubernetes schemas do not include KEDA's CRDs: tests/schemas/keda.json
    # describes the fields used here (required ones, types, no unknown keys).
    keda = [doc for _, doc in documents() if is_keda(doc)]
    assert len(keda) == 2
    for document in keda:
        jsonschema.validate(document, KEDA_SCHEMA)


def test_keda_schema_rejects_a_trigger_without_its_required_fields() -> None:
    broken = copy.deepcopy(one("ScaledObject"))
    del broken["spec"]["triggers"][0]["metadata"]["valueLocation"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, KEDA_SCHEMA)
    broken = copy.deepcopy(one("ScaledObject"))
    broken["spec"]["scaleTargetRef"]["nmae"] = "typo"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, KEDA_SCHEMA)


def test_config_map_holds_valid_settings() -> None:
    data = one("ConfigMap")["data"]
    known = {env_var(name): name for name in Settings.model_fields}
    for key in data:
        assert key in known, f"{key} is not a setting"
    # The values must be accepted by Settings itself (the Secret supplies the key).
    values = {known[key]: value for key, value in data.items()}
    settings = Settings(_env_file=None, taskinfa_api_key="tk_example_key_123", **values)
    assert settings.health_port == 8080
    assert settings.log_format == "json"


def test_termination_grace_covers_drain_and_kill_grace() -> None:
    data = one("ConfigMap")["data"]
    drain = float(data["DRAIN_TIMEOUT"])
    kill_grace = float(data.get("KILL_GRACE", Settings.model_fields["kill_grace"].default))
    grace = one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # After the drain the worker stops the agents (SIGTERM, KILL_GRACE, SIGKILL) and hands
    # their tasks back to todo; the kubelet's SIGKILL must come after all of that.
    assert grace >= drain + kill_grace + 30, (grace, drain, kill_grace)
    assert grace <= drain + 600, "an oversized grace only delays a stuck shutdown"


def test_bot_name_is_the_pod_name_and_keys_come_from_the_secret() -> None:
    env = {item["name"]: item for item in container()["env"]}
    assert env["BOT_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    secret = example_secret()
    for name in ["TASKINFA_API_KEY", "ANTHROPIC_API_KEY", "GITHUB_TOKEN"]:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] == name
        if name != "TASKINFA_API_KEY":
            assert ref["optional"] is True  # unset when missing, never an empty string
    # Every secret setting is fed from the Secret, never from the ConfigMap.
    assert not {key for key in one("ConfigMap")["data"] if "KEY" in key or "TOKEN" in key}
    configmap_refs = [ref["configMapRef"]["name"] for ref in container()["envFrom"]]
    assert configmap_refs == [one("ConfigMap")["metadata"]["name"]]


def test_example_secret_has_no_values() -> None:
    secret = example_secret()
    assert "data" not in secret
    assert set(secret["stringData"]) == {"TASKINFA_API_KEY", "ANTHROPIC_API_KEY"}
    assert all(value == "" for value in secret["stringData"].values())


def test_log_retention_fits_the_logs_volume() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    (logs,) = [volume for volume in pod["volumes"] if volume["name"] == "logs"]
    limit = logs["emptyDir"]["sizeLimit"]
    assert limit.endswith("Gi"), limit
    volume_mib = int(limit.removesuffix("Gi")) * 1024
    data = one("ConfigMap")["data"]
    cap = int(data.get("LOG_RETENTION_MB", Settings.model_fields["log_retention_mb"].default))
    # Pruning runs every few minutes: the live log (10 MB rotation) and running tasks'
    # transcripts grow between rounds, so the cap leaves half the volume free.
    assert cap <= volume_mib // 2, (cap, volume_mib)


def test_probes_use_the_health_port() -> None:
    worker = container()
    port = int(one("ConfigMap")["data"]["HEALTH_PORT"])
    assert one("ConfigMap")["data"]["HEALTH_HOST"] == "0.0.0.0"  # the kubelet is outside
    (declared,) = worker["ports"]
    assert declared["containerPort"] == port
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": declared["name"]}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": declared["name"]}
    annotations = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_runs_locked_down() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    context = container()["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsNonRoot"] is True
    resources = container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_writable_paths_are_volumes() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container()["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    # With a read-only root filesystem these are the places anything may be written.
    for path in ["/workspace", "/var/log/worker", "/tmp", "/home/worker"]:
        assert path in mounts, path
        assert mounts[path] in volumes, path


def test_network_policy_selects_the_workers_and_allows_only_what_they_need() -> None:
    policy = one("NetworkPolicy")["spec"]
    labels = one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    rules = policy["egress"]
    dns = [rule for rule in rules if any(port["port"] == 53 for port in rule["ports"])]
    assert len(dns) == 1
    assert {port["protocol"] for port in dns[0]["ports"]} == {"UDP", "TCP"}
    assert dns[0]["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    others = [rule for rule in rules if rule not in dns]
    ports = {port["port"] for rule in others for port in rule["ports"]}
    assert ports == {443, 22}
    # No rule opens everything: every other destination is an explicit IP block.
    for rule in others:
        for target in rule["to"]:
            assert set(target) == {"ipBlock"}
            assert target["ipBlock"]["cidr"] not in {"0.0.0.0/0", "::/0"}


def test_keda_scales_the_deployment_on_todo_tasks() -> None:
    scaled = one("ScaledObject")["spec"]
    deployment = one("Deployment")
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "metrics-api"
    metadata = trigger["metadata"]
    url = urlsplit(metadata["url"])
    board = urlsplit(one("ConfigMap")["data"]["TASKINFA_API_URL"])
    assert (url.scheme, url.netloc) == (board.scheme, board.netloc)
    assert url.path == board.path + "/tasks"
    assert parse_qs(url.query)["status"] == ["todo"]
    assert parse_qs(url.query)["limit"] == ["100"]
    # The tasks listed, not "total": real boards send the page's length there.
    assert metadata["valueLocation"] == "tasks.#"
    # One pod per CONCURRENCY todo tasks.
    assert metadata["targetValue"] == one("ConfigMap")["data"]["CONCURRENCY"]
    assert metadata["authMode"] == "bearer"
    # Every poll spends one request of the key's 100/min budget.
    assert scaled["pollingInterval"] >= 30


def test_keda_authenticates_with_the_board_key_from_the_secret() -> None:
    auth = one("TriggerAuthentication")
    (trigger,) = one("ScaledObject")["spec"]["triggers"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (ref,) = auth["spec"]["secretTargetRef"]
    secret = example_secret()
    assert ref["parameter"] == "token"  # metrics-api bearer mode reads "token"
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] == "TASKINFA_API_KEY"
    assert ref["key"] in secret["stringData"]


@pytest.mark.parametrize("profile", ["v1", "v2"])
async def test_keda_counts_the_todo_tasks_on_real_boards(
    make_board: MakeBoard, http: aiohttp.ClientSession, profile: str
) -> None:
    # KEDA reads a GJSON path; "<array>.#" is that array's length.
    metadata = one("ScaledObject")["spec"]["triggers"][0]["metadata"]
    array, _, count = metadata["valueLocation"].partition(".")
    assert count == "#"
    board = await make_board(profile=profile)
    for n in range(8):
        board.create_task(f"t{n}")
    board.create_task("done already", status="done")
    url = urlsplit(metadata["url"])
    path = url.path.removeprefix(urlsplit(one("ConfigMap")["data"]["TASKINFA_API_URL"]).path)
    async with http.get(f"{board.url}{path}?{url.query}", headers=board.headers) as response:
        body = await response.json()
    assert len(body[array]) == 8
