"""Tables and a chart from the parts' results: stdout, docs/benchmarks.md, docs/benchmarks.png.

python -m bench.sandbox --runs 40
python -m bench.report      (re-renders from bench/out/*.json without measuring again)
"""

from __future__ import annotations

import bisect
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.harness import OUT, ROOT, read_result

DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
PROFILE_BEFORE = ROOT / "bench" / "profile_before.json"
LIMIT = 100


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or value != value:  # NaN
        return "–"
    return f"{value:,.{digits}f}"


def _ms(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "–"
    if seconds >= 1:
        return f"{seconds:.1f} s"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def _kv(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items())


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        memory = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        memory = ""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return (
        f"{os.cpu_count()} CPU ({cpu}), {memory}, Python {platform.python_version()}, "
        f"Linux {platform.release()}, commit {commit or '?'}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


# --- sections -------------------------------------------------------------------------------
def _idle_rate(budget: dict[str, Any] | None, layout: str, slots: int) -> float | None:
    for row in (budget or {}).get("idle", []):
        if row["layout"] == layout and row["slots"] == slots:
            return float(row["requests_per_minute"])
    return None


def layouts_section(layouts: dict[str, Any] | None, budget: dict[str, Any] | None) -> str:
    if not layouts:
        return "_layouts: no result_"
    rows = []
    for run in layouts["runs"]:
        n = run["slots"]
        idle = _idle_rate(budget, run["layout"], n)
        if idle is None and n == 1:
            idle = _idle_rate(budget, "pool", 1)
        shape = f"{run['processes']} × {run['slots_per_process']}"
        name = "one process, N slots" if run["layout"] == "pool" else "N processes (seed)"
        if n == 1:
            name = "one process, one slot (both layouts)"
        rows.append(
            [
                str(n),
                name,
                shape,
                _fmt(run["idle_rss_workers_mib"], 0),
                _fmt(run["peak_rss_workers_mib"], 0),
                _fmt(run["peak_rss_agents_mib"], 0),
                _fmt(run["peak_rss_total_mib"], 0),
                _fmt(run["requests_per_task"], 2),
                str(run.get("lost_claims", "–")),
                _fmt(idle, 1),
                _fmt(run["tasks_per_second"], 1),
                _fmt(run["worker_cpu_seconds"], 1),
            ]
        )
    header = [
        "N",
        "layout",
        "processes × slots",
        "idle RSS, workers (MiB)",
        "busy peak RSS, workers",
        "busy peak RSS, agents",
        "busy peak RSS, total",
        "requests / task",
        "lost claims (409)",
        "idle requests / min",
        "tasks / s",
        "worker CPU (s)",
    ]
    return (
        table(header, rows)
        + _orchestrator_throughput(layouts["runs"])
        + f"\n\nTasks: 10·N (at least 20), agent `{layouts['agent']}`. Throughput settings: "
        "board rate limit off, RATE_LIMIT=100000, POLL_INTERVAL=0.2, MAX_POLL_INTERVAL=0.5 "
        "(both layouts). Idle requests per minute: default intervals, from the budget part "
        "below. Worker CPU: all worker processes, start-up included."
    )


# Taskinfa's own orchestrator, by default: it looks for work every 15 minutes and runs at
# most 3 sessions at once. Its figures below are computed from those two numbers and this
# run's measurements, not measured (it needs the dashboard and Claude Code to run).
ORCHESTRATOR_POLL_SECONDS = 15 * 60
ORCHESTRATOR_SESSIONS = 3


def _orchestrator_throughput(runs: list[dict[str, Any]]) -> str:
    one = next((run for run in runs if run["slots"] == 1), None)
    if one is None:
        return ""
    ceiling = ORCHESTRATOR_SESSIONS * one["tasks_per_second"]
    return (
        f"\n\nReference (computed from this run): Taskinfa's own orchestrator runs at most "
        f"{ORCHESTRATOR_SESSIONS} sessions at once, so with these tasks it could finish at most "
        f"{ORCHESTRATOR_SESSIONS} × {one['tasks_per_second']:.1f} = {ceiling:.1f} tasks / s "
        "(three times the one-slot row, an upper bound), whatever the number of tasks waiting."
    )


def budget_section(budget: dict[str, Any] | None) -> str:
    if not budget:
        return "_budget: no result_"
    idle_rows = []
    for row in budget["idle"]:
        by = row["requests_by_endpoint"]
        idle_rows.append(
            [
                "one process" if row["layout"] == "pool" else "seed layout",
                str(row["slots"]),
                f"{row['processes']} × {row['slots_per_process']}",
                _fmt(row["requests_per_minute"], 1),
                ", ".join(f"{k} {v}" for k, v in by.items()),
                str(row["rate_limited"]),
                _fmt(row["rss_workers_mib"], 0),
            ]
        )
    window = budget["idle_window"]
    idle = table(
        [
            "layout",
            "slots",
            "processes × slots",
            "idle requests / min",
            f"requests in the {window[1] - window[0]:.0f} s window",
            "429s",
            "RSS (MiB)",
        ],
        idle_rows,
    )
    busy = budget["busy"]
    busy_rows = [
        ["slots (agents sleeping)", str(busy["slots"])],
        ["board limit / worker RATE_LIMIT", f"{busy['board_limit_per_minute']} / min, 100"],
        [
            "ramp: until every slot runs",
            f"{busy['ramp_seconds']:.0f} s, {busy['ramp_requests']} requests "
            f"({busy['ramp_requests'] / busy['ramp_seconds'] * 60:.0f} / min)",
        ],
        [
            f"steady: all {busy['slots']} busy, the {busy['steady_seconds']:.0f} s after the ramp",
            f"{busy['steady_requests_per_minute']:.1f} requests / min "
            f"({_kv(busy['steady_by_endpoint'])}); a heartbeat round of 65 takes ~40 s and "
            "rounds start ~100 s apart, so this window holds a round or parts of two",
        ],
        [
            "steady, from the intervals the code computes",
            f"{busy.get('expected_steady_per_minute', float('nan')):.1f} requests / min "
            f"(65 heartbeats every {busy.get('expected_heartbeat_interval', float('nan')):.0f} s, "
            "cancellation checks, lease sweeps)",
        ],
        [
            "longest silence of a name between heartbeats (board: offline after 120 s)",
            f"{busy.get('longest_heartbeat_gap') or float('nan'):.0f} s",
        ],
        ["most requests in any 60 s (whole run)", str(busy["max_requests_in_60s"])],
        ["429 answers", str(busy["rate_limited"])],
        [
            "RSS worker / 64 agents (MiB)",
            f"{busy['rss_worker_mib']:.0f} / {busy['rss_agents_mib']:.0f}",
        ],
    ]
    pools = [r for r in budget["idle"] if r["layout"] == "pool"]
    rates = [r["requests_per_minute"] for r in pools]
    flat = bool(rates) and max(rates) - min(rates) <= 1.0
    verdicts = [
        f"- idle rate flat in N (pools of {', '.join(str(r['slots']) for r in pools)} slots: "
        f"{', '.join(_fmt(x) for x in rates)} / min): **{'met' if flat else 'MISSED'}**",
        f"- zero 429s with 64 busy slots: **{'met' if busy['rate_limited'] == 0 else 'MISSED'}** "
        f"({busy['rate_limited']})",
        f"- busy rate under the limit (most in any 60 s: {busy['max_requests_in_60s']}; steady "
        f"{busy['steady_requests_per_minute']:.1f} / min): "
        f"**{'met' if busy['max_requests_in_60s'] <= LIMIT else 'MISSED'}**",
    ]
    return (
        "Idle, default intervals (the poll paced by the key's budget, a todo-list read every "
        "~3.5 s; heartbeat 10 s), each configuration on its "
        f"own board, counted from {window[0]:.0f} s to {window[1]:.0f} s after start:\n\n"
        + idle
        + "\n\n64 busy slots against a board limited to 100 requests a minute:\n\n"
        + table(["", "measured"], busy_rows)
        + "\n\nTargets:\n\n"
        + "\n".join(verdicts)
    )


# Requests per task before issue 17's item 2 (bench.dispatch, 300 tasks × 32 slots, agent
# `true`, on the commit before it), per profile and endpoint: the reference for the rows below.
REQUESTS_BEFORE: dict[str, dict[str, float]] = {
    "full": {
        "GET /tasks/next": 1.02,
        "POST /tasks/{task_id}/claim": 1.0,
        "GET /tasks/{task_id}": 1.0,
        "PATCH /tasks/{task_id}": 1.0,
        "POST /tasks/{task_id}/comments": 2.0,
        "POST /workers/heartbeat": 2.0,
    },
    "v1": {
        "GET /tasks/next": 1.02,
        "GET /tasks/{task_id}": 3.0,
        "PATCH /tasks/{task_id}": 4.0,
        "POST /workers/heartbeat": 2.0,
    },
    "v2": {
        "GET /tasks/next": 1.02,
        "GET /tasks/{task_id}": 3.0,
        "PATCH /tasks/{task_id}": 2.0,
        "POST /tasks/{task_id}/comments": 2.0,
        "POST /sessions": 1.0,
        "POST /events": 2.0,
        "PATCH /sessions/{session_id}": 1.0,
    },
}
REQUESTS_BEFORE_TOTAL = {"full": 8.03, "v1": 10.03, "v2": 12.02}
PROFILE_LABELS = {
    "full": "claim route (`full`)",
    "v1": "worker-era release (`v1`)",
    "v2": "current release (`v2`)",
}


def requests_section(profiles: dict[str, Any] | None) -> str:
    """Requests per task by endpoint on each board profile, before and now."""
    if not profiles:
        return "_requests per task: no result_"
    names = [name for name in PROFILE_LABELS if name in profiles]
    endpoints: dict[str, None] = {}
    for name in names:
        endpoints.update(dict.fromkeys(REQUESTS_BEFORE.get(name, {})))
        for endpoint, rate in profiles[name]["requests_per_task_by_endpoint"].items():
            if rate >= 0.005:  # a request the whole run made once is no cost per task
                endpoints.setdefault(endpoint)
    header = ["requests / task", *(f"{PROFILE_LABELS[n]} before → now" for n in names)]

    def cell(name: str, endpoint: str | None) -> str:
        before = REQUESTS_BEFORE.get(name, {})
        now = profiles[name]["requests_per_task_by_endpoint"]
        if endpoint is None:
            total = profiles[name]["requests_per_task"]
            return f"**{_fmt(REQUESTS_BEFORE_TOTAL.get(name), 2)} → {_fmt(total, 2)}**"
        return f"{_fmt(before.get(endpoint, 0.0), 2)} → {_fmt(now.get(endpoint, 0.0), 2)}"

    rows = [[f"`{e}`", *(cell(n, e) for n in names)] for e in endpoints]
    rows.append(["**all**", *(cell(n, None) for n in names)])
    return table(header, rows)


def dispatch_section(dispatch: dict[str, Any] | None) -> str:
    if not dispatch:
        return "_dispatch: no result_"
    d = dispatch
    rows = [
        ["tasks × slots", f"{d['tasks']} × {d['slots']} (agent `true`)"],
        ["tasks / s", _fmt(d["tasks_per_second"], 1)],
        ["worker CPU / task (worker process only)", f"{d['worker_cpu_ms_per_task']:.1f} ms"],
        ["agents' CPU / task", f"{d['agents_cpu_ms_per_task']:.1f} ms"],
        ["requests / task", _fmt(d["requests_per_task"], 2)],
        [
            "board time in handlers / task (wall, CPU)",
            f"{d['board_wall_ms_per_task']:.2f} ms, {d['board_cpu_ms_per_task']:.2f} ms",
        ],
        [
            "board process CPU / task (HTTP server, SQLite, handlers)",
            f"{d['bench_process_cpu_ms_per_task']:.2f} ms",
        ],
        [
            "board limit: tasks / s if only the board's time counted",
            f"{d['board_limit_tasks_per_second']:,.0f} (handlers), "
            f"{1000 / d['bench_process_cpu_ms_per_task']:,.0f} (whole board process)",
        ],
        [
            "worker limit: tasks / s on one core",
            f"{1000 / d['worker_cpu_ms_per_task']:,.0f}",
        ],
    ]
    return (
        table(["", "measured"], rows)
        + "\n\nBoard rate limit off and RATE_LIMIT=100000 for this part (a real board's 100 "
        "requests a minute allows about 100 / requests-per-task tasks a minute). The "
        "board runs in the benchmark process, the worker in its own.\n\n"
        "The requests each task spends, per endpoint, on the board with the claim route and "
        "on the local board's profiles of the two real releases (same run, rate limit off; "
        "before: the commit before issue 17's item 2):\n\n" + requests_section(d.get("profiles"))
    )


def profile_section(after: dict[str, Any] | None, before: dict[str, Any] | None) -> str:
    """Where the worker's CPU went under cProfile, before issue #17's CPU work and now."""
    if not after and not before:
        return "_profile: no result_"
    runs = [(name, run) for name, run in (("before", before), ("after", after)) if run]
    header = ["", *(name for name, _ in runs)]
    areas: dict[str, None] = {}
    for _, run in runs:
        areas.update(dict.fromkeys(sorted(run["by_area"], key=lambda a: -run["by_area"][a])))
    shown = [a for a in areas if max(run["by_area"].get(a, 0.0) for _, run in runs) >= 0.1]
    rows = [
        [
            "profiled CPU / task, in all",
            *(f"{run['profiled_ms_per_task']:.2f} ms" for _, run in runs),
        ]
    ]
    rows += [
        [f"`{a}`", *(f"{run['by_area'].get(a, 0.0):.2f} ms" for _, run in runs)] for a in shown
    ]
    parts = [
        "Self time per task, summed per area (the worker's packages, the libraries, the C "
        "built-ins such as syscalls and JSON), under cProfile:\n\n" + table(header, rows)
    ]
    for name, run in runs:
        for key, title in (("by_self", "self"), ("by_cumulative", "cumulative")):
            top = [
                [
                    f"`{r['function']}`",
                    _fmt(r["calls_per_task"], 1),
                    f"{r[key.removeprefix('by_') + '_ms_per_task']:.3f}",
                ]
                for r in run[key][:10]
            ]
            parts.append(
                f"{name.capitalize()}, top functions by {title} time:\n\n"
                + table(["function", "calls / task", f"{title} ms / task"], top)
            )
    captured = (before or {}).get("captured_on")
    parts.append(
        "cProfile counts every call of every thread (its own CPU clock per thread, so a "
        "thread waiting costs nothing) over the measured window of `bench.dispatch`'s run; it "
        "makes each call slower, so these milliseconds compare with each other, not with the "
        "unprofiled CPU per task above. A coroutine counts one call per resumption. "
        + (
            f"The before column is `bench/profile_before.json`, captured on {captured}."
            if captured
            else ""
        )
    )
    return "\n\n".join(parts)


def replicas_section(result: dict[str, Any] | None) -> str:
    if not result:
        return "_replicas: no result_"
    rows = []
    for key, label in (("replicas_alone", "1 worker alone"), ("replicas_together", "10 workers")):
        run = result[key]
        pickup = run["pickup"]
        routes = ", ".join(
            f"{route.removeprefix('/api')} {rate:.1f}"
            for route, rate in sorted(run["idle_requests_by_route_per_minute"].items())
        )
        rows.append(
            [
                label,
                str(pickup["n"]),
                _ms(pickup["p50"]),
                _ms(pickup["p90"]),
                _ms(pickup["max"]),
                _fmt(run["idle_requests_per_minute"], 1),
                routes,
            ]
        )
    header = ["one key, idle", "n", "pickup p50", "p90", "max", "key's requests / min", "of which"]
    return (
        table(header, rows) + "\n\nOne key of a board limited to 100 requests a minute (it sends "
        "X-RateLimit-Remaining), one-slot workers with the default settings, a task arriving "
        "4–16 s after the previous one's review. Each process takes its part of every "
        "loop's share by its part of the key's traffic, so ten replicas poll about as often "
        "together as one alone, and stretch their heartbeats tenfold (at most to 100 s)."
    )


def latency_section(fast: dict[str, Any] | None, idle: dict[str, Any] | None) -> str:
    rows = []

    def add(name: str, settings: str, stats: dict[str, Any] | None) -> None:
        if not stats or not stats.get("n"):
            rows.append([name, settings, "0", "–", "–", "–"])
            return
        rows.append(
            [
                name,
                settings,
                str(stats["n"]),
                _ms(stats["p50"]),
                _ms(stats["p90"]),
                _ms(stats["max"]),
            ]
        )

    default = "default poll (paced: 18 % of the key, POLL_INTERVAL=2 at least)"
    small = "POLL_INTERVAL=0.5, MAX_POLL_INTERVAL=2"
    add("idle: todo → claim", default, (idle or {}).get("idle_default"))
    add("idle: todo → claim", small, (fast or {}).get("idle_small"))
    add(
        "busy: slot frees → next claim",
        default + ", RATE_LIMIT=100000",
        (fast or {}).get("busy_default"),
    )
    add(
        "busy: slot frees → next claim",
        small + ", RATE_LIMIT=100000",
        (fast or {}).get("busy_small"),
    )
    add(
        "busy, budget-bound: slot frees → next claim",
        "default poll, RATE_LIMIT=100, board limit 100/min, 0.3 s tasks",
        (fast or {}).get("busy_budget_bound"),
    )
    # A task created at a random moment waits for the orchestrator's next look: uniformly
    # between 0 and the whole interval.
    poll = ORCHESTRATOR_POLL_SECONDS
    rows.append(
        [
            "reference: Taskinfa's orchestrator, idle (computed)",
            "15-minute poll (its default)",
            "–",
            _ms(poll * 0.5),
            _ms(poll * 0.9),
            _ms(poll),
        ]
    )
    return table(["case", "settings", "n", "p50", "p90", "max"], rows)


def scale_section(scale: dict[str, Any] | None) -> str:
    if not scale:
        return "_scale: no result_"
    rows = []
    for phase, what in (
        ("ramp", f"start → {scale['slots']} agents running ({scale['ramp_seconds']:.1f} s)"),
        ("steady", f"all {scale['slots']} busy, 256 output lines / s (20 s)"),
        (
            "finish",
            f"{scale['slots']} agents end at once → review ({scale['finish_seconds']:.1f} s)",
        ),
    ):
        lag = scale["lag_ms"][phase]
        rows.append(
            [
                phase,
                what,
                _fmt(lag.get("p50"), 1),
                _fmt(lag.get("p99"), 1),
                _fmt(lag.get("max"), 0),
            ]
        )
    return (
        table(["phase", "", "loop lag p50 (ms)", "p99 (ms)", "max (ms)"], rows)
        + f"\n\nRSS with {scale['slots']} slots busy: worker {scale['rss_worker_mib']:.0f} MiB, "
        f"agents {scale['rss_agents_mib']:.0f} MiB in all ({scale['rss_agent_each_mib']:.1f} MiB "
        "each: a shell loop and its `sleep`). Board rate limit off, RATE_LIMIT=100000."
    )


def sandbox_section(result: dict[str, Any] | None) -> str:
    if not result:
        return "_sandbox: no result_"
    if not result.get("available"):
        return f"_sandbox: not measured on this machine ({result.get('reason', '?')})_"
    rows = []
    for mode, label in (("off", "SANDBOX=off"), ("on", "SANDBOX=on (bwrap)")):
        values = result[mode]
        rows.append(
            [
                label,
                _fmt(values["start"]["p50"], 1),
                _fmt(values["start"]["p90"], 1),
                _fmt(values["wall"]["p50"], 1),
                _fmt(values["cpu"]["mean"], 1),
            ]
        )
    return (
        table(
            ["agent run", "start p50 (ms)", "start p90 (ms)", "whole run p50 (ms)", "CPU (ms)"],
            rows,
        )
        + f"\n\n{result['runs']} runs of each, alternating; the agent prints one line and exits "
        "(`sh -c 'echo started'`). Start: from the Supervisor starting the process to that "
        "line. CPU: user + system of every process the run took (the parent-death shim, "
        f"bwrap, the agent). The probe `SANDBOX=auto` makes once at start: "
        f"{result['probe_ms']:.0f} ms."
    )


def pages_section(pages: dict[str, Any] | None) -> str:
    if not pages:
        return "_pages: no result_"
    rows = []
    for run in pages["runs"]:
        lat, tally = run["pool_requests"], run["page_requests"]
        rows.append(
            [
                str(run["round"]),
                str(run["pages"]),
                str(lat["n"]),
                _ms(lat.get("p50")),
                _ms(lat.get("p90")),
                _ms(lat.get("p99")),
                _ms(lat.get("max")),
                str(run["reviewed"]),
                str(tally.get("views", 0)),
                _fmt(tally.get("bytes", 0) / 1e6, 1),
            ]
        )
    return (
        table(
            [
                *("round", "open pages", "pool requests", "p50", "p90"),
                *("p99", "max", "tasks reviewed", "page views", "MB sent"),
            ],
            rows,
        )
        + f"\n\n{pages['slots']} busy slots (agent `sleep 2`, 500 tasks), {pages['seconds']:.0f} s "
        "per run, runs alternating so the shared machine's drift hits both; the pool's latency "
        "is what the worker itself logs for each request (1 ms resolution). The pages are a "
        "separate process behaving as the page's script: one long-poll on `/api/changes`, "
        "after each change a pause of 1 s and up to 0.5 s more at random (pages opened "
        "together drift apart instead of asking in the same instant). The board answers at "
        "most two versions a second, however many pages ask, each answer built and gzipped "
        "once: the cards changed since the page's version (the whole board only on a page's "
        "first ask), cards only (a card's detail is read on opening). MB sent: the compressed "
        "bytes the pages received."
    )


# --- chart ------------------------------------------------------------------------------------
# Figures of the reader before the change that skims big tool results and redacts bytes
# (issue 17, measured by the same benchmark on the same kind of machine).
STREAM_BEFORE = {"stream": (107.0, 4.6)}
STREAM_TARGET = "≥ 150 MB/s, peak ≤ 3× the longest line"
STREAM_ROWS = {
    "split": "cutting lines only",
    "json": "cutting + json.loads of every line (reference)",
    "stream": "the reader: parse what the worker needs, redact, write the transcript",
    "pipe": "the supervisor: `cat` as the agent, real pipes, transcript on disk",
}


def stream_section(stream: dict[str, Any] | None) -> str:
    if not stream:
        return "_stream reader: no result_"
    rows = []
    for name, what in STREAM_ROWS.items():
        r = stream[name]
        before = STREAM_BEFORE.get(name)
        rows.append(
            [
                name,
                what,
                _fmt(r["mb_per_s"]),
                _fmt(r["cpu_seconds"], 2),
                _fmt(r["peak_per_line"]),
                f"{before[0]:.0f} MB/s, {before[1]:.1f}×" if before else "",
            ]
        )
    header = ["scenario", "what runs", "MB/s", "CPU (s)", "peak RSS above base / line", "before"]
    return (
        f"Input: {stream['size_mb']:.0f} MB, tool results of "
        f"{stream['longest_line_mb']:.1f} MB between small events; each scenario in a fresh "
        f"process. Target: {STREAM_TARGET}.\n\n"
        + table(header, rows)
        + "\n\nA big `user` event (a tool result, the only kind that reaches megabytes) goes "
        "to the transcript unparsed: the worker reads nothing in it, and parsing would hold "
        "its text and its objects beside the bytes. Lines are redacted as bytes (no decode "
        "and encode copies); what remains is the line itself and the splitter joining its "
        "pieces. The pipe row adds the agent's pipe and writing the transcript to disk."
    )


def chart(results: dict[str, dict[str, Any] | None], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    layouts, budget, scale = results["layouts"], results["budget"], results["scale"]

    ax = axes[0][0]
    if layouts:
        for layout, style in (("pool", "o-"), ("seed", "s--")):
            runs = [r for r in layouts["runs"] if r["layout"] == layout or r["slots"] == 1]
            ax.plot(
                [r["slots"] for r in runs],
                [r["peak_rss_total_mib"] for r in runs],
                style,
                label="one process, N slots" if layout == "pool" else "N processes (seed)",
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("slots (N)")
        ax.set_ylabel("MiB")
        ax.set_title("Memory while busy: workers + agents (sum of RSS)")
        ax.legend()

    ax = axes[0][1]
    if budget:
        for layout, style in (("pool", "o-"), ("seed", "s--")):
            rows = [r for r in budget["idle"] if r["layout"] == layout]
            if layout == "seed":
                rows = [r for r in budget["idle"] if r["slots"] == 1] + rows
            rows.sort(key=lambda r: r["slots"])
            ax.plot(
                [r["slots"] for r in rows],
                [r["requests_per_minute"] for r in rows],
                style,
                label="one process, N slots" if layout == "pool" else "N processes (seed)",
            )
        ax.axhline(LIMIT, color="red", linestyle=":", label="board limit per key")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("slots (N)")
        ax.set_ylabel("requests / min")
        ax.set_title("Idle requests per minute (default intervals)")
        ax.legend()

    ax = axes[1][0]
    if budget and budget.get("busy"):
        times = sorted(budget["busy"]["request_times"])
        if times:
            grid = [t / 2 for t in range(int(times[-1] * 2) + 1)]
            trailing = [
                bisect.bisect_right(times, t) - bisect.bisect_right(times, t - 60) for t in grid
            ]
            ax.plot(grid, trailing, label="requests in the last 60 s")
            ax.axhline(LIMIT, color="red", linestyle=":", label="board limit")
            ax.axvline(
                budget["busy"]["ramp_seconds"], color="grey", linestyle="--", label="all 64 busy"
            )
            ax.set_xlabel("seconds since start")
            ax.set_ylabel("requests")
            ax.set_title("64 busy slots against 100 requests / min")
            ax.legend(loc="lower right")

    ax = axes[1][1]
    if scale:
        phases = ["ramp", "steady", "finish"]
        x = range(len(phases))
        for offset, key in ((-0.2, "p50"), (0.2, "p99")):
            ax.bar(
                [i + offset for i in x],
                [scale["lag_ms"][p].get(key, 0) for p in phases],
                width=0.4,
                label=key,
            )
        ax.set_xticks(list(x), phases)
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"Event-loop lag, {scale['slots']} slots in one process")
        ax.legend()

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- document ---------------------------------------------------------------------------------
def load() -> dict[str, dict[str, Any] | None]:
    return {
        "layouts": read_result("layouts"),
        "budget": read_result("budget"),
        "dispatch": read_result("dispatch"),
        "profile": read_result("profile"),
        "profile_before": json.loads(PROFILE_BEFORE.read_text())
        if PROFILE_BEFORE.exists()
        else None,
        "latency_fast": read_result("latency-fast"),
        "latency_idle": read_result("latency-idle-default"),
        "latency_replicas": read_result("latency-replicas"),
        "scale": read_result("scale"),
        "stream": read_result("stream"),
        "pages": read_result("pages"),
        "sandbox": read_result("sandbox"),
    }


# Not a part of ``make bench``: read off one run of the test named in it (two processes and a
# person's move; the times are the test's), kept here so that regenerating the page keeps it.
HANDOVER_FENCE = """\
What the fence (`pool/handover.py`) costs, from
`tests/pool/test_pool.py::test_a_persons_move_hands_a_task_to_another_process_without_overlap`
(two processes, default settings, a person moves the running task back to `todo`):

| | |
|---|---|
| second worker claims the task | t = 0 |
| first worker's takeaway check notices, stops and reaps its agent, posts its note | t = 32.4 s |
| second worker's agent starts (the fence looks every 2 s) | t = 34.2 s |
| agents running the task at once | never |

So the fence delays a handed-over task by the first worker's detection time (at most one
`CANCEL_CHECK_INTERVAL`, jittered and stretched by the budget, plus the agent's stop) and
one fence poll, bounded by two check intervals plus `KILL_GRACE`. A task that never
started pays nothing; one whose last run ended (a retry, a task back from review) pays one
read of its comments (and of the workers or the active sessions).
`taskinfa_handover_wait_seconds_total` counts the seconds waited. The same test runs on the
local board's `v1` profile (no comments: the fence goes by the old worker's heartbeat,
which names the task until its slot moves on) and `v2` (no `/workers`: by the old run's
active session, until its stop note or its bound). A run's start note opens its first
progress comment, so in its first minute the heartbeat or the session is what the fence
sees on every profile.
"""


def render(results: dict[str, dict[str, Any] | None], seconds: float | None = None) -> str:
    took = f" `make bench` took {seconds / 60:.1f} minutes." if seconds else ""
    return f"""# Benchmarks

Written by `make bench` (`python -m bench`); every number below comes from the last run.{took}
Machine: {machine()}.

Everything runs against the local board (`taskinfa_worker.board`, SQLite) on 127.0.0.1,
served from the benchmark process with one extra middleware that records every request
(so requests are counted at the board, across all worker processes). Workers are real
`taskinfa-worker run` processes with the `command` agent and tiny agents (`sleep`, `true`,
a shell loop), so the numbers are the worker's own costs; with Claude Code each agent is a
Node.js process with memory of its own, and tasks take minutes, not milliseconds. Raw results:
`bench/out/*.json`. The chart: [benchmarks.png](benchmarks.png).

![benchmarks](benchmarks.png)

## One process with N slots vs N processes of one slot (the seed's layout)

{layouts_section(results["layouts"], results["budget"])}

## Request budget

{budget_section(results["budget"])}

## Dispatch overhead

{dispatch_section(results["dispatch"])}

### Where the worker's CPU goes

{profile_section(results["profile"], results["profile_before"])}

## Pickup latency

{latency_section(results["latency_fast"], results["latency_idle"])}

{replicas_section(results["latency_replicas"])}

Idle: the worker had been idle for a while (85 s + 0–60 s with the default poll; 5 s +
0–3 s with the small one), then one task was created. The default poll no longer backs off
(it used to double from 5 s to 60 s: a task then waited 30.8 s at the median and 54 s at
worst); it spends its part of the key's idle-poll share, a poll every ~3.5 s on a key of its
own. Busy: every
slot busy and tasks waiting; a freed slot claims at once (the dispatcher is woken by the
task's end, no poll wait). Budget-bound: with 0.3 s tasks a 4-slot pool needs about
four times the 100 requests a minute it may send; the freed slot then waits in the rate
limiter (the poll for the next task goes in the background lane, behind a reserve left
for finishing work) and in line behind the other free slots.

## 256 slots in one process

{scale_section(results["scale"])}

## Reading Claude Code's stream-json output

{stream_section(results["stream"])}

## The handover fence

{HANDOVER_FENCE}
## Open kanban pages while the pool works

{pages_section(results["pages"])}

## The agent sandbox

{sandbox_section(results["sandbox"])}

The other parts run with `SANDBOX=off`: their agents talk to the benchmark through files
outside their trees (the scale gate, the chaos ledger), which the sandbox would hide.

## Reproducing

```bash
make bench                       # everything, about 5 minutes, writes this file
python -m bench.layouts --sizes 1,8,32
python -m bench.budget           # about 4.5 minutes
python -m bench.budget --steady 240   # the busy steady state over two heartbeat rounds
python -m bench.dispatch --tasks 1000 --slots 32
python -m bench.profile          # the same run under cProfile: where the worker's CPU goes
python -m bench.latency --part fast
python -m bench.latency --part idle-default
python -m bench.scale --slots 256
python bench/stream_reader.py    # the stream-json reader, 200 MB in 10 MB lines
python -m bench.pages            # about 2.5 minutes: 32 busy slots, alone and with 20 pages
python -m bench.report           # tables, this file and the chart from bench/out/*.json
```
"""


def write(seconds: float | None = None) -> str:
    results = load()
    if seconds is None:
        seconds = (read_result("run") or {}).get("seconds")
    text = render(results, seconds)
    DOC.write_text(text)
    chart(results, CHART)
    return text


def main() -> None:
    text = write()
    print(text)
    print(f"wrote {DOC.relative_to(ROOT)} and {CHART.relative_to(ROOT)} from {OUT}")


if __name__ == "__main__":
    main()
