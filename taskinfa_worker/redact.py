"""Removes secrets from text before it reaches a log, a comment or a transcript.

Two nets: the exact values of the configured secrets (whatever their shape), and the
well-known key shapes (``tk_...``, ``sk-ant-...``, GitHub tokens, bearer headers), so that
a key the worker was never told about is still caught when an agent prints it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TypeVar

from pydantic import SecretStr

MASK = "[REDACTED]"

_KEY_SHAPES_SOURCE = r"""
    (?:sk-ant-[A-Za-z0-9_\-]{8,})           # Anthropic keys
    | (?:\btk_[A-Za-z0-9_\-]{8,})           # Taskinfa board keys
    | (?:\bgh[pousr]_[A-Za-z0-9]{20,})      # GitHub tokens
    | (?:\bgithub_pat_[A-Za-z0-9_]{20,})
    | (?:(?<=[Bb]earer\ )[A-Za-z0-9._~+/\-]{8,}=*)
    | (?:(?<=://)[^/\s:@]+:[^/\s@]+(?=@))  # user:password@ in URLs
    """
_KEY_SHAPES = re.compile(_KEY_SHAPES_SOURCE, re.VERBOSE)
# The same shapes for raw bytes (transcript lines are redacted before any decoding).
_KEY_SHAPES_BYTES = re.compile(_KEY_SHAPES_SOURCE.encode(), re.VERBOSE)

# Where a shape can begin: at these literals, or right after them (the lookbehinds). The
# alternation above has no literal prefix, so ``sub`` tried all six shapes at every position
# and redacted ~11 MB/s: a 10 MB transcript line held the event loop for a second. Finding
# the few candidate positions with plain substring searches first (each a pass at ~2 GB/s;
# a regex that starts with a character class, such as ``[Bb]earer``, scans far slower), and
# trying the same pattern only there, gives the very same result. The literals are as few
# and as loose as the shapes allow ("gh" for the five GitHub prefixes, "earer " for both
# cases of Bearer): every pass costs, a false candidate only a failed ``match``.
_STARTS_AT = ("sk-ant-", "tk_", "gh", "github_pat_")
_STARTS_AFTER = ("earer ", "://")
_STARTS_AT_BYTES = tuple(literal.encode() for literal in _STARTS_AT)
_STARTS_AFTER_BYTES = tuple(literal.encode() for literal in _STARTS_AFTER)

AnyText = TypeVar("AnyText", str, bytes)


def _positions(text: AnyText, literal: AnyText) -> Iterator[int]:
    found = text.find(literal)
    while found >= 0:
        yield found
        found = text.find(literal, found + 1)


def _mask_key_shapes(text: AnyText) -> AnyText:
    """``_KEY_SHAPES.sub(MASK, text)``, trying only the candidate positions."""
    if isinstance(text, str):
        return _mask_at_candidates(text, _KEY_SHAPES, _STARTS_AT, _STARTS_AFTER, MASK)
    return _mask_at_candidates(
        text, _KEY_SHAPES_BYTES, _STARTS_AT_BYTES, _STARTS_AFTER_BYTES, MASK.encode()
    )


def _mask_at_candidates(
    text: AnyText,
    shapes: re.Pattern[AnyText],
    starts_at: tuple[AnyText, ...],
    starts_after: tuple[AnyText, ...],
    mask: AnyText,
) -> AnyText:
    starts = {at for literal in starts_at for at in _positions(text, literal)}
    starts.update(at + len(literal) for literal in starts_after for at in _positions(text, literal))
    if not starts:
        return text
    parts = []
    done = 0
    for position in sorted(starts):
        if position < done:
            continue  # inside the previous match, as with sub()
        # match() at a position still sees the text before it (lookbehinds, \b).
        found = shapes.match(text, position)
        if found:
            parts += [text[done:position], mask]
            done = found.end()
    parts.append(text[done:])
    return text[:0].join(parts)


class Redactor:
    """Masks known secret values and secret-shaped strings."""

    def __init__(self, secrets: Iterable[SecretStr | str | None] = ()) -> None:
        values = []
        for secret in secrets:
            if secret is None:
                continue
            text = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
            # Very short values would mask ordinary words; real keys are long.
            if len(text) >= 6:
                values.append(text)
        # Longest first, so a key that contains another is masked whole.
        self._values = sorted(set(values), key=len, reverse=True)
        self._values_bytes = [value.encode() for value in self._values]

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return _mask_key_shapes(text)

    def redact_bytes(self, data: bytes) -> bytes:
        """The same for UTF-8 bytes, without decoding them (a transcript line can be 10 MB).

        The byte patterns read a non-ASCII byte as a non-word, non-space character (as
        ``__call__`` reads ``#``), so next to non-ASCII letters they can mask a little more
        than ``__call__``: a key right after ``é`` is masked here, not there.
        """
        mask = MASK.encode()
        for value in self._values_bytes:
            if value in data:
                data = data.replace(value, mask)
        return _mask_key_shapes(data)

    def add(self, secret: SecretStr | str | None) -> None:
        """Also mask this value from now on (e.g. a token learned at run time)."""
        merged = Redactor([*self._values, secret])
        self._values = merged._values
        self._values_bytes = merged._values_bytes
