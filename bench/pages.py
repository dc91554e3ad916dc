"""Open kanban pages vs the pool: does watching the board slow the pool's own requests?

    python -m bench.pages            # about 2.5 minutes: alone, 20 pages, alone, 20 pages

Each run: a local board without a rate limit, 500 tasks, one worker process with 32 slots
whose agent sleeps 2 s (so all 32 stay busy), RATE_LIMIT=100000 so the client's budget
never waits, for 30 s. The second run adds 20 open pages: a separate process that behaves
as the page's script does (``GET /api/changes?since=V&wait=25``, and after each change a
pause of 1 s and up to 0.5 s more at random before asking again), so every page takes every
answer it can.

The pool's request latency is the worker's own: it logs each request's time at DEBUG
("board GET /tasks/next -> 200 in 3 ms"), and those lines are read back (1 ms resolution).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio

from bench.harness import (
    PYTHON,
    ROOT,
    BenchBoard,
    WorkerProcess,
    progress,
    summary,
    wait_for,
    worker_env,
    write_result,
)

SLOTS = 32
TASKS = 500
AGENT = "sleep 2"
DURATION = 30.0
PAGES = 20
ROUNDS = 2
PAGE_PAUSE = 1.0  # board.js: PAUSE_AFTER_CHANGE_MS
PAGE_SPREAD = 0.5  # board.js: SPREAD_MS, up to this much more at random
REQUEST_LINE = re.compile(r"board (\w+) (\S+) -> (\d+) in (\d+) ms")


async def _one_page(
    http: aiohttp.ClientSession, url: str, until: float, tally: dict[str, int]
) -> None:
    version = -1
    while (left := until - time.monotonic()) > 0:
        # A page waits up to 25 s; near the end of the run, no longer than the run lasts.
        params = {"since": str(version), "wait": str(max(1, min(25, int(left))))}
        async with http.get(f"{url}/changes", params=params) as r:
            tally["requests"] += 1
            if r.status == 200:
                body = await r.read()
                tally["views"] += 1
                # As sent (gzipped): aiohttp has already inflated the body it hands over.
                tally["bytes"] += int(r.headers.get("Content-Length", len(body)))
                version = json.loads(body)["version"]
                await asyncio.sleep(PAGE_PAUSE + random.uniform(0, PAGE_SPREAD))


async def _pages(url: str, key: str, count: int, seconds: float) -> dict[str, int]:
    tally = {"requests": 0, "views": 0, "bytes": 0}
    until = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
        await asyncio.gather(*(_one_page(http, url, until, tally) for _ in range(count)))
    return tally


def pool_latencies(log: Path) -> list[float]:
    """Seconds of every request the worker logged."""
    found = REQUEST_LINE.findall(log.read_text(errors="replace"))
    return [int(ms) / 1000 for _method, _route, _status, ms in found]


async def one_run(tmp: Path, pages: int) -> dict[str, Any]:
    label = f"pages-{pages}"
    board = await BenchBoard.start(tmp / label / "board")
    board.add_tasks(TASKS, title="busy")
    root = tmp / label / "w"
    env = worker_env(
        board,
        root,
        label,
        concurrency=SLOTS,
        agent_command=AGENT,
        rate_limit=100_000,
        log_level="DEBUG",
        log_format="text",
        poll_interval=0.5,
        max_poll_interval=2,
    )
    worker = WorkerProcess(env, root)
    clients: subprocess.Popen[str] | None = None
    try:
        await wait_for(lambda: board.count("in_progress") >= SLOTS, 120, "32 busy slots")
        if pages:
            clients = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "bench.pages",
                    "--clients",
                    board.url,
                    board.api_key,
                    str(pages),
                    str(DURATION),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
        await anyio.sleep(DURATION)
        done = board.count("review")
        tally: dict[str, int] = {}
        if clients is not None:
            # Before the board stops: the pages end their last wait on their own.
            out, _ = await anyio.to_thread.run_sync(lambda: clients.communicate(timeout=120))
            tally = json.loads(out)
    finally:
        worker.kill()
        if clients is not None and clients.poll() is None:
            clients.kill()
            clients.wait()
        await board.aclose()
    latencies = pool_latencies(worker.log)
    feed = [h for h in board.hits if h.route == "/api/changes"]
    return {
        "pages": pages,
        "reviewed": done,
        "pool_requests": summary(latencies),
        "page_requests": tally,
        "feed_wall_in_board": summary([h.wall for h in feed]) if feed else {"n": 0},
    }


async def run(tmp: Path, rounds: int = ROUNDS) -> dict[str, Any]:
    """Runs alternate (alone, with pages, alone, ...) so a shared machine's drift hits both."""
    runs = []
    for round_ in range(rounds):
        for pages in (0, PAGES):
            runs.append({"round": round_ + 1, **await one_run(tmp / f"r{round_}", pages)})
            progress(f"pages: round {round_ + 1} with {pages} pages done")
    return {"slots": SLOTS, "seconds": DURATION, "runs": runs}


def _print(result: dict[str, Any]) -> None:
    print(f"{SLOTS} busy slots, {DURATION:.0f} s each run; pool request latency (ms):")
    for part in result["runs"]:
        lat = part["pool_requests"]
        print(
            f"  round {part['round']} pages={part['pages']:<3} requests={lat['n']:<6} "
            f"p50={lat['p50'] * 1000:.0f} p90={lat['p90'] * 1000:.0f} "
            f"p99={lat['p99'] * 1000:.0f} max={lat['max'] * 1000:.0f} "
            f"mean={lat['mean'] * 1000:.2f}  tasks reviewed={part['reviewed']}  "
            f"page views={part['page_requests'].get('views', 0)}"
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", nargs=4, metavar=("URL", "KEY", "PAGES", "SECONDS"))
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="Pairs of runs.")
    args = parser.parse_args()
    if args.clients:
        url, key, count, seconds = args.clients
        print(json.dumps(asyncio.run(_pages(url, key, int(count), float(seconds)))))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="taskinfa-bench-pages-"))
    try:
        result = anyio.run(run, tmp, args.rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_result("pages", result)
    _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
