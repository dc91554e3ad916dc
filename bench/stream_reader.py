"""Benchmark: reading Claude Code's stream-json output — throughput and peak memory.

    python bench/stream_reader.py [--size-mb 200] [--line-mb 10]

Writes a transcript of ``--size-mb`` MB made of ``--line-mb`` MB ``tool_result`` lines (what
a Read of a large file produces) between ordinary small events, then reads it four ways,
each in a fresh process so that its peak RSS is its own:

    split   LineSplitter only (cutting lines, no parsing)
    json    LineSplitter + json.loads of every line
    stream  ClaudeStream: parse, redact, write the transcript (to /dev/null), activities
    pipe    the whole supervisor: `cat` as the agent process, real pipes, ClaudeStream,
            the transcript written to a file

and prints a table: MB/s, and peak RSS above the process's baseline. Memory should stay
near a few line sizes whatever the total size: lines are not kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCENARIOS = ("split", "json", "stream", "pipe")
CHUNK = 256 * 1024


def peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``).

    Not ``ru_maxrss``: Linux carries that over ``exec`` from the process that forked, so a
    scenario started from a big parent (``make bench``) would report the parent's size.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def make_transcript(path: Path, size_mb: int, line_mb: int) -> int:
    """Write the input file (streaming, little memory); returns its size in bytes."""
    source_line = 'def handler(request):  # a line of source code, "quoted" and tabbed\t\n'
    content = source_line * (line_mb * 1024 * 1024 // len(source_line))
    big = json.dumps(
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": content}],
            },
        }
    ).encode()
    small = [
        json.dumps(
            {
                "type": "assistant",
                "message": {
                    "content": [
                        {
                            "type": "tool_use",
                            "name": "Read",
                            "input": {"file_path": f"/work/src/module_{i}.py"},
                        }
                    ]
                },
            }
        ).encode()
        for i in range(50)
    ]
    target = size_mb * 1024 * 1024
    written = 0
    with path.open("wb") as out:
        out.write(b'{"type":"system","subtype":"init","session_id":"bench"}\n')
        while written < target:
            for line in small:
                out.write(line + b"\n")
            out.write(big + b"\n")
            written += len(big) + sum(len(s) + 1 for s in small) + 1
        result = {"type": "result", "subtype": "success", "is_error": False, "result": "ok"}
        out.write(json.dumps(result).encode() + b"\n")
    return path.stat().st_size


def run_scenario(name: str, path: Path, work: Path) -> dict[str, float]:
    """Runs in the child process."""
    from taskinfa_worker.agent.job import Activity
    from taskinfa_worker.agent.process import Limits, ProcessSpec, Supervisor
    from taskinfa_worker.agent.stream import ClaudeStream, LineSplitter
    from taskinfa_worker.agent.transcript import Transcript
    from taskinfa_worker.redact import Redactor

    redactor = Redactor(["sk-ant-bench-secret-value", "tk_bench_secret_value"])
    activities: list[Activity] = []
    baseline = peak_rss_mb()
    started = time.perf_counter()
    cpu_started = time.process_time()
    lines = 0

    if name in ("split", "json", "stream"):
        splitter = LineSplitter()
        transcript = Transcript(Path(os.devnull), redactor).__enter__()
        stream = ClaudeStream(transcript, workspace=Path("/work"), on_activity=activities.append)
        with path.open("rb") as source:
            while chunk := source.read(CHUNK):
                for line in splitter.feed(chunk):
                    lines += 1
                    if name == "json":
                        json.loads(line)
                    elif name == "stream":
                        stream.feed_line(line)
        transcript.close()
        if name == "stream":
            assert stream.result is not None
            assert not stream.result.is_error
    else:
        out = work / "transcript.jsonl"
        out.unlink(missing_ok=True)

        async def pipe() -> int:
            with Transcript(out, redactor) as transcript:
                stream = ClaudeStream(
                    transcript, workspace=Path("/work"), on_activity=activities.append
                )
                spec = ProcessSpec(
                    argv=["cat", str(path)],
                    env={"PATH": os.environ.get("PATH", os.defpath), "TASKINFA_AGENT_RUN": "b"},
                    cwd=work,
                    marker="TASKINFA_AGENT_RUN=b",
                )
                limits = Limits(timeout=600, stall_timeout=60, kill_grace=5)
                supervisor = Supervisor(
                    spec, limits, on_stdout=stream.feed_line, on_stderr=lambda _line: None
                )
                run = await supervisor.run()
                assert run.exit_code == 0
                assert stream.result is not None
                assert not stream.result.is_error
                return stream.lines

        lines = anyio.run(pipe)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu_started,
        "lines": lines,
        "baseline_mb": baseline,
        "peak_mb": peak_rss_mb(),
        "activities": len(activities),
    }


def measure(folder: Path, size_mb: int, line_mb: int) -> dict[str, Any]:
    """Every scenario in a fresh process, over one input file written into ``folder``."""
    path = folder / "input.jsonl"
    size = make_transcript(path, size_mb, line_mb)
    longest = _longest_line(path)
    rows: dict[str, dict[str, float]] = {}
    for name in SCENARIOS:
        done = subprocess.run(
            [sys.executable, __file__, "--scenario", name, "--file", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"stream reader scenario {name} failed:\n{done.stderr}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        above = (r["peak_mb"] - r["baseline_mb"]) * 1024 * 1024
        rows[name] = {
            "mb_per_s": size / 1024 / 1024 / r["seconds"],
            "cpu_seconds": r["cpu_seconds"],
            "peak_above_base_mb": above / 1024 / 1024,
            "peak_per_line": above / longest,
        }
    path.unlink()
    return {"size_mb": size / 1024 / 1024, "longest_line_mb": longest / 1024 / 1024, **rows}


def _longest_line(path: Path) -> int:
    with path.open("rb") as source:
        return max(len(line.rstrip(b"\n")) for line in source)


def table(result: dict[str, Any]) -> str:
    header = f"{'scenario':<8} {'MB/s':>8} {'CPU s':>7} {'above base MB':>14} {'x line':>7}"
    lines = [header, "-" * len(header)]
    for name in SCENARIOS:
        r = result[name]
        lines.append(
            f"{name:<8} {r['mb_per_s']:>8.1f} {r['cpu_seconds']:>7.2f} "
            f"{r['peak_above_base_mb']:>14.0f} {r['peak_per_line']:>7.1f}"
        )
    return "\n".join(lines)


async def run(folder: Path) -> dict[str, Any]:
    """The ``make bench`` part: the default 200 MB / 10 MB-line input."""
    folder.mkdir(parents=True, exist_ok=True)
    return await anyio.to_thread.run_sync(measure, folder, 200, 10)


def main() -> int:
    parser = argparse.ArgumentParser(description="stream-json reader benchmark")
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--line-mb", type=int, default=10)
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.scenario:
        work = args.file.parent
        print(json.dumps(run_scenario(args.scenario, args.file, work)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-stream-") as folder:
        result = measure(Path(folder), args.size_mb, args.line_mb)
    print(f"input: {result['size_mb']:.0f} MB, longest line {result['longest_line_mb']:.1f} MB")
    print()
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
