"""Writes the chaos run's numbers into docs/reliability.md (between two marker lines).

The rest of that page (the bad-input table, the findings) is written by hand; ``make chaos``
replaces only the part between ``<!-- chaos:begin -->`` and ``<!-- chaos:end -->``.
"""

from __future__ import annotations

import time
from typing import Any

from bench.harness import ROOT

DOC = ROOT / "docs" / "reliability.md"
BEGIN = "<!-- chaos:begin -->"
END = "<!-- chaos:end -->"


def _kv(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(values.items())) or "none"


def chaos_section(result: dict[str, Any]) -> str:
    from bench.chaos import passed

    r, c = result, result["config"]
    faults = c["faults"]
    rows = [
        ("seed", c["seed"]),
        ("tasks", f"{r['tasks']}, {c['workers']} worker processes × {c['concurrency']} slots"),
        ("duration", f"{r['seconds']:.0f} s ({r['faulty_phase_seconds']:.0f} s with SIGKILLs)"),
        ("final statuses", _kv(r["statuses"])),
        ("agent runs", f"{r['agent_runs']} ({_kv(r['agent_modes'])})"),
        ("agent endings (ledger)", _kv(r["agent_endings"])),
        (
            "faults injected by the proxy",
            f"{_kv(r['faults'])}; {r['requests_to_board']} requests reached the board",
        ),
        (
            "fault rates per request",
            ", ".join(f"{k} {v:g}" for k, v in faults.items() if k != "max_latency")
            + f" (latency up to {faults['max_latency']:g} s)",
        ),
        (
            "workers SIGKILLed",
            f"{r['worker_kills']} ({r['late_restarts']} restarted only after LEASE_TIMEOUT)",
        ),
        ("unexpected worker exits", str(len(r.get("crashes", [])))),
        (
            "recoveries",
            f"{r['recovered_at_restart']} at restart, {r['released_by_lease']} by lease, "
            f"{r['released_at_shutdown']} released at shutdown",
        ),
        ("agents stopped by TASK_TIMEOUT / STALL_TIMEOUT", f"{r['timeouts']} / {r['stalls']}"),
        ("duplicates (two runs of a task at once)", str(len(r["duplicates"]))),
        ("lost (stuck, unexplained, review without success)", str(r["lost"])),
        ("agent processes left running", str(len(r["leftover_agents"]))),
        ("worker processes left running", str(len(r["workers_alive"]))),
        ("worker exit codes at the end", str(r["exit_codes"])),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    verdict = "passed" if passed(result) else "**FAILED** (see the findings below)"
    settings = (
        f"TASK_TIMEOUT={c['task_timeout']:g}, STALL_TIMEOUT={c['stall_timeout']:g}, "
        f"LEASE_TIMEOUT={c['lease_timeout']:g}, MAX_ATTEMPTS={c['max_attempts']}, "
        f"DRAIN_TIMEOUT={c['drain_timeout']:g}, KILL_GRACE={c['kill_grace']:g}"
    )
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (
        f"{BEGIN}\nLast `make chaos` ({when}): {verdict}. Settings: {settings}.\n\n"
        f"| | |\n|---|---|\n{table}\n{END}"
    )


def write_chaos_section(result: dict[str, Any]) -> None:
    section = chaos_section(result)
    text = DOC.read_text() if DOC.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + section + tail)
