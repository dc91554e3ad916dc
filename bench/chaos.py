"""The chaos run: faults on the wire, misbehaving agents, workers SIGKILLed and restarted.

    python -m bench.chaos [--seed 1] [--tasks 80] [--workers 3] [--concurrency 3] ...

Setup: the local board in this process; ``FaultProxy`` in front of it (every worker talks
to the proxy only); worker processes (``taskinfa-worker run``) whose agent is
``bench/chaos_agent.py``. While tasks remain, a killer SIGKILLs a random worker process
every few seconds and restarts it later with the same BOT_NAME (so the restart's recovery
runs); some restarts come only after LEASE_TIMEOUT, so the other workers' leases release
the dead one's tasks first. When every task is in review or blocked (or the time is up),
the killing stops, the workers get SIGTERM (drain; DRAIN_TIMEOUT small) and must exit.

Checks (``check``), from the board, the agents' ledger and the process table:
- every task is in review, blocked, or todo with a comment that says why; none is stuck
  in progress; a task in review had a run that succeeded;
- no task ever had two agent runs at the same time (start/stop times from the ledger; a run
  without a stop lasted until its pid was last seen alive);
- no agent pid from the ledger and no worker process is still alive at the end.
The numbers go to stdout and, from ``make chaos``, into docs/reliability.md.
"""

from __future__ import annotations

import argparse
import random
import shlex
import shutil
import signal
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psutil

from bench.chaos_proxy import FaultProxy, Faults
from bench.harness import (
    PYTHON,
    BenchBoard,
    WorkerProcess,
    interrupt_on_sigterm,
    kill_tree_of,
    progress,
    worker_env,
    write_result,
)

CHAOS_AGENT = Path(__file__).with_name("chaos_agent.py")
FINAL = ("review", "blocked")
MONITOR_EVERY = 0.1


@dataclass
class ChaosConfig:
    seed: int = 1
    tasks: int = 150
    workers: int = 3
    concurrency: int = 3
    duration: float = 240.0  # the longest the faulty phase may go on
    faults: Faults = field(default_factory=Faults)
    modes: str = "ok:55,garbage:15,crash:10,crash_signal:5,hang_chatty:7,hang_silent:8"
    # Not too often: a restarted worker sweeps leases only after LEASE_TIMEOUT/2 of uptime.
    kill_every: tuple[float, float] = (5.0, 10.0)
    restart_after: tuple[float, float] = (0.5, 4.0)
    late_restart_share: float = 0.25  # restarts that wait past the lease
    late_restart_after: tuple[float, float] = (30.0, 40.0)
    task_timeout: float = 4.0
    stall_timeout: float = 2.0
    lease_timeout: float = 20.0  # > a heartbeat period (the board asks every 10 s)
    max_attempts: int = 3
    drain_timeout: float = 5.0
    kill_grace: float = 1.0
    exit_timeout: float = 90.0
    settle: float = 120.0  # after the last kill, for the tasks left to reach review/blocked
    # A person sends a running task back to todo this often (the handover fence's case).
    person_moves_every: tuple[float, float] = (6.0, 12.0)
    # A task in progress for a live worker with no agent for this long is a problem (the
    # handover fence and a certain ending's retries may take a while, not this long).
    no_agent_limit: float = 45.0

    def worker_settings(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "agent_command": f"{shlex.quote(PYTHON)} {shlex.quote(str(CHAOS_AGENT))} "
            "--task {task_id}",
            "agent_env_allow": "CHAOS_LEDGER,CHAOS_SEED,CHAOS_MODES",
            "task_timeout": self.task_timeout,
            "stall_timeout": self.stall_timeout,
            "lease_timeout": self.lease_timeout,
            "max_attempts": self.max_attempts,
            # Short, so that failed tasks are retried within the run, spaced all the same.
            "retry_backoff": 1.0,
            "drain_timeout": self.drain_timeout,
            "kill_grace": self.kill_grace,
            "poll_interval": 0.2,
            "max_poll_interval": 1.0,
            "cancel_check_interval": 1.0,
            "progress_interval": 1.0,
            "rate_limit": 6000,
            "request_timeout": 10,
        }


