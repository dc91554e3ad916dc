"""``taskinfa-worker board add | list | move | comment``, and ``llm | provider | model`` (the
current release's model choice): a person's actions on any board.

They talk to the board the settings name (``TASKINFA_API_URL``, ``TASKINFA_API_KEY``, as the
worker reads them) through the worker's own ``BoardClient``, so a local board and a real
dashboard get the same requests, the same validation and the same error sentences as the
worker's. Each command prints a few plain lines and returns the exit status.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import SecretStr

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.llm_config import UNSET, LlmConfig, LlmProvider
from taskinfa_worker.client.models import Task, TaskStatus
from taskinfa_worker.errors import ApiError, BoardError, NotFoundError
from taskinfa_worker.settings import Settings

EXIT_OK: Final = 0
EXIT_BOARD: Final = 1

LIST_LIMIT: Final = 100
"""The most tasks one ``GET /tasks`` returns (the board's own cap)."""

COLUMNS: Final = (
    TaskStatus.BACKLOG,
    TaskStatus.TODO,
    TaskStatus.IN_PROGRESS,
    TaskStatus.REVIEW,
    TaskStatus.DONE,
    TaskStatus.BLOCKED,
)
NO_LLM_CONFIG: Final = (
    "The board has no llm-config (a release before the model choice;"
    " the local board has it with --profile v2)."
)

FREE_STATUSES: Final = frozenset({TaskStatus.BACKLOG, TaskStatus.TODO})
"""Statuses in which nobody works on a task: moving a task there also unassigns it, so a
worker can claim it again (a claim takes only unassigned ``todo`` tasks)."""


@dataclass(frozen=True)
class NewTask:
    title: str
    description: str | None
    priority: str | None
    project: str
    status: str | None


def move_fields(status: str) -> dict[str, Any]:
    """The PATCH that moves a task to ``status`` the way a person means it."""
    if status in FREE_STATUSES:
        return {"status": status, "assigned_to": None}
    return {"status": status}


async def add_task(settings: Settings, new: NewTask) -> int:
    fields = {
        name: value
        for name, value in (
            ("description", new.description),
            ("priority", new.priority),
            ("status", new.status),
        )
        if value is not None
    }

    async def add(client: BoardClient) -> str:
        task = await client.create_task(new.title, new.project, **fields)
        return (
            f"Added {task.id} to {task.task_list_id or new.project} ({task.status}): {task.title}"
        )

    return await _on_board(settings, add)


async def list_board(settings: Settings) -> int:
    async def show(client: BoardClient) -> str:
        page = await client.list_tasks(limit=LIST_LIMIT)
        table = board_table(page.tasks)
        if len(page.tasks) >= LIST_LIMIT:
            table += f"\n(the first {LIST_LIMIT} tasks the board returned)"
        return table

    return await _on_board(settings, show)


async def move_task(settings: Settings, task_id: str, status: str) -> int:
    async def move(client: BoardClient) -> str:
        task = await client.update_task(task_id, **move_fields(status))
        return f"Moved {task.id} to {task.status}: {task.title}"

    return await _on_board(settings, move)


async def comment_on(
    settings: Settings, task_id: str, text: str, *, author: str, comment_type: str
) -> int:
    async def write(client: BoardClient) -> str:
        # A person's words: author_type "user" is what the review round trip reads back.
        posted = await client.add_comment(
            task_id, author=author, author_type="user", content=text, comment_type=comment_type
        )
        where = "as a comment" if posted is not None else "in its notes (the board has no comments)"
        return f"Wrote to {task_id} {where}."

    return await _on_board(settings, write)


async def show_llm(settings: Settings) -> int:
    async def show(client: BoardClient) -> str:
        config = await client.llm.read()
        if config is None:
            return NO_LLM_CONFIG
        return llm_table(config)

    return await _on_board(settings, show)


async def set_provider(
    settings: Settings, provider: str, *, base_url: str | None, token: SecretStr | Any | None
) -> int:
    """``token``: the new token, None to remove it, UNSET to keep the board's."""

    async def put(client: BoardClient) -> str:
        async with _llm_routes(client):
            row = await client.llm.set_provider(
                provider, base_url=base_url if base_url is not None else UNSET, auth_token=token
            )
        return f"Provider {row.provider}: {_endpoint(row.base_url)}, {_token_state(row)}"

    return await _on_board(settings, put)


async def choose_model(
    settings: Settings,
    provider: str | None,
    model: str | None,
    *,
    project_id: str | None,
    session_type: str,
) -> int:
    """Set the choice (``provider`` given) or clear it (None)."""
    whose = f"project {project_id}" if project_id else "the workspace"

    async def put(client: BoardClient) -> str:
        if provider is not None and project_id is not None:
            await _known_project(client, project_id)
        async with _llm_routes(client):
            if provider is None:
                await client.llm.clear_choice(project_id=project_id, session_type=session_type)
                return f"Cleared the {session_type} choice of {whose}."
            await client.llm.set_choice(
                provider, model, project_id=project_id, session_type=session_type
            )
        shown = model or "the provider's default model"
        return f"{session_type} runs of {whose} use {shown} on {provider}."

    return await _on_board(settings, put)


async def _known_project(client: BoardClient, project_id: str) -> None:
    """A choice for a project id that is not there would be kept (the local board) or fail
    with the database's own words (the release), and no run would ever follow it."""
    try:
        await client.get_task_list(project_id)
    except NotFoundError:
        raise BoardError(
            f"The board has no project {project_id}: --project takes a task list id"
            " (GET /task-lists lists them); nothing was set."
        ) from None


@contextlib.asynccontextmanager
async def _llm_routes(client: BoardClient) -> AsyncIterator[None]:
    """A board without the routes answers a write with its bare 404 page (HTML on a real
    dashboard): say what is missing instead, as ``board llm`` does."""
    try:
        yield
    except ApiError:
        if client.llm.supported is False:
            raise BoardError(NO_LLM_CONFIG) from None
        raise


def llm_table(config: LlmConfig) -> str:
    """Providers and choices as a person reads them; a token only as "set" or not."""
    lines = ["Providers:"]
    lines += [
        f"  {p.provider}  {_endpoint(p.base_url)}  {_token_state(p)}" for p in config.providers
    ] or ["  (none: the anthropic provider needs no row)"]
    lines.append("Choices:")
    for choice in config.session_configs:
        whose = f"project {choice.task_list_id}" if choice.task_list_id else "workspace"
        model = choice.model or "(the provider's default)"
        lines.append(f"  {choice.session_type}  {whose}  {choice.provider}  {model}")
    if not config.session_configs:
        lines.append("  (none: runs use the worker's own settings)")
    return "\n".join(lines)


def _endpoint(base_url: str | None) -> str:
    return base_url or "(no base URL)"


def _token_state(provider: LlmProvider) -> str:
    return "token set" if provider.auth_token is not None else "no token"


async def _on_board(settings: Settings, action: Callable[[BoardClient], Awaitable[str]]) -> int:
    """Run one action with a client of its own; a refused request is one sentence, status 1."""
    try:
        async with BoardClient.from_settings(settings) as client:
            printed = await action(client)
    except BoardError as exc:
        print(f"taskinfa-worker: {exc}", file=sys.stderr)
        return EXIT_BOARD
    print(printed)
    return EXIT_OK


def board_table(tasks: Iterable[Task]) -> str:
    """Tasks grouped by status, in the board's column order; statuses with none left out."""
    by_status: dict[str, list[Task]] = {}
    for task in tasks:
        by_status.setdefault(task.status, []).append(task)
    if not by_status:
        return "The board has no tasks."
    order = [*COLUMNS, *sorted(set(by_status) - set(COLUMNS))]
    blocks = []
    for status in order:
        column = by_status.get(status)
        if not column:
            continue
        # id, priority and slot padded to the column's widest; the title last, as it is.
        rows = [(task.id, task.priority, task.assigned_to or "-") for task in column]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f"{status} ({len(column)})"]
        for row, task in zip(rows, column, strict=True):
            padded = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            lines.append(f"  {padded}  {task.title}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
