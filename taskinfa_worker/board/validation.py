"""Checks every request body and query string before the store sees it.

Anything a client can send that the board will not store becomes ``Invalid`` (400) with a
message naming the field, never a 500: malformed or non-object JSON, wrong types (``true``
is not an integer, ``1.5`` is not a count), unknown enum values, unknown fields, too long
strings, NUL characters and lone surrogates (SQLite would store the first and choke on the
second). The limits follow the real Taskinfa dashboard where it has them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any, Final

from taskinfa_worker.board.problems import Invalid
from taskinfa_worker.client.models import PRIORITY_RANK

STATUSES: Final = ("backlog", "todo", "in_progress", "review", "done", "blocked")
PRIORITIES: Final = tuple(PRIORITY_RANK)
AUTHOR_TYPES: Final = ("bot", "user")
# The later dashboard also knows human_message and comment; the worker sends the first four.
COMMENT_TYPES: Final = ("progress", "question", "summary", "error", "human_message", "comment")
WORKER_STATUSES: Final = ("idle", "working")

MAX_TITLE: Final = 500
MAX_DESCRIPTION: Final = 5000
MAX_NAME: Final = 100  # bot names, worker names, comment authors
MAX_TASK_LIST_NAME: Final = 200
MAX_TASK_LIST_DESCRIPTION: Final = 1000
MAX_URL: Final = 500
MAX_ID: Final = 200
MAX_NOTES: Final = 50_000  # completion_notes: the fallback channel for progress text
MAX_COMMENT: Final = 50_000
MAX_LABELS: Final = 50
MAX_LABEL: Final = 100
MAX_FILES: Final = 10_000
MAX_PATH: Final = 1000
MAX_COUNT: Final = 1_000_000
MAX_ORDER: Final = 1_000_000_000
_INTEGER: Final = re.compile(r"-?[0-9]{1,18}")


def task_statuses(accept_blocked: bool) -> tuple[str, ...]:
    """Statuses the board accepts; real servers reject ``blocked`` though the docs list it."""
    return STATUSES if accept_blocked else tuple(s for s in STATUSES if s != "blocked")


# --- bodies --------------------------------------------------------------------------------
def parse_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object."""
    if not raw.strip():
        raise Invalid("Request body must be a JSON object")
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise Invalid("Request body must be UTF-8 encoded JSON") from None
    except json.JSONDecodeError as exc:
        raise Invalid(f"Malformed JSON: {exc.msg} at position {exc.pos}") from None
    except (RecursionError, ValueError) as exc:
        raise Invalid(f"Malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Invalid("Request body must be a JSON object")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


NEW_TASK_FIELDS: Final = frozenset(
    {"title", "description", "priority", "task_list_id", "labels", "status", "order"}
    | {"parent_task_id"}  # later releases: a subtask names its parent
)


def new_task(body: Mapping[str, Any], statuses: Collection[str]) -> dict[str, Any]:
    """``POST /tasks``: title and task_list_id are required."""
    known(body, NEW_TASK_FIELDS)
    fields: dict[str, Any] = {
        "title": _title(_required(body, "title")),
        "task_list_id": text(_required(body, "task_list_id"), "task_list_id", MAX_ID),
    }
    if body.get("description") is not None:
        fields["description"] = text(body["description"], "description", MAX_DESCRIPTION, True)
    if body.get("priority") is not None:
        fields["priority"] = enum(body["priority"], "priority", PRIORITIES)
    if body.get("labels") is not None:
        fields["labels"] = _text_list(body["labels"], "labels", MAX_LABELS, MAX_LABEL)
    if body.get("status") is not None:
        fields["status"] = enum(body["status"], "status", statuses)
    if body.get("order") is not None:
        fields["order"] = _integer(body["order"], "order", -MAX_ORDER, MAX_ORDER)
    if body.get("parent_task_id") is not None:
        fields["parent_task_id"] = text(body["parent_task_id"], "parent_task_id", MAX_ID)
    return fields


def task_patch(body: Mapping[str, Any], statuses: Collection[str]) -> dict[str, Any]:
    """``PATCH /tasks/{id}``: only the fields present, each checked; ``null`` clears text."""
    known(body, PATCH_FIELDS)
    if not body:
        raise Invalid("No fields to update", {"allowed": sorted(PATCH_FIELDS)})
    fields: dict[str, Any] = {}
    for name, value in body.items():
        fields[name] = _PATCH_CHECKS[name](value, statuses)
    return fields


def _nullable_text(name: str, limit: int) -> Any:
    def check(value: Any, _statuses: Collection[str]) -> str | None:
        if value is None:
            return None
        # "" clears the field, as on the real server (`value || null`).
        return text(value, name, limit, allow_empty=True) or None

    return check


def _count(name: str) -> Any:
    return lambda value, _statuses: _integer(value, name, 0, MAX_COUNT)


_PATCH_CHECKS: Final[dict[str, Any]] = {
    "status": lambda value, statuses: enum(value, "status", statuses),
    "assigned_to": _nullable_text("assigned_to", MAX_NAME),
    "completion_notes": _nullable_text("completion_notes", MAX_NOTES),
    "files_changed": lambda value, _s: _text_list(value, "files_changed", MAX_FILES, MAX_PATH),
    "error_count": _count("error_count"),
    "loop_count": _count("loop_count"),
    "title": lambda value, _s: _title(value),
    "description": _nullable_text("description", MAX_DESCRIPTION),
    "priority": lambda value, _s: enum(value, "priority", PRIORITIES),
    "labels": lambda value, _s: _text_list(value, "labels", MAX_LABELS, MAX_LABEL),
    "order": lambda value, _s: _integer(value, "order", -MAX_ORDER, MAX_ORDER),
    "branch_name": _nullable_text("branch_name", MAX_URL),
    "pr_url": _nullable_text("pr_url", MAX_URL),
    "claude_session_id": _nullable_text("claude_session_id", MAX_ID),
}
PATCH_FIELDS: Final = frozenset(_PATCH_CHECKS)


def claim(body: Mapping[str, Any]) -> str:
    """``POST /tasks/{id}/claim``: the bot name."""
    known(body, {"bot_name"})
    return text(_required(body, "bot_name"), "bot_name", MAX_NAME).strip()


def new_comment(body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /tasks/{id}/comments``: author and author_type are required, as on later servers."""
    known(body, {"author", "author_type", "content", "comment_type", "loop_number"})
    content = text(_required(body, "content"), "content", MAX_COMMENT).strip()
    if not content:
        raise Invalid("content must not be blank", {"field": "content"})
    loop_number = body.get("loop_number")
    return {
        "author": text(_required(body, "author"), "author", MAX_NAME).strip(),
        "author_type": enum(_required(body, "author_type"), "author_type", AUTHOR_TYPES),
        "content": content,
        "comment_type": enum(_required(body, "comment_type"), "comment_type", COMMENT_TYPES),
        "loop_number": None
        if loop_number is None
        else _integer(loop_number, "loop_number", 0, MAX_COUNT),
    }


def heartbeat(body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /workers/heartbeat``: worker_name (1–100), status idle|working, current task."""
    known(body, {"worker_name", "status", "current_task_id"})
    current = body.get("current_task_id")
    return {
        "worker_name": text(_required(body, "worker_name"), "worker_name", MAX_NAME).strip(),
        "status": enum(_required(body, "status"), "status", WORKER_STATUSES),
        "current_task_id": None
        if current is None
        else text(current, "current_task_id", MAX_ID, allow_empty=True) or None,
    }


def new_task_list(body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /task-lists``: name (≤200) and the optional project fields."""
    known(body, {"name", "description", "repository_url", "working_directory"})
    name = text(_required(body, "name"), "name", MAX_TASK_LIST_NAME).strip()
    if not name:
        raise Invalid("name must not be blank", {"field": "name"})
    fields: dict[str, Any] = {"name": name}
    for field, limit in (
        ("description", MAX_TASK_LIST_DESCRIPTION),
        ("repository_url", MAX_URL),
        ("working_directory", MAX_URL),
    ):
        if body.get(field) is not None:
            fields[field] = text(body[field], field, limit, allow_empty=True) or None
    return fields


# --- query strings -------------------------------------------------------------------------
def query_enum(query: Mapping[str, str], name: str, allowed: Collection[str]) -> str | None:
    value = query.get(name)
    return None if value is None or value == "" else enum(value, name, allowed)


def query_text(query: Mapping[str, str], name: str, limit: int = MAX_ID) -> str | None:
    value = query.get(name)
    return None if value is None or value == "" else text(value, name, limit)


def query_int(
    query: Mapping[str, str], name: str, *, default: int, minimum: int, maximum: int
) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    if not _INTEGER.fullmatch(value):
        raise Invalid(f"{name} must be an integer", {"field": name})
    return _integer(int(value), name, minimum, maximum)


# --- field checks --------------------------------------------------------------------------
def known(body: Mapping[str, Any], allowed: Collection[str]) -> None:
    # Unknown fields are refused rather than ignored: a misspelt field would otherwise
    # be silently dropped, and the caller would believe it had been stored.
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise Invalid(
            f"Unknown field(s): {', '.join(unknown)}",
            {"unknown": unknown, "allowed": sorted(allowed)},
        )


def _required(body: Mapping[str, Any], name: str) -> Any:
    value = body.get(name)
    if value is None:
        raise Invalid(f"{name} is required", {"field": name})
    return value


def text(value: Any, name: str, limit: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string", {"field": name})
    if not allow_empty and not value.strip():
        raise Invalid(f"{name} must not be empty", {"field": name})
    if len(value) > limit:
        raise Invalid(
            f"{name} must be at most {limit} characters (got {len(value)})",
            {"field": name, "max_length": limit},
        )
    if "\x00" in value:
        raise Invalid(f"{name} must not contain NUL characters", {"field": name})
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{name} must be valid Unicode text", {"field": name}) from None
    return value


def _title(value: Any) -> str:
    return text(value, "title", MAX_TITLE).strip()


def enum(value: Any, name: str, allowed: Collection[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise Invalid(
            f"{name} must be one of: {', '.join(allowed)}",
            {"field": name, "allowed": list(allowed)},
        )
    return value


def _integer(value: Any, name: str, minimum: int, maximum: int) -> int:
    # bool is an int in Python; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{name} must be an integer", {"field": name})
    if not minimum <= value <= maximum:
        raise Invalid(
            f"{name} must be between {minimum} and {maximum}",
            {"field": name, "min": minimum, "max": maximum},
        )
    return value


def _text_list(value: Any, name: str, max_items: int, max_length: int) -> list[str]:
    if not isinstance(value, list):
        raise Invalid(f"{name} must be a list of strings", {"field": name})
    if len(value) > max_items:
        raise Invalid(
            f"{name} must have at most {max_items} entries", {"field": name, "max": max_items}
        )
    return [text(item, f"{name}[{i}]", max_length) for i, item in enumerate(value)]
