"""Reading stream-json: lines of any length, events of any kind, a redacted transcript."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from taskinfa_worker.agent.job import Activity
from taskinfa_worker.agent.stream import ClaudeStream, LineSplitter, ResultEvent
from taskinfa_worker.agent.transcript import Transcript
from taskinfa_worker.redact import MASK, Redactor


def split(chunks: list[bytes]) -> list[bytes]:
    splitter = LineSplitter()
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    last = splitter.finish()
    return [*lines, last] if last is not None else lines


def test_splitter_handles_lines_across_and_within_chunks() -> None:
    assert split([b"a\nb", b"c\n", b"\n", b"d\ne\nf"]) == [b"a", b"bc", b"", b"d", b"e", b"f"]
    assert split([b"x" * 10, b"y" * 10, b"\n"]) == [b"x" * 10 + b"y" * 10]
    assert split([b"one\n"]) == [b"one"]
    assert split([]) == []


def test_splitter_has_no_line_length_limit() -> None:
    big = b'{"type":"user","x":"' + b"z" * (30 * 1024 * 1024) + b'"}'
    chunks = [big[i : i + 65536] for i in range(0, len(big), 65536)] + [b"\nnext\n"]
    splitter = LineSplitter()
    lines = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
        if not lines:
            assert splitter.pending <= len(big)
    assert lines == [big, b"next"]
    assert splitter.pending == 0


def test_endless_output_without_newlines_is_cut_into_pieces() -> None:
    splitter = LineSplitter(max_line=1000)
    lines = [line for _ in range(30) for line in splitter.feed(b"z" * 100)]
    assert [len(line) for line in lines] == [1000, 1000, 1000]
    assert splitter.pending == 0


def test_result_event_is_parsed_leniently() -> None:
    ok = ResultEvent.parse(
        {
            "subtype": "success",
            "is_error": False,
            "result": "done",
            "num_turns": 4,
            "total_cost_usd": 1,
            "duration_ms": 10.0,
            "session_id": "s",
            "permission_denials": [{}, {}],
        }
    )
    assert ok == ResultEvent(
        is_error=False,
        subtype="success",
        text="done",
        num_turns=4,
        cost_usd=1.0,
        duration_ms=10,
        session_id="s",
        permission_denials=2,
    )
    errors = ResultEvent.parse(
        {"subtype": "error_max_turns", "is_error": True, "errors": ["too many", {"message": "x"}]}
    )
    assert errors.text == "too many\nx"
    # is_error must be stated as false to count as a success.
    assert ResultEvent.parse({"subtype": "success"}).is_error
    odd = ResultEvent.parse({"is_error": False, "num_turns": True, "total_cost_usd": "1"})
    assert (odd.num_turns, odd.cost_usd, odd.text) == (None, None, "")


def feed(stream: ClaudeStream, *events: dict[str, Any] | str) -> None:
    for event in events:
        line = event if isinstance(event, str) else json.dumps(event)
        stream.feed_line(line.encode())


def test_stream_turns_tool_calls_into_activity(tmp_path: Path) -> None:
    activities: list[Activity] = []
    results: list[bool] = []
    workspace = tmp_path / "ws"
    with Transcript(tmp_path / "t.jsonl", Redactor()) as transcript:
        stream = ClaudeStream(
            transcript,
            workspace=workspace,
            on_activity=activities.append,
            on_result=lambda: results.append(True),
        )
        blocks = [
            {"type": "text", "text": "Reading"},
            {"type": "tool_use", "name": "Read", "input": {"file_path": f"{workspace}/a.py"}},
            {"type": "tool_use", "name": "Glob", "input": {"pattern": "*", "path": "/etc"}},
            {"type": "tool_use", "name": "NotebookEdit", "input": {"notebook_path": "n.ipynb"}},
            {"type": "tool_use", "name": "Bash", "input": {"command": "ls"}},
        ]
        feed(
            stream,
            {"type": "system", "subtype": "init", "session_id": "s1", "model": "m"},
            {"type": "assistant", "message": {"content": blocks}},
            {"type": "result", "subtype": "success", "is_error": False, "result": "ok"},
        )
    assert activities == [
        Activity(text="Reading"),
        Activity(tool="Read", files=("a.py",)),
        Activity(tool="Glob", files=("/etc",)),
        Activity(tool="NotebookEdit", files=("n.ipynb",)),
        Activity(tool="Bash"),
    ]
    assert results == [True]
    assert stream.session_id == "s1"
    assert stream.model == "m"
    assert stream.tool_calls == 4
    assert stream.result is not None
    assert stream.result.text == "ok"


def test_api_errors_are_kept_for_the_verdict(tmp_path: Path) -> None:
    with Transcript(tmp_path / "t.jsonl", Redactor()) as transcript:
        stream = ClaudeStream(transcript, workspace=tmp_path)
        feed(
            stream,
            {"type": "system", "subtype": "api_retry", "error_status": 529, "error": "overloaded"},
            {
                "type": "assistant",
                "error": "authentication_failed",
                "is_api_error_message": True,
                "message": {"content": [{"type": "text", "text": "Invalid API key"}]},
            },
        )
    assert list(stream.api_errors) == [
        "API error 529: overloaded",
        "authentication_failed Invalid API key",
    ]


def test_activity_callback_errors_do_not_break_the_stream(tmp_path: Path) -> None:
    def broken(_activity: Activity) -> None:
        raise RuntimeError("bug in the reporter")

    with Transcript(tmp_path / "t.jsonl", Redactor()) as transcript:
        stream = ClaudeStream(transcript, workspace=tmp_path, on_activity=broken)
        feed(
            stream,
            {"type": "assistant", "message": {"content": [{"type": "tool_use", "name": "Read"}]}},
            {"type": "result", "is_error": False, "result": "fine"},
        )
    assert stream.result is not None


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "[1]",
        "null",
        '"text"',
        "{",
        "\x00\x01",
        '{"type": 5}',
        '{"no_type": 1}',
        pytest.param("[" * 100_000 + "]" * 100_000, id="nested-too-deep"),
    ],
)
def test_anything_else_is_tolerated_and_kept(tmp_path: Path, line: str) -> None:
    path = tmp_path / "t.jsonl"
    with Transcript(path, Redactor()) as transcript:
        stream = ClaudeStream(transcript, workspace=tmp_path)
        feed(stream, line)
    assert stream.result is None
    written = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(written) == 1
    if line.startswith('{"'):
        assert written[0] == json.loads(line)  # a JSON object is kept as it came
    else:
        assert written[0] == {"type": "taskinfa_stdout", "text": line}


def test_transcript_is_redacted_and_survives_write_errors(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "bot" / "task" / "attempt.jsonl"
    redactor = Redactor(["my-secret-value"])
    with Transcript(path, redactor) as transcript:
        transcript.raw(b'{"type":"user","content":"my-secret-value and tk_abcdefghijkl"}')
        transcript.note("stderr", text="key sk-ant-api03-abcdefghijkl")
    text = path.read_text()
    assert "my-secret-value" not in text
    assert "tk_abcdefghijkl" not in text
    assert "sk-ant-api03" not in text
    assert text.count(MASK) == 3
    assert all(json.loads(line) for line in text.splitlines())

    # A transcript that cannot be written is not the task's failure.
    blocked = tmp_path / "file"
    blocked.write_text("")
    with Transcript(blocked / "sub" / "t.jsonl", redactor) as transcript:
        transcript.raw(b"{}")
        transcript.note("end")


def test_fast_redaction_equals_the_reference_pattern() -> None:
    # Transcript lines reach megabytes, so redact.py finds candidate positions first; the
    # result must be exactly what the plain pattern substitution gives.
    from taskinfa_worker.redact import _KEY_SHAPES

    pieces = ["sk-ant-", "tk_", "ghp_", "github_pat_", "Bearer ", "bearer ", "://", "@", ":"]
    pieces += ["/", " ", "é", "x", "abcdefgh", "ABCDEFGHIJKLMNOPQRSTUV", "-", "_", ".", "="]
    rng = random.Random(7)
    redactor = Redactor()
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        assert redactor(text) == _KEY_SHAPES.sub(MASK, text), text


def test_byte_redaction_reads_non_ascii_bytes_as_plain_punctuation() -> None:
    # Transcript lines are redacted as bytes. On ASCII that is exactly the text redaction;
    # a non-ASCII byte counts as a non-word, non-space character, which is how the text
    # redaction treats '#'. So the bytes redaction of a text is the text redaction of the
    # same text with every non-ASCII byte turned into '#'.
    pieces = ["sk-ant-", "tk_", "ghp_", "gho_", "github_pat_", "Bearer ", "bearer ", "://"]
    pieces += ["@", ":", "/", " ", "é", "€", "x", "abcdefgh", "ABCDEFGHIJKLMNOPQRSTUV", "-", "_"]
    as_punctuation = bytes(range(128)) + b"#" * 128
    rng = random.Random(11)
    redactor = Redactor(["my-secret-value"])
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        if rng.random() < 0.1:
            text += "my-secret-value"
        model = text.encode().translate(as_punctuation).decode()
        masked = redactor.redact_bytes(text.encode()).translate(as_punctuation)
        assert masked == redactor(model).encode(), text
        assert b"my-secret-value" not in masked


BIG = 1024 * 1024  # well above the size from which tool results are kept unparsed


def tool_result(content: str) -> bytes:
    event = {
        "type": "user",
        "message": {"content": [{"type": "tool_result", "tool_use_id": "t1", "content": content}]},
        "session_id": "s1",
    }
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def read_transcript(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_a_big_tool_result_is_kept_as_it_came_and_redacted(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    content = "x = 'ünïcode'\n" * (BIG // 14) + "key tk_abcdefghijkl and my-secret-value"
    line = tool_result(content)
    with Transcript(path, Redactor(["my-secret-value"])) as transcript:
        stream = ClaudeStream(transcript, workspace=tmp_path)
        stream.feed_line(line)
        stream.feed_line(b'{"type":"result","subtype":"success","is_error":false,"result":"ok"}')
    (kept, result) = read_transcript(path)
    text = kept["message"]["content"][0]["content"]
    assert text.startswith("x = 'ünïcode'\n")
    assert "tk_abcdefghijkl" not in text
    assert "my-secret-value" not in text
    assert text.endswith(f"key {MASK} and {MASK}")
    assert result["type"] == "result"
    assert stream.result is not None
    assert not stream.result.is_error
    assert (stream.lines, stream.unparsed_lines) == (2, 0)


def test_big_lines_that_are_not_whole_tool_results_are_still_parsed(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    cut = tool_result("y" * BIG)[:-2]  # a piece of an over-long line: not JSON
    broken = tool_result("z" * BIG).replace(b"zzz", b"z\xffz", 1)  # invalid UTF-8
    write = json.dumps(
        {
            "type": "assistant",
            "message": {
                "content": [
                    {
                        "type": "tool_use",
                        "name": "Write",
                        "input": {"file_path": str(tmp_path / "big.txt"), "content": "w" * BIG},
                    }
                ]
            },
        }
    ).encode()
    activities: list[Activity] = []
    with Transcript(path, Redactor()) as transcript:
        stream = ClaudeStream(transcript, workspace=tmp_path, on_activity=activities.append)
        for line in (cut, broken, write):
            stream.feed_line(line)
    note, repaired, kept = read_transcript(path)
    assert note["type"] == "taskinfa_stdout"
    assert note["text"] == cut.decode()
    assert "z\ufffdz" in repaired["message"]["content"][0]["content"]  # valid UTF-8 on disk
    assert kept["type"] == "assistant"
    assert activities == [Activity(tool="Write", files=("big.txt",))]
    assert stream.unparsed_lines == 1
