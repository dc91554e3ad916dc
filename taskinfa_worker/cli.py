"""Command line: ``taskinfa-worker run | board | check | status``.

The worker's flags are derived from ``Settings`` (one flag per field, named after it), so a
setting cannot exist without its flag, env var and ``--help`` line. Flags default to
"not given", so the environment and ``.env`` stay in force unless a flag overrides them.

Exit status: 0 done, 1 unexpected error, 2 bad settings or flags, 3 the board refused the
key, 4 a worker fault stopped the claims (with --exit-when-idle: the agent's key refused,
the agent or git missing, the workspace or network unusable), 5 another live worker runs
under this BOT_NAME, 6 the start-up checks failed (the agent, git, a folder, the health port,
or SANDBOX=on where the agent sandbox cannot run), 130 a third signal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn, get_args

import anyio

from taskinfa_worker import __version__
from taskinfa_worker.cli_board import add_board_parser, command_board
from taskinfa_worker.docs_gen import default_words
from taskinfa_worker.errors import EXIT_CONFIG, ConfigError, FatalError
from taskinfa_worker.logs import quiet_logging
from taskinfa_worker.settings import (
    Settings,
    env_var,
    field_group,
    flag_name,
    has_flag,
    load_settings,
)

EXIT_OK = 0
EXIT_ERROR = 1


def _bool_field(name: str) -> bool:
    return Settings.model_fields[name].annotation is bool


def _choices(name: str) -> list[str] | None:
    annotation = Settings.model_fields[name].annotation
    args = get_args(annotation)
    if args and all(isinstance(arg, str) for arg in args):
        return [str(arg) for arg in args]
    return None


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per settings field that has one, grouped like the docs."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, field in Settings.model_fields.items():
        if not has_flag(name):
            continue
        group_name = field_group(name)
        group = groups.get(group_name) or parser.add_argument_group(group_name)
        groups[group_name] = group
        help_text = f"{field.description} [env {env_var(name)}; default: {default_words(name)}]"
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if _bool_field(name):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = env_var(name)
            choices = _choices(name)
            if choices:
                kwargs["choices"] = choices
        group.add_argument(flag_name(name), **kwargs)
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="Read settings from this file (it must exist) [default: .env when it exists]",
    )


class _Parser(argparse.ArgumentParser):
    """Bad flags end like bad settings: one sentence and exit status 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"taskinfa-worker: {message} (see {self.prog} --help).\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="taskinfa-worker",
        description="Run tasks from a Taskinfa board with Claude Code, N at a time.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="Run the worker pool.")
    add_settings_flags(run)

    check = commands.add_parser("check", help="Check settings, board, agent, git, folders.")
    add_settings_flags(check)

    status = commands.add_parser("status", help="Show what each slot is doing.")
    add_settings_flags(status)
    status.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        default=None,
        type=float,
        metavar="SECONDS",
        help="Show it again every SECONDS (default 2) until Ctrl-C.",
    )

    add_board_parser(commands)
    return parser


def _env_file(args: argparse.Namespace) -> Path:
    """The .env to read: one named on the command line must exist."""
    if args.env_file is None:
        return Path(".env")
    if not args.env_file.is_file():
        raise ConfigError(f"--env-file {args.env_file} does not exist.")
    return Path(args.env_file)


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    return load_settings(overrides, env_file=_env_file(args))


def _run_async(func: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return anyio.run(func)


def _command_run(args: argparse.Namespace) -> int:
    from taskinfa_worker.app import run_worker

    settings = _settings_from(args)
    return _run_async(lambda: run_worker(settings))


def _command_check(args: argparse.Namespace) -> int:
    from taskinfa_worker.check import run_checks

    settings = _settings_from(args)
    quiet_logging()
    return _run_async(lambda: run_checks(settings))


def _command_status(args: argparse.Namespace) -> int:
    from taskinfa_worker.check import show_status

    # `status` reads the status file and the health port only: the board's URL and key are
    # not needed, so placeholders stand in for them rather than refusing to show anything.
    args.taskinfa_api_url = "http://127.0.0.1/api"
    overrides = {n: getattr(args, n) for n in Settings.model_fields if hasattr(args, n)}
    settings = load_settings({**overrides, "taskinfa_api_key": "unused"}, _env_file(args))
    quiet_logging()
    try:
        return _run_async(lambda: show_status(settings, watch=args.watch))
    except KeyboardInterrupt:
        return EXIT_OK


def _command_board(args: argparse.Namespace) -> int:
    return command_board(args, _settings_from)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _command_run,
    "check": _command_check,
    "status": _command_status,
    "board": _command_board,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except FatalError as exc:
        print(f"taskinfa-worker: {exc}", file=sys.stderr)
        return exc.exit_status
