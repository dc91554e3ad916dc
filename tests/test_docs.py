"""The hand-written docs: links resolve, and the numbers they quote match the shipped files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from taskinfa_worker import errors
from taskinfa_worker.cli import EXIT_ERROR, EXIT_OK
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool.worker_pool import EXIT_IMMEDIATE
from taskinfa_worker.settings import Settings
from tests.deployfiles import COMPOSE, KUBERNETES, ROOT

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in page.read_text().splitlines():
        match = re.match(r"^#{1,6} (.+)$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


def test_the_expected_pages_exist() -> None:
    names = {page.name for page in PAGES}
    expected = {
        "quickstart.md",
        "configuration.md",
        "operations.md",
        "architecture.md",
        "migration.md",
    }
    assert expected <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"^[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: broken link {target}"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: no heading for {target}"


def test_operations_quotes_the_shipped_grace_periods() -> None:
    text = (DOCS / "operations.md").read_text()
    compose = yaml.safe_load(COMPOSE.read_text())
    grace = compose["services"]["worker"]["stop_grace_period"]
    assert f"stop_grace_period: {grace}" in text
    deployment = yaml.safe_load((KUBERNETES / "deployment.yaml").read_text())
    seconds = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert f"terminationGracePeriodSeconds: {seconds}" in text
    drain = Settings.model_fields["drain_timeout"].default
    kill_grace = Settings.model_fields["kill_grace"].default
    assert f"`DRAIN_TIMEOUT` seconds (default {drain:.0f})" in text
    assert f"`KILL_GRACE` seconds (default {kill_grace:.0f})" in text


def test_metric_names_in_the_docs_are_the_exposed_ones() -> None:
    exposed = set()
    for line in Metrics().render().decode().splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exposed.add(name)
            if kind == "histogram":
                exposed |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    # Every mention, in prose, tables, code and queries (`name{label}` too), on every page
    # an operator reads and in the deployment files.
    readable = [*PAGES, ROOT / "README.md", *sorted((ROOT / "deploy").rglob("*.yaml"))]
    named = {
        name
        for page in readable
        for name in re.findall(r"\btaskinfa_[a-z_]+\b", page.read_text())
        if name != "taskinfa_worker"
    }
    assert named, "the docs name no metric"
    assert named <= exposed, sorted(named - exposed)


def test_the_exit_statuses_in_operations_are_the_ones_the_code_uses() -> None:
    text = (DOCS / "operations.md").read_text().split("Exit status:", 1)[1]
    documented = {int(status) for status in re.findall(r"^\| (\d+) \|", text, re.MULTILINE)}
    used = {EXIT_OK, EXIT_ERROR, EXIT_IMMEDIATE} | {
        getattr(errors, name) for name in dir(errors) if name.startswith("EXIT_")
    }
    assert documented == used
    # Each fatal error's status is the one its row describes.
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", text, re.MULTILINE))
    assert "invalid settings" in rows[str(errors.ConfigError.exit_status)]
    assert "refused the key" in rows[str(errors.EXIT_AUTH)]
    assert "`HEALTH_PORT` in use" in rows[str(errors.PreflightError.exit_status)]
    assert "`LOG_DIR`" in rows[str(errors.PreflightError.exit_status)]
    assert "`LOG_DIR`" not in rows[str(errors.ConfigError.exit_status)]
