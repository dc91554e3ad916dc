"""Readers for the shipped deployment files, shared by the tests/test_deploy_*.py tests."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
KUBERNETES = ROOT / "deploy" / "kubernetes"
MAKEFILE = ROOT / "Makefile"


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the instruction, continuation lines joined
    stage: int  # index of the FROM it belongs to (-1 before the first FROM)


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The instructions of a Dockerfile, with ``\\`` continuations joined and comments gone."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        text = (pending + line).strip()
        pending = ""
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def exec_form(args: str) -> list[str] | None:
    """The JSON array of an exec-form ENTRYPOINT/CMD/HEALTHCHECK CMD, or None (shell form)."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def arg_defaults(instructions: list[Instruction], stage: int) -> dict[str, str]:
    """``ARG NAME=default`` values visible in ``stage`` (global ARGs and the stage's own)."""
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword != "ARG" or instruction.stage not in (-1, stage):
            continue
        name, _, default = instruction.args.partition("=")
        values[name.strip()] = default.strip().strip('"')
    return values


def substitute(text: str, values: dict[str, str]) -> str:
    """Replace ``${NAME}`` and ``$NAME`` the way the Dockerfile parser does for ARGs."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lookup, text)


def dockerignore_includes(relative: str, path: Path = DOCKERIGNORE) -> bool:
    """Whether ``relative`` (a path in the build context) survives .dockerignore.

    Follows Docker's rules for the patterns this repository uses: patterns are matched in
    order against the path and each of its parent directories, ``!`` re-includes, the last
    matching pattern wins, and ``**/`` matches any number of directories.
    """
    patterns = [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    parts = Path(relative).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        for candidate in candidates:
            if _match(body, candidate):
                included = negate
                break
    return included


def _match(pattern: str, candidate: str) -> bool:
    if pattern.startswith("**/"):
        tail = pattern[3:]
        pieces = candidate.split("/")
        return any(fnmatch.fnmatchcase("/".join(pieces[i:]), tail) for i in range(len(pieces)))
    if "/" not in pattern and "/" in candidate:
        return False  # a plain pattern only matches at the root of the context
    return fnmatch.fnmatchcase(candidate, pattern)


def makefile_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*:?=\s*(\S+)\s*$", MAKEFILE.read_text(), re.MULTILINE)
    assert match, f"{name} not found in the Makefile"
    return match.group(1)


def duration_seconds(text: str) -> float:
    """A Compose duration (``1h2m3s``, ``3660s``, ``90s``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    assert parts, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)
