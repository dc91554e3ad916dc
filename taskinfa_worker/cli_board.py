"""The ``board`` command group: serve a local board, or act on any board's tasks.

``taskinfa-worker board`` (or ``board serve``) serves the local SQLite board. ``board add``,
``list``, ``move`` and ``comment`` are a person's actions against whichever board the
settings name (``board_commands.py``), local or real, so nobody has to hand-write JSON;
``llm``, ``provider`` and ``model`` show and set the current release's model choice. A
provider's token is read from standard input (a prompt on a terminal), never from the
command line, where ``ps`` and the shell's history would keep it.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
from pydantic import SecretStr

from taskinfa_worker.board.profiles import PROFILE_NAMES
from taskinfa_worker.board.validation import COMMENT_TYPES, PRIORITIES, STATUSES
from taskinfa_worker.client.llm_config import PROVIDERS, SESSION_TYPES, TASK_SESSION, UNSET
from taskinfa_worker.logs import quiet_logging
from taskinfa_worker.settings import Settings

SettingsFrom = Callable[[argparse.Namespace], Settings]
PEOPLE_COMMENT_TYPES = ("comment", "human_message")
"""What a person writes: a remark, or a message meant for the agent's next run."""
assert set(PEOPLE_COMMENT_TYPES) <= set(COMMENT_TYPES)


