"""Logging for the whole process: loguru, one format per run, secrets masked in every sink.

Convention: a line about a slot carries loguru extras ``slot`` (the slot's worker name) and
``task_id`` (while it holds a task). Bind them once per slot loop::

    log = logger.bind(slot="bot-1")
    log.bind(task_id=task.id).info("claimed {}", task.title)

or ``with logger.contextualize(slot=..., task_id=...):`` around the task's work. Text lines
show them as ``[bot-1 task_abc]``; JSON lines have ``"slot"`` and ``"task_id"`` keys.

Every line also names its process: ``pid`` and ``worker`` (``BOT_NAME``). Two processes
started with the same ``LOG_DIR`` and ``BOT_NAME`` (a restart that overlaps the old one, two
containers on one bind mount) append to the same ``worker.log``, and only these tell their
lines apart. Text lines start ``<time> <level> <pid> <worker>``.

Every record passes a patcher before any sink sees it: the message, each string extra and
the exception text are run through the ``Redactor``, so a key logged by mistake is masked
on stderr and in ``{LOG_DIR}/{BOT_NAME}/worker.log`` alike. Tracebacks are formatted here
without loguru's ``diagnose`` (which prints local variables, keys included).
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
import traceback
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

    from taskinfa_worker.redact import Redactor
    from taskinfa_worker.settings import Settings

__all__ = ["LOG_FILE_NAME", "SLOT", "TASK_ID", "setup_logging"]

SLOT = "slot"
TASK_ID = "task_id"
LOG_FILE_NAME = "worker.log"
ROTATION = "10 MB"
RETENTION = 5  # rotated files kept besides the current one

# Keys the patcher and formatters add to a record. Extras starting with "_" are internal
# and never shown.
_EXCEPTION = "_exception_text"
_CONTEXT = "_context_text"
_FIELDS = "_fields_text"
_JSON = "_json_line"
_WORKER = "_worker"

_JSON_TEMPLATE = "{extra[" + _JSON + "]}\n"
_TEXT_TEMPLATE = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "{process} {extra[" + _WORKER + "]} "
    "{extra[" + _CONTEXT + "]}<level>{message}</level>{extra[" + _FIELDS + "]}\n"
    "{extra[" + _EXCEPTION + "]}"
)


def setup_logging(settings: Settings, redactor: Redactor, *, stream: TextIO | None = None) -> None:
    """Send every log line to ``stream`` (stderr) and to the rotated per-bot log file.

    ``settings.log_format`` picks the format: ``text`` (human-readable, coloured on a
    terminal), ``json`` (one object per line) or ``auto`` (text when stderr is a terminal,
    JSON otherwise, e.g. under Docker or Kubernetes). Both sinks use the same format.
    Standard-library logging (aiohttp, asyncio) is routed into loguru. Calling this again
    replaces the previous configuration.
    """
    stream = stream if stream is not None else sys.stderr
    is_tty = _isatty(stream)
    fmt = settings.log_format
    use_json = fmt == "json" or (fmt == "auto" and not is_tty)

    logger.remove()
    logger.configure(patcher=_patcher(redactor), extra={_WORKER: settings.bot_name})
    # Format *functions*, not strings: for a string format loguru appends its own
    # "{exception}", which would print the traceback unredacted.
    formatter = _json_format if use_json else _text_format
    logger.add(
        stream,
        level=settings.log_level,
        format=formatter,
        colorize=is_tty and not use_json,
        backtrace=False,
        diagnose=False,
    )
    log_dir = settings.bot_log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    logger.add(
        log_dir / LOG_FILE_NAME,
        level=settings.log_level,
        format=formatter,
        colorize=False,
        rotation=ROTATION,
        retention=RETENTION,
        encoding="utf-8",
        backtrace=False,
        diagnose=False,
    )
    _intercept_stdlib(settings.log_level)


def quiet_logging() -> None:
    """One-shot commands print their own lines; only warnings from the library show."""
    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{level}: {message}")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def _patcher(redactor: Redactor) -> Callable[[Record], None]:
    def patch(record: Record) -> None:
        record["message"] = redactor(record["message"])
        extra = record["extra"]
        for key, value in list(extra.items()):
            if isinstance(value, str):
                extra[key] = redactor(value)
        extra[_CONTEXT] = _context_text(extra)
        extra[_FIELDS] = _fields_text(extra)
        extra[_EXCEPTION] = ""
        exception = record["exception"]
        if exception is not None and exception.type is not None:
            text = "".join(
                traceback.format_exception(exception.type, exception.value, exception.traceback)
            )
            extra[_EXCEPTION] = redactor(text)

    return patch


def _context_text(extra: dict[str, Any]) -> str:
    parts = [str(extra[key]) for key in (SLOT, TASK_ID) if extra.get(key)]
    return f"[{' '.join(parts)}] " if parts else ""


def _fields_text(extra: dict[str, Any]) -> str:
    """Other bound extras as `` key=value`` after the message (JSON has them as keys)."""
    shown = [
        f"{key}={value}"
        for key, value in extra.items()
        if key not in (SLOT, TASK_ID) and not key.startswith("_")
    ]
    return (" " + " ".join(shown)) if shown else ""


def _text_format(record: Record) -> str:
    return _TEXT_TEMPLATE


def _json_format(record: Record) -> str:
    """A loguru format function: the JSON line is built here and emitted verbatim."""
    if _JSON in record["extra"]:
        # Both sinks get the same record: the line is built for the first one only.
        return _JSON_TEMPLATE
    payload: dict[str, Any] = {
        "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
        "pid": record["process"].id,
        "worker": record["extra"].get(_WORKER, ""),
    }
    for key, value in record["extra"].items():
        if key.startswith("_"):
            continue
        payload[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
    if record["extra"].get(_EXCEPTION):
        payload["exception"] = record["extra"][_EXCEPTION]
    # Stored in extra so the template below stays free of braces from the message itself.
    record["extra"][_JSON] = json.dumps(payload, ensure_ascii=False, default=str)
    return _JSON_TEMPLATE


class _InterceptHandler(logging.Handler):
    """Hands standard-library log records to loguru, keeping the caller's depth."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Walk out of the logging module so loguru names the module that logged.
        frame, depth = inspect.currentframe(), 0
        while frame is not None:
            if depth > 0 and frame.f_code.co_filename != logging.__file__:
                break
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


def _intercept_stdlib(level: str) -> None:
    logging.basicConfig(handlers=[_InterceptHandler()], level=level, force=True)
    # aiohttp's access log would add a line per health probe; errors still come through.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
