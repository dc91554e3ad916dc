#!/usr/bin/env python3
"""The chaos run's fake agent (through the ``command`` agent): it misbehaves at set rates.

    chaos_agent.py --task {task_id}

Environment: ``CHAOS_LEDGER`` (file), ``CHAOS_SEED``, ``CHAOS_MODES`` (``mode:weight,...``).
The mode of a run is drawn from an RNG seeded by (seed, task, how many runs of the task
the ledger already has), so a rerun with the same seed misbehaves the same way per attempt:

    ok            prints a few progress lines over 0.2–1.2 s, writes a file, exits 0
    garbage       NUL, escapes, invalid UTF-8 and a 300 kB line, then like ok
    crash         prints, then exits 1 with a message on stderr
    crash_signal  prints, then SIGKILLs itself
    hang_chatty   prints a line every 0.3 s forever (TASK_TIMEOUT must stop it)
    hang_silent   prints once, then nothing forever (STALL_TIMEOUT must stop it)

The ledger gets one line when a run starts and one when it stops, however it stops:
``start <task> <pid> <mode> <epoch> <owner>`` and ``stop <task> <pid> <how> <epoch>``, each a
single O_APPEND write, so worker processes can share it. Only SIGKILL leaves a start without
a stop; the chaos check then uses the pid's liveness instead. Once its worker is gone its
stdout breaks, and the next print ends it (``stop ... broken-pipe``).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from pathlib import Path


def ledger(line: str) -> None:
    path = os.environ["CHAOS_LEDGER"]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def earlier_runs(task: str) -> int:
    try:
        text = Path(os.environ["CHAOS_LEDGER"]).read_text()
    except FileNotFoundError:
        return 0
    return sum(1 for line in text.splitlines() if line.startswith(f"start {task} "))


def choose_mode(task: str) -> str:
    weights = []
    for part in os.environ.get("CHAOS_MODES", "ok:1").split(","):
        name, _, weight = part.partition(":")
        weights.append((name.strip(), float(weight or 1)))
    rng = random.Random(f"{os.environ.get('CHAOS_SEED', '0')}:{task}:{earlier_runs(task)}")
    return rng.choices([n for n, _ in weights], [w for _, w in weights])[0]


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", required=True)
    task = parser.parse_args().task
    pid = os.getpid()
    mode = choose_mode(task)
    owner = os.environ.get("TASKINFA_AGENT_OWNER", "?").replace(" ", "|")

    def stop(how: str) -> None:
        ledger(f"stop {task} {pid} {how} {time.time():.6f}")

    def on_term(signum: int, _frame: object) -> None:
        stop(f"signal-{signum}")
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    ledger(f"start {task} {pid} {mode} {time.time():.6f} {owner}")
    rng = random.Random()  # timing only
    try:
        say(f"chaos agent on {task}: {mode}")
        if mode == "hang_silent":
            while True:
                time.sleep(3600)
        if mode == "hang_chatty":
            while True:
                say("still thinking…")
                time.sleep(0.3)
        if mode == "garbage":
            junk = b"\x00\x01\x1b[31m\xff\xfe\xc3\x28 garbage\r\n"
            sys.stdout.buffer.write(junk + b"y" * 300_000)
            sys.stdout.buffer.write(b"\n\xed\xa0\x80 surrogate \xf0\x28\x8c\xbc\n")
            sys.stdout.flush()
        steps = rng.randint(2, 6)
        for step in range(steps):
            say(f"step {step + 1} of {steps}")
            time.sleep(rng.uniform(0.1, 0.2))
        if mode == "crash":
            print("chaos agent: crashing on purpose", file=sys.stderr, flush=True)
            stop("crash")
            return 1
        if mode == "crash_signal":
            stop("crash-signal")
            os.kill(pid, signal.SIGKILL)
        Path(os.environ.get("TASKINFA_WORKSPACE", "."), "chaos.txt").write_text(f"{task}\n")
        say("done")
    except BrokenPipeError:
        # The worker that read our output is gone (SIGKILL); nothing can read us now.
        stop("broken-pipe")
        os._exit(141)
    stop("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