def add_board_parser(commands: Any) -> None:
    """``board`` with the serve flags (the bare form serves) and its subcommands."""
    board = commands.add_parser(
        "board",
        help="Serve a local board (SQLite), or add, list, move, comment on any board's tasks "
        "and set its model choice.",
        description="Without a subcommand, `board` serves a local board, as `board serve` does.",
    )
    add_serve_flags(board)
    actions = board.add_subparsers(dest="board_command", metavar="ACTION")
    add_serve_flags(actions.add_parser("serve", help="Serve a local board (the default)."))

    add = actions.add_parser("add", help="Add a task.")
    add.add_argument("title", help="The task's title.")
    add.add_argument("--description", default=None, help="What to do, in words.")
    add.add_argument("--priority", choices=PRIORITIES, default=None, help="Default: medium.")
    add.add_argument("--project", default="default", help="Task list id (default: default).")
    add.add_argument(
        "--status", choices=STATUSES, default=None, help="Default: the board's (todo or backlog)."
    )

    actions.add_parser("list", help="Show the tasks, grouped by status.")

    move = actions.add_parser("move", help="Move a task to another column.")
    move.add_argument("task_id", metavar="ID")
    move.add_argument("status", metavar="STATUS", choices=STATUSES, help=", ".join(STATUSES))

    comment = actions.add_parser("comment", help="Write on a task (the agent reads it next run).")
    comment.add_argument("task_id", metavar="ID")
    comment.add_argument("text")
    comment.add_argument(
        "--type",
        dest="comment_type",
        choices=PEOPLE_COMMENT_TYPES,
        default="human_message",
        help="Default: human_message.",
    )
    comment.add_argument("--author", default=None, help="Default: your login name.")

    actions.add_parser("llm", help="Show the providers and model choices (tokens hidden).")
    provider = actions.add_parser(
        "provider", help="Set a provider's base URL and token (the current release)."
    )
    provider.add_argument("name", metavar="PROVIDER", choices=PROVIDERS, help=", ".join(PROVIDERS))
    provider.add_argument("--base-url", default=None, help="Its Anthropic-compatible endpoint.")
    token = provider.add_mutually_exclusive_group()
    token.add_argument(
        "--token-stdin",
        action="store_true",
        help="Read its token from standard input (a prompt on a terminal).",
    )
    token.add_argument("--no-token", action="store_true", help="Remove its token.")
    model = actions.add_parser(
        "model", help="Choose the provider and model for a project's runs, or everyone's."
    )
    model.add_argument(
        "provider", metavar="PROVIDER", nargs="?", choices=PROVIDERS, help=", ".join(PROVIDERS)
    )
    model.add_argument("model", metavar="MODEL", nargs="?", help="Default: the provider's.")
    model.add_argument("--project", default=None, help="Task list id (default: every project).")
    model.add_argument(
        "--session-type",
        choices=SESSION_TYPES,
        default=TASK_SESSION,
        help="Which runs: task (the default) for a task's work.",
    )
    model.add_argument("--clear", action="store_true", help="Remove the choice instead.")

    for people in (
        add,
        actions.choices["list"],
        move,
        comment,
        actions.choices["llm"],
        provider,
        model,
    ):
        people.add_argument(
            "--env-file",
            type=Path,
            default=None,
            help="Read TASKINFA_API_URL and TASKINFA_API_KEY from this file [default: .env].",
        )


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of a local board being served."""
    parser.add_argument(
        "--db", type=Path, default=Path("board.db"), help="SQLite file (default: board.db)."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="Address to listen on (default: 127.0.0.1)."
    )
    parser.add_argument(
        "--port", type=int, default=3000, help="Port (default: 3000; 0 = any free port)."
    )
    parser.add_argument(
        "--api-key", default=None, help="Accept this key (default: generate one, shown once)."
    )
    parser.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        default="full",
        help="Behave as a real release: v1 (worker era), v2 (current, with the model choice),"
        " or full (as documented; the default).",
    )
    # The switches below default to "not given" (None) so they override the profile only
    # when they appear on the command line.
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        help="Requests per minute per key (0 = off; default: the profile's, 100 or off).",
    )
    parser.add_argument(
        "--no-claim-route",
        dest="claim_route",
        action="store_false",
        default=None,
        help="Behave like real dashboards without POST /tasks/{id}/claim.",
    )
    parser.add_argument(
        "--no-heartbeat-route",
        dest="heartbeat_route",
        action="store_false",
        default=None,
        help="No /workers/heartbeat route.",
    )
    parser.add_argument(
        "--no-comments-route",
        dest="comments_route",
        action="store_false",
        default=None,
        help="No comments routes.",
    )
    parser.add_argument(
        "--reject-blocked",
        dest="accept_blocked",
        action="store_false",
        default=None,
        help="Refuse status 'blocked' with 400.",
    )


def command_board(args: argparse.Namespace, settings_from: SettingsFrom) -> int:
    """Serve, or run the person's action the arguments name."""
    action = getattr(args, "board_command", None)
    if action in (None, "serve"):
        return _serve(args)
    from taskinfa_worker import board_commands as do

    # Only the environment and .env: the serve flags on `board` (--rate-limit) are the
    # local board's own, not the client's settings of the same name.
    settings = settings_from(argparse.Namespace(env_file=args.env_file))
    quiet_logging()
    # A coroutine made outside the loop is only an object until anyio.run awaits it.
    action_done: Coroutine[Any, Any, int]
    if action == "add":
        new = do.NewTask(args.title, args.description, args.priority, args.project, args.status)
        action_done = do.add_task(settings, new)
    elif action == "list":
        action_done = do.list_board(settings)
    elif action == "move":
        action_done = do.move_task(settings, args.task_id, args.status)
    elif action == "llm":
        action_done = do.show_llm(settings)
    elif action == "provider":
        action_done = do.set_provider(
            settings, args.name, base_url=args.base_url, token=_token(args)
        )
    elif action == "model":
        if args.clear == (args.provider is not None):
            print("taskinfa-worker: board model needs a PROVIDER, or --clear", file=sys.stderr)
            return 2
        action_done = do.choose_model(
            settings,
            args.provider,
            args.model,
            project_id=args.project,
            session_type=args.session_type,
        )
    else:
        action_done = do.comment_on(
            settings,
            args.task_id,
            args.text,
            author=args.author or getpass.getuser(),
            comment_type=args.comment_type,
        )
    result: int = anyio.run(lambda: action_done)
    return result


def _token(args: argparse.Namespace) -> SecretStr | None:
    """The token to set: read from stdin, removed (None), or kept (UNSET)."""
    if args.no_token:
        return None
    if not args.token_stdin:
        keep: SecretStr | None = UNSET
        return keep
    if sys.stdin.isatty():
        read = getpass.getpass(f"Token for {args.name}: ")
    else:
        read = sys.stdin.readline()
    return SecretStr(read.strip()) if read.strip() else None


def _serve(args: argparse.Namespace) -> int:
    from taskinfa_worker.board.server import serve_board

    names = ("rate_limit", "claim_route", "heartbeat_route", "comments_route", "accept_blocked")
    switches = {name: getattr(args, name) for name in names if getattr(args, name) is not None}

    async def serve() -> None:
        await serve_board(
            db=args.db,
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            profile=args.profile,
            **switches,
        )

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve)
    return 0
