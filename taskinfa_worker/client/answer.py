"""Board answers as data: turn them into wire models or into the worker's errors.

Real servers answer errors with JSON of several shapes, with HTML for routes they lack, or
with nothing at all; a success body may be cut short by a proxy. Nothing here assumes a
body is JSON until it has been parsed, and every text taken from a body is cut to a short,
printable excerpt before it reaches an error message or a log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from taskinfa_worker.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    ConflictError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
)

MAX_EXCERPT: Final = 200
_UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

_ERRORS: Final[Mapping[int, type[ApiError] | type[AuthError]]] = {
    400: BadRequestError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    410: NotFoundError,
    429: RateLimitedError,
}

Model = TypeVar("Model", bound=BaseModel)
Redact = Callable[[str], str]


def excerpt(body: bytes | str, limit: int = MAX_EXCERPT) -> str:
    """A one-line, printable excerpt of at most ``limit`` characters."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    text = " ".join(_UNPRINTABLE.sub(" ", text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a hostile body nests arrays deeper than the decoder goes.
        return _NOT_JSON


_NOT_JSON: Final = object()


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of the board, read completely."""

    method: str
    url: str
    """The request URL, already safe to show (no credentials)."""
    status: int
    body: bytes
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error_message(self) -> str | None:
        """The message of the API's JSON error body; None when the body is not one.

        Accepts ``{"error"}``, ``{"error", "message"}`` and ``{"message"}``.
        """
        data = _loads(self.body)
        if not isinstance(data, dict):
            return None
        parts = [
            value.strip()
            for value in (data.get("error"), data.get("message"))
            if isinstance(value, str) and value.strip()
        ]
        if not parts:
            return None
        return excerpt(": ".join(dict.fromkeys(parts)))

    def error(self, redact: Redact) -> ApiError | AuthError:
        """The worker's error for this (non-success) answer."""
        message = self.error_message()
        if message is None:
            shown = excerpt(self.body)
            message = f"body: {shown}" if shown else "empty body"
        cls = _ERRORS.get(self.status) or (ServerError if self.status >= 500 else ApiError)
        return cls(self.status, self.method, self.url, redact(message))

    def json_field(self, key: str, redact: Redact) -> Any:
        """``body[key]`` of a JSON object body, or MalformedResponseError."""
        data = self.json_object(redact)
        if key not in data:
            raise self.malformed(f'no "{key}" in the answer', redact)
        return data[key]

    def json_object(self, redact: Redact) -> dict[str, Any]:
        """The body as a JSON object, or MalformedResponseError."""
        data = _loads(self.body)
        if data is _NOT_JSON:
            shown = excerpt(self.body)
            raise self.malformed(f"body is not JSON: {shown or 'empty body'}", redact)
        if not isinstance(data, dict):
            raise self.malformed(f"expected a JSON object, got {type(data).__name__}", redact)
        return data

    def model(self, model: type[Model], data: Any, redact: Redact) -> Model:
        """Validate ``data`` (part of this answer) as ``model``, or MalformedResponseError."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or "body"
            raise self.malformed(
                f"{model.__name__} {where}: {first.get('msg', 'invalid')}", redact
            ) from None

    def malformed(self, message: str, redact: Redact) -> MalformedResponseError:
        return MalformedResponseError(
            self.status, self.method, self.url, redact(excerpt(message, 2 * MAX_EXCERPT))
        )
