"""What the agent sandbox costs: start latency and CPU per agent run, with and without it.

    python -m bench.sandbox [--runs 40]

Each run is one agent started the way the worker starts it (the Supervisor, the
parent-death shim, and bwrap with the layout of a real slot when the sandbox is on) whose
agent only prints one line and exits. Measured per run: the start latency (from the
Supervisor starting the process to the agent's first line), the whole run's wall time,
and the CPU of the processes it took (user + system of the reaped children: shim, bwrap,
the agent), beside the probe that ``SANDBOX=auto`` makes once at start. The modes
alternate run by run, so that a busy machine weighs on both alike.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

from bench.harness import progress, summary, write_result
from taskinfa_worker.agent import sandbox
from taskinfa_worker.agent.process import Limits, ProcessSpec, Supervisor
from taskinfa_worker.settings import Settings

LIMITS = Limits(timeout=60, stall_timeout=60, kill_grace=2)
AGENT = ["/bin/sh", "-c", "echo started"]


def _settings(root: Path) -> Settings:
    return Settings(
        _env_file=None,
        taskinfa_api_url="http://127.0.0.1:9/api",
        taskinfa_api_key="tk_bench_sandbox_00000001",
        workspace_dir=root / "workspace",
        log_dir=root / "logs",
        claude_config_source=root / "claude-source",
        sandbox="on",
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _one(root: Path, layout: sandbox.SandboxLayout | None) -> dict[str, float]:
    marker = f"TASKINFA_AGENT_RUN={uuid.uuid4().hex}"
    name, value = marker.split("=")
    spec = ProcessSpec(
        argv=AGENT,
        env={"PATH": "/usr/bin:/bin", name: value},
        cwd=root / "workspace" / "tasks" / "task_bench",
        marker=marker,
        sandbox=layout,
    )
    first_line: list[float] = []

    def on_stdout(line: bytes) -> None:
        if not first_line:
            first_line.append(time.perf_counter())

    cpu_before = _children_cpu()
    started = time.perf_counter()
    run = await Supervisor(spec, LIMITS, on_stdout=on_stdout, on_stderr=lambda _line: None).run()
    ended = time.perf_counter()
    if run.exit_code != 0 or not first_line:
        raise SystemExit(f"the agent run failed: exit {run.exit_code}, {run.stderr_tail!r}")
    return {
        "start": first_line[0] - started,
        "wall": ended - started,
        "cpu": _children_cpu() - cpu_before,
    }


async def run(tmp: Path, runs: int = 40) -> dict[str, Any]:
    settings = _settings(tmp)
    tree = settings.workspace_dir / "tasks" / "task_bench"
    slot = settings.workspace_dir / ".agents" / "bench-1" / "config"
    for folder in (tree, slot, settings.log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    probe_started = time.perf_counter()
    state = await sandbox.sandbox_state(settings)
    probe_seconds = time.perf_counter() - probe_started
    if not state.enabled:
        progress(f"sandbox: not measured, {state.reason}")
        return {"available": False, "reason": state.reason}
    layout = sandbox.layout_for(state, settings, tree=tree, slot_dirs=[slot])
    samples: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    await _one(tmp, layout)  # the first start pays for cold caches: not counted
    for _ in range(runs):
        samples["off"].append(await _one(tmp, None))
        samples["on"].append(await _one(tmp, layout))
    result: dict[str, Any] = {"available": True, "runs": runs, "probe_ms": probe_seconds * 1000}
    for mode, values in samples.items():
        result[mode] = {
            field: summary([sample[field] * 1000 for sample in values])
            for field in ("start", "wall", "cpu")
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="taskinfa-bench-sandbox-"))
    try:
        result = anyio.run(run, tmp, args.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_result("sandbox", result)
    print(result)


if __name__ == "__main__":
    main()
