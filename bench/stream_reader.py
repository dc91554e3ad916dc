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
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCENARIOS = ("split", "json", "stream", "pipe")
CHUNK = 256 * 1024


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    import anyio

    from taskinfa_worker.agent.job import Activity
    from taskinfa_worker.agent.process import Limits, ProcessSpec, Supervisor
    from taskinfa_worker.agent.stream import ClaudeStream, LineSplitter
    from taskinfa_worker.agent.transcript import Transcript
    from taskinfa_worker.redact import Redactor

    redactor = Redactor(["sk-ant-bench-secret-value", "tk_bench_secret_value"])
    activities: list[Activity] = []
    baseline = peak_rss_mb()
    started = time.perf_counter()
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
        "lines": lines,
        "baseline_mb": baseline,
        "peak_mb": peak_rss_mb(),
        "activities": len(activities),
    }


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
        path = Path(folder) / "input.jsonl"
        size = make_transcript(path, args.size_mb, args.line_mb)
        size_mb = size / 1024 / 1024
        print(f"input: {size_mb:.0f} MB, lines of {args.line_mb} MB ({path})")
        print()
        header = f"{'scenario':<8} {'lines':>7} {'seconds':>8} {'MB/s':>8} {'peak RSS MB':>12}"
        header += f" {'above base MB':>14}"
        print(header)
        print("-" * len(header))
        for name in SCENARIOS:
            done = subprocess.run(
                [sys.executable, __file__, "--scenario", name, "--file", str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print(f"{name:<8} failed:\n{done.stderr}")
                return 1
            r = json.loads(done.stdout.strip().splitlines()[-1])
            rate = size_mb / r["seconds"]
            above = r["peak_mb"] - r["baseline_mb"]
            print(
                f"{name:<8} {r['lines']:>7} {r['seconds']:>8.2f} {rate:>8.1f} "
                f"{r['peak_mb']:>12.0f} {above:>14.0f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