# --- the ledger and the agents' lives -------------------------------------------------------
@dataclass
class Run:
    task: str
    pid: int
    mode: str
    start: float
    owner: str
    stop: float | None = None
    how: str | None = None
    last_seen: float | None = None

    @property
    def end(self) -> float:
        """When the run was over for sure (its stop, else the last time it was seen alive)."""
        if self.stop is not None:
            return self.stop
        return (self.last_seen or self.start) + MONITOR_EVERY


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.runs: dict[int, Run] = {}

    def read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        complete = data.rsplit(b"\n", 1)[0] + b"\n" if b"\n" in data else b""
        self._offset += len(complete)
        for line in complete.decode().splitlines():
            parts = line.split()
            if parts[0] == "start":
                task, pid, mode, moment = parts[1], int(parts[2]), parts[3], float(parts[4])
                self.runs[pid] = Run(task, pid, mode, moment, parts[5] if len(parts) > 5 else "")
            elif parts[0] == "stop" and int(parts[2]) in self.runs:
                run = self.runs[int(parts[2])]
                run.how, run.stop = parts[3], float(parts[4])

    def open_runs(self) -> list[Run]:
        return [run for run in self.runs.values() if run.stop is None]


def agent_alive(run: Run) -> bool:
    """Whether the run's process still exists (its pid, started when the ledger says)."""
    try:
        proc = psutil.Process(run.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(proc.create_time() - run.start) < 2.0
    except psutil.Error:
        return False


# --- the run --------------------------------------------------------------------------------
class Chaos:
    def __init__(self, config: ChaosConfig, tmp: Path) -> None:
        self.config = config
        self.tmp = tmp
        self.rng = random.Random(config.seed)  # which worker, when: not secrets
        self.ledger = Ledger(tmp / "ledger.txt")
        self.workers: dict[str, WorkerProcess] = {}
        self.envs: dict[str, dict[str, str]] = {}
        self.dead: list[WorkerProcess] = []  # killed, kept for the final process check
        self.kills = 0
        self.late_restarts = 0
        self.exit_codes: list[int | None] = []
        self.crashes: list[dict[str, Any]] = []
        self.killing = True
        self.stopping = False
        self.person_moves = 0
        self.agentless: dict[str, float] = {}  # task -> since when no agent runs it
        self.in_progress_with_no_agent: list[dict[str, Any]] = []

    def _start(self, name: str) -> None:
        self.workers[name] = WorkerProcess(self.envs[name], self.tmp / name)

    async def _monitor(self, board: BenchBoard) -> None:
        while True:
            self.ledger.read()
            now = time.time()
            running = set()
            for run in self.ledger.open_runs():
                if agent_alive(run):
                    run.last_seen = now
                    running.add(run.task)
            self._watch_agentless(board, running, now)
            await anyio.sleep(MONITOR_EVERY)

    def _watch_agentless(self, board: BenchBoard, running: set[str], now: float) -> None:
        """Tasks in progress for a live worker while no agent of theirs runs."""
        in_progress = board.store.list_tasks(status="in_progress", limit=100)[0]
        seen = set()
        for task in in_progress:
            owner = (task["assigned_to"] or "").rpartition("-")[0]
            worker = self.workers.get(owner)
            if task["id"] in running or worker is None or not worker.alive():
                continue
            seen.add(task["id"])
            since = self.agentless.setdefault(task["id"], now)
            if now - since > self.config.no_agent_limit:
                self.in_progress_with_no_agent.append(
                    {"task": task["id"], "worker": owner, "seconds": now - since}
                )
                self.agentless[task["id"]] = now  # report again only after another limit
        for task_id in list(self.agentless):
            if task_id not in seen:
                del self.agentless[task_id]

    async def _person(self, board: BenchBoard) -> None:
        """A person sends a running task back to todo now and then."""
        low, high = self.config.person_moves_every
        while self.killing:
            await anyio.sleep(self.rng.uniform(low, high))
            running = board.store.list_tasks(status="in_progress", limit=100)[0]
            if not self.killing or not running:
                continue
            task = self.rng.choice(running)
            board.store.update_task(task["id"], {"status": "todo", "assigned_to": None})
            self.person_moves += 1
            progress(f"chaos: a person moves {task['id']} back to todo")

    def _ready(self, board: BenchBoard, name: str) -> bool:
        """Running, and past start-up: it has sent a heartbeat since it was started (a
        SIGTERM before its signal handlers exist would simply kill it)."""
        worker = self.workers[name]
        return worker.alive() and any(
            hit.who == name and hit.start > worker.started for hit in reversed(board.hits)
        )

    async def _supervise(self) -> None:
        """A worker that exits on its own is a crash (a bug): note it, restart it as a
        supervisor (compose, Kubernetes) would, and carry on."""
        while not self.stopping:
            for name, worker in list(self.workers.items()):
                if worker.alive() or worker in self.dead or self.stopping:
                    continue
                lines = worker.log.read_text(errors="replace").splitlines()
                self.crashes.append(
                    {"worker": name, "exit_code": worker.proc.returncode, "log_tail": lines[-30:]}
                )
                progress(f"chaos: {name} exited by itself ({worker.proc.returncode}); restarting")
                self.dead.append(worker)
                self._start(name)
            await anyio.sleep(0.2)

    async def _restart_later(self, name: str, delay: float) -> None:
        await anyio.sleep(delay)
        self._start(name)

    async def _killer(self, group: anyio.abc.TaskGroup) -> None:
        low, high = self.config.kill_every
        while self.killing:
            await anyio.sleep(self.rng.uniform(low, high))
            alive = [name for name, w in self.workers.items() if w.alive()]
            if not self.killing or not alive:
                continue
            name = self.rng.choice(sorted(alive))
            worker = self.workers[name]
            worker.kill_worker_only()
            self.dead.append(worker)
            self.kills += 1
            if self.rng.random() < self.config.late_restart_share:
                self.late_restarts += 1
                delay = self.rng.uniform(*self.config.late_restart_after)
            else:
                delay = self.rng.uniform(*self.config.restart_after)
            progress(f"chaos: SIGKILL {name} (pid {worker.pid}); restart in {delay:.1f} s")
            group.start_soon(self._restart_later, name, delay)

    async def run(self) -> dict[str, Any]:
        c = self.config
        board = await BenchBoard.start(self.tmp / "board")
        proxy = FaultProxy(board.url, c.faults, c.seed)
        await proxy.start()
        task_ids = board.add_tasks(c.tasks, title="chaos")
        began = time.time()
        try:
            for i in range(c.workers):
                name = f"chaos{i}"
                env = worker_env(board, self.tmp / name, name, **c.worker_settings())
                env["TASKINFA_API_URL"] = proxy.url
                env.update(
                    CHAOS_LEDGER=str(self.ledger.path),
                    CHAOS_SEED=str(c.seed),
                    CHAOS_MODES=c.modes,
                )
                self.envs[name] = env
                self._start(name)
            async with anyio.create_task_group() as group:
                group.start_soon(self._monitor, board)
                group.start_soon(self._person, board)
                group.start_soon(self._supervise)
                group.start_soon(self._killer, group)
                deadline = began + c.duration
                last = 0.0
                while time.time() < deadline:
                    counts = board.statuses()
                    if sum(counts[s] for s in FINAL) == c.tasks:
                        break
                    if time.time() - last > 10:
                        progress(f"chaos: {dict(counts)} after {time.time() - began:.0f} s")
                        last = time.time()
                    await anyio.sleep(0.2)
                faulty_phase = time.time() - began
                self.killing = False
                # Every killed worker comes back before the end, so its recovery runs; then
                # the faults stay on while the last tasks settle.
                progress("chaos: no more kills; waiting for restarts and the last tasks")
                await _wait(lambda: all(self._ready(board, n) for n in self.envs), 90)
                await _wait(lambda: sum(board.statuses()[s] for s in FINAL) == c.tasks, c.settle)
                progress("chaos: stopping the workers (SIGTERM, drain)")
                self.stopping = True
                for worker in self.workers.values():
                    worker.signal(signal.SIGTERM)
                for worker in self.workers.values():
                    try:
                        self.exit_codes.append(await worker.wait(c.exit_timeout))
                    except TimeoutError:
                        self.exit_codes.append(None)
                # Agents may take KILL_GRACE to go; then one last look at the ledger.
                await anyio.sleep(c.kill_grace + 0.5)
                group.cancel_scope.cancel()
            self.ledger.read()
            result = self.check(board, proxy, task_ids)
            result["seconds"] = time.time() - began
            result["faulty_phase_seconds"] = faulty_phase
            result["config"] = _config_dict(c)
            return result
        finally:
            self._cleanup()
            await proxy.aclose()
            await board.aclose()

    def _cleanup(self) -> None:
        """Whatever is still alive now has already been counted as a leftover."""
        for worker in [*self.workers.values(), *self.dead]:
            if worker.alive():
                worker.kill()
        for run in self.ledger.runs.values():
            if agent_alive(run):
                kill_tree_of(psutil.Process(run.pid))

    # --- the checks ---------------------------------------------------------------------------
    def check(self, board: BenchBoard, proxy: FaultProxy, task_ids: list[str]) -> dict[str, Any]:
        store = board.store
        tasks = {tid: store.get_task(tid) for tid in task_ids}
        comments = {tid: store.list_comments(tid, limit=200)[0] for tid in task_ids}
        runs_by_task: dict[str, list[Run]] = {}
        for run in self.ledger.runs.values():
            runs_by_task.setdefault(run.task, []).append(run)

        duplicates = []
        for task_id, runs in runs_by_task.items():
            runs.sort(key=lambda r: r.start)
            for i, first in enumerate(runs):
                for second in runs[i + 1 :]:
                    if second.start < first.end:
                        duplicates.append(
                            {
                                "task": task_id,
                                "first": asdict(first),
                                "second": asdict(second),
                                "overlap_seconds": first.end - second.start,
                            }
                        )

        problems: dict[str, list[Any]] = {
            "stuck_in_progress": [],
            "todo_without_explanation": [],
            "review_without_success": [],
            "blocked_early": [],
            "no_summary": [],
            "error_count_without_its_note": [],
            "in_progress_with_no_agent": self.in_progress_with_no_agent,
        }
        never_claimed = 0
        for task_id, task in tasks.items():
            status = task["status"]
            texts = [c["content"] for c in comments[task_id]]
            if status == "in_progress":
                problems["stuck_in_progress"].append(task_id)
            elif status == "todo":
                if task_id not in runs_by_task and not texts:
                    never_claimed += 1
                elif not any(t.startswith(("Released:", "Failed:")) for t in texts):
                    problems["todo_without_explanation"].append(
                        {"task": task_id, "error_count": task["error_count"], "comments": texts}
                    )
            elif status == "review":
                ok = [r for r in runs_by_task.get(task_id, []) if r.how == "ok"]
                if not ok:
                    problems["review_without_success"].append(task_id)
                if not any(c["comment_type"] == "summary" for c in comments[task_id]):
                    problems["no_summary"].append(task_id)
            errors = sum(c["comment_type"] == "error" for c in comments[task_id])
            if errors < task["error_count"]:
                problems["error_count_without_its_note"].append(
                    {"task": task_id, "error_count": task["error_count"], "error_notes": errors}
                )

            elif status == "blocked" and task["error_count"] < self.config.max_attempts:
                problems["blocked_early"].append(task_id)

        leftovers = [asdict(run) for run in self.ledger.runs.values() if agent_alive(run)]
        workers_alive = [w.pid for w in [*self.workers.values(), *self.dead] if w.alive()]
        all_comments = [c["content"] for cs in comments.values() for c in cs]
        statuses = Counter(task["status"] for task in tasks.values())
        modes = Counter(run.mode for run in self.ledger.runs.values())
        endings = Counter(run.how or "no stop line" for run in self.ledger.runs.values())
        return {
            "tasks": len(tasks),
            "statuses": dict(statuses),
            "never_claimed": never_claimed,
            "agent_runs": len(self.ledger.runs),
            "agent_modes": dict(modes),
            "agent_endings": dict(endings),
            "faults": dict(proxy.counts),
            "requests_to_board": len(board.hits),
            "worker_kills": self.kills,
            "person_moves": self.person_moves,
            "late_restarts": self.late_restarts,
            "recovered_at_restart": sum("stopped unexpectedly" in t for t in all_comments),
            "released_by_lease": sum("sent no heartbeat" in t for t in all_comments),
            "released_at_shutdown": sum(t.startswith("Released:") for t in all_comments),
            "timeouts": sum("TASK_TIMEOUT" in t for t in all_comments),
            "stalls": sum("STALL_TIMEOUT" in t for t in all_comments),
            "duplicates": duplicates,
            "lost": sum(len(v) for v in problems.values()),
            "problems": problems,
            "leftover_agents": leftovers,
            "workers_alive": workers_alive,
            "exit_codes": self.exit_codes,
            "crashes": self.crashes,
        }


async def _wait(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await anyio.sleep(0.1)


def _config_dict(config: ChaosConfig) -> dict[str, Any]:
    data = asdict(config)
    data["faults"] = asdict(config.faults)
    return data


def passed(result: dict[str, Any]) -> bool:
    return (
        not result["duplicates"]
        and result["lost"] == 0
        and not result["leftover_agents"]
        and not result["workers_alive"]
        and not result["crashes"]
        and all(code == 0 for code in result["exit_codes"])
    )


def summary_lines(result: dict[str, Any]) -> list[str]:
    r = result
    return [
        f"tasks: {r['tasks']}, final statuses {r['statuses']} "
        f"(never claimed: {r['never_claimed']})",
        f"agent runs: {r['agent_runs']}, modes {r['agent_modes']}",
        f"agent endings: {r['agent_endings']}",
        f"faults injected: {r['faults']} ({r['requests_to_board']} requests reached the board)",
        f"workers SIGKILLed: {r['worker_kills']} ({r['late_restarts']} restarted after the lease)"
        f", running tasks moved back to todo by a person: {r['person_moves']}",
        f"recoveries: {r['recovered_at_restart']} at restart, {r['released_by_lease']} by lease, "
        f"{r['released_at_shutdown']} released at shutdown; {r['timeouts']} task timeouts, "
        f"{r['stalls']} stalls",
        f"duplicates: {len(r['duplicates'])}, lost: {r['lost']}, leftover agents: "
        f"{len(r['leftover_agents'])}, workers alive: {len(r['workers_alive'])}, "
        f"exit codes: {r['exit_codes']}, unexpected worker exits: {len(r['crashes'])}",
    ]


async def run_chaos(config: ChaosConfig, tmp: Path) -> dict[str, Any]:
    return await Chaos(config, tmp).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=150)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--duration", type=float, default=240.0)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/reliability.md")
    args = parser.parse_args()
    interrupt_on_sigterm()
    config = ChaosConfig(
        seed=args.seed,
        tasks=args.tasks,
        workers=args.workers,
        concurrency=args.concurrency,
        duration=args.duration,
    )
    tmp = Path(tempfile.mkdtemp(prefix="taskinfa-chaos-"))
    try:
        result = anyio.run(run_chaos, config, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    path = write_result(f"chaos-seed{args.seed}", result)
    for line in summary_lines(result):
        print(line)
    print(f"{'PASSED' if passed(result) else 'FAILED'} (details: {path})")
    if args.keep:
        print(f"scratch folder kept: {tmp}")
    if not args.no_doc:
        from bench.reliability import write_chaos_section

        write_chaos_section(result)
    raise SystemExit(0 if passed(result) else 1)


if __name__ == "__main__":
    main()
