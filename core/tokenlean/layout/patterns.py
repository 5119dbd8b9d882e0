"""Recognisers for values that change from one request to the next.

A provider prompt cache matches the prompt byte for byte from the start, so a single value that
differs per request (a clock, a request id, a fresh UUID) ends the reusable prefix wherever it
sits. These patterns find such values in text so that the analyser can say *where* a prefix
breaks and ``reorder`` can move the lines that carry them behind the stable part.

Precision matters as much as recall: a stable date in a system prompt ("knowledge cutoff:
2024-06-01") is not a breaker. Clock times, UUIDs and request ids are nearly always per request
and are always reported; a bare date only when the words around it say it is the current one
("today", "current date", "now"). Inside a stream the analyser does not need these rules: it
sees the value change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

__all__ = ["BreakerKind", "VolatileSpan", "find_volatile", "is_volatile_line"]


class BreakerKind(StrEnum):
    """What breaks a stable prefix. The string values are stable (they appear in JSON reports)."""

    TIMESTAMP = "timestamp"
    DATE = "date"
    UUID = "uuid"
    REQUEST_ID = "request_id"
    PER_USER_DATA = "per_user_data"
    TOOL_KEY_ORDER = "tool_key_order"
    TOOL_ORDER = "tool_order"
    TOOL_SET = "tool_set"
    JSON_KEY_ORDER = "json_key_order"
    FEW_SHOT_ORDER = "few_shot_order"
    HISTORY_REWRITE = "history_rewrite"


@dataclass(frozen=True, slots=True)
class VolatileSpan:
    """One per-request value found in a text: ``text[start:end]`` is the value."""

    kind: BreakerKind
    start: int
    end: int
    text: str


_MONTHS = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_WEEKDAYS = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*"

# Order = priority when two matches overlap (a UUID beats the hex run inside it, an ISO
# datetime beats the date inside it).
_RULES: tuple[tuple[BreakerKind, re.Pattern[str]], ...] = (
    (
        BreakerKind.UUID,
        re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
    ),
    (
        BreakerKind.TIMESTAMP,
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s?Z\b|[+-]\d{2}:?\d{2}|\s?UTC\b)?"
        ),
    ),
    (
        BreakerKind.TIMESTAMP,
        re.compile(
            rf"\b(?:{_WEEKDAYS},?\s+)?(?:{_MONTHS}\.?\s+\d{{1,2}},?\s+\d{{4}}|\d{{1,2}}\s+{_MONTHS}\.?\s+\d{{4}})"
            r",?\s+(?:at\s+)?\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp]\.?[Mm]\.?)?(?:\s?(?:UTC|GMT|[A-Z]{3}))?"
        ),
    ),
    (
        BreakerKind.TIMESTAMP,
        re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?(?:\s?(?:[AaPp]\.?[Mm]\.?|UTC|GMT|Z)\b)?"),
    ),
    (BreakerKind.TIMESTAMP, re.compile(r"\b\d{1,2}:\d{2}\s?(?:[AaPp]\.?[Mm]\.?|UTC|GMT)(?![A-Za-z])")),
    # Unix epoch seconds (2017..2033) or milliseconds.
    (BreakerKind.TIMESTAMP, re.compile(r"(?<![\d.])1[5-9]\d{8}(?:\d{3})?(?:\.\d+)?(?![\d.])")),
    (BreakerKind.REQUEST_ID, re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")),  # ULID
    (
        BreakerKind.REQUEST_ID,
        re.compile(
            r"\b(?:req|request|chatcmpl|run|sess|session|trace|span|msg|call|evt|txn|corr|conv)[_-]"
            r"(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{6,}\b"
        ),
    ),
    (
        BreakerKind.REQUEST_ID,
        re.compile(
            r"(?i)\b(?:request|req|trace|span|session|correlation|run|invocation|nonce)[ _-]?id"
            r"(?:\s*[:=#]\s*|\s+(?:is\s+)?)[\"']?(?P<v>(?=[A-Za-z0-9._:-]*\d)[A-Za-z0-9][A-Za-z0-9._:-]{5,})"
        ),
    ),
    # Hashes, nonces, session tokens: 16+ hex digits with at least one letter and one digit.
    (BreakerKind.REQUEST_ID, re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{16,64}\b")),
    (
        BreakerKind.DATE,
        re.compile(
            rf"\b(?:{_WEEKDAYS},?\s+)?(?:{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
            rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}\.?,?\s+\d{{4}})\b"
        ),
    ),
    (BreakerKind.DATE, re.compile(r"\b\d{4}-\d{2}-\d{2}\b")),
    (BreakerKind.DATE, re.compile(r"\b\d{1,2}[/.]\d{1,2}[/.]\d{4}\b")),
    (BreakerKind.DATE, re.compile(r"\b\d{4}/\d{1,2}/\d{1,2}\b")),
)

# A bare date is a breaker only when the text says it is the current one.
_CURRENT = re.compile(
    r"(?i)\b(?:today|todays|today's|current(?:ly)?|now|date|as of now|this (?:morning|session))\b[^\n]{0,40}$"
)


@lru_cache(maxsize=65536)
def _spans_cached(text: str) -> tuple[VolatileSpan, ...]:
    return tuple(_scan(text))


def _spans(text: str) -> list[VolatileSpan]:
    # Prompts repeat line for line across a stream: scanning each distinct text once pays.
    return list(_spans_cached(text)) if len(text) < 20000 else _scan(text)


def _scan(text: str) -> list[VolatileSpan]:
    found: list[VolatileSpan] = []
    taken: list[tuple[int, int]] = []
    for kind, rx in _RULES:
        for m in rx.finditer(text):
            if "v" in rx.groupindex and m.group("v") is not None:
                start, end = m.span("v")
            else:
                start, end = m.span()
            if end <= start or any(start < e and s < end for s, e in taken):
                continue
            if kind is BreakerKind.DATE and not _CURRENT.search(text[max(0, start - 60) : start]):
                continue
            taken.append((start, end))
            found.append(VolatileSpan(kind, start, end, text[start:end]))
    found.sort(key=lambda s: s.start)
    return found


def find_volatile(text: str, *, dates: str = "current") -> list[VolatileSpan]:
    """Per-request values in ``text``, left to right, without overlaps.

    ``dates="current"`` (default) reports a bare date only when the words before it mark it as
    the current date; ``dates="all"`` reports every date (use it on text already known to vary,
    to name what varies); ``dates="none"`` never reports bare dates.
    """
    if not text:
        return []
    if dates == "current":
        return _spans(text)
    spans = _spans(text)
    if dates == "none":
        return [s for s in spans if s.kind is not BreakerKind.DATE]
    # "all": add the dates the context rule left out.
    taken = [(s.start, s.end) for s in spans]
    for kind, rx in _RULES:
        if kind is not BreakerKind.DATE:
            continue
        for m in rx.finditer(text):
            start, end = m.span()
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            spans.append(VolatileSpan(kind, start, end, text[start:end]))
    spans.sort(key=lambda s: s.start)
    return spans


def is_volatile_line(line: str) -> bool:
    """Whether a line of a system prompt carries a per-request value."""
    return bool(_spans(line))
