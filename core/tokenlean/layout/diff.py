"""Where two requests part: their common token prefix, and the spans where two texts differ.

Tokens: ``_Tokenized`` holds a request's canonical segments (``canonical.request_segments``) as
token ids, ``_Encoder`` encodes them (caching repeated segments), and ``_lcp`` is the longest
common token prefix of two requests, which is what an ideal prefix cache reuses.

Text: ``_diff_spans`` finds where two versions of one text differ (lines first, then words inside
the changed lines), ``_same_template`` tells two versions of one prompt from two different
prompts, and ``_anchor`` / ``_line_at`` name a place in a text in a way that stays the same from
one request to the next, so that one breaker seen in many requests is recognised as one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from tokenlean.layout.canonical import request_segments
from tokenlean.types import Request


# -- tokenized requests ------------------------------------------------------------------------------
class _Tokenized:
    """Token ids of a request's segments, concatenated, with segment boundaries."""

    __slots__ = ("ids", "request", "seg_msg", "seg_start", "seg_texts")

    def __init__(self, request: Request, encode: Any) -> None:
        import numpy as np

        self.request = request
        segs = request_segments(request)
        self.seg_texts = [s.text for s in segs]
        self.seg_msg = [s.message_index for s in segs]
        parts = [encode(s.text) for s in segs]
        starts = [0]
        for p in parts:
            starts.append(starts[-1] + len(p))
        self.seg_start = starts
        self.ids = np.fromiter((t for p in parts for t in p), dtype=np.int64, count=starts[-1])

    @property
    def total(self) -> int:
        return int(self.seg_start[-1])


def _lcp(a: Any, b: Any) -> int:
    import numpy as np

    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


class _Encoder:
    def __init__(self, model: str | None) -> None:
        from tokenlean.tokens import get_counter

        self.counter = get_counter(model)
        self._cache: dict[str, tuple[int, ...]] = {}

    def __call__(self, text: str) -> tuple[int, ...]:
        got = self._cache.get(text)
        if got is None:
            got = tuple(self.counter.encode(text))
            if len(self._cache) < 200_000:
                self._cache[text] = got
        return got

    def count(self, text: str) -> int:
        return len(self(text)) if text in self._cache else self.counter.count(text)


# -- text diffs ---------------------------------------------------------------------------------------
_UNITS = re.compile(r"\w+|\s+|[^\w\s]")


def _word_diff(a: str, b: str) -> list[tuple[int, int, int, int]]:
    ua = [(m.start(), m.end()) for m in _UNITS.finditer(a)]
    ub = [(m.start(), m.end()) for m in _UNITS.finditer(b)]
    wa = [a[s:e] for s, e in ua]
    wb = [b[s:e] for s, e in ub]
    sm = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    out: list[tuple[int, int, int, int]] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            continue
        a0 = ua[i1][0] if i1 < len(ua) else len(a)
        a1 = ua[i2 - 1][1] if i2 > i1 else a0
        b0 = ub[j1][0] if j1 < len(ub) else len(b)
        b1 = ub[j2 - 1][1] if j2 > j1 else b0
        out.append((a0, a1, b0, b1))
    return out


def _diff_spans(a: str, b: str) -> list[tuple[int, int, int, int]]:
    """Character spans ``(a0, a1, b0, b1)`` where ``a`` and ``b`` differ.

    Lines first (prompts are written in lines, and a line diff is cheap), then words inside
    the changed lines, so that two values on one line are two spans.
    """
    if a == b:
        return []
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    oa, ob = [0], [0]
    for line in la:
        oa.append(oa[-1] + len(line))
    for line in lb:
        ob.append(ob[-1] + len(line))
    sm = difflib.SequenceMatcher(None, la, lb, autojunk=False)
    out: list[tuple[int, int, int, int]] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            continue
        a0, a1, b0, b1 = oa[i1], oa[i2], ob[j1], ob[j2]
        if a1 > a0 and b1 > b0:
            out.extend(
                (a0 + x0, a0 + x1, b0 + y0, b0 + y1) for x0, x1, y0, y1 in _word_diff(a[a0:a1], b[b0:b1])
            )
        else:
            out.append((a0, a1, b0, b1))
    return out


def _same_template(a: str, b: str) -> bool:
    """Whether two system prompts are versions of one template (not two different apps)."""
    la, lb = set(a.splitlines()), set(b.splitlines())
    shared = sum(len(line) for line in la & lb)
    if 2 * shared >= 0.5 * (len(a) + len(b)):
        return True
    if len(a) + len(b) > 8000:
        return False
    return difflib.SequenceMatcher(None, a, b, autojunk=False).quick_ratio() >= 0.5


def _common_prefix(texts: Sequence[str]) -> str:
    """The longest string every text starts with."""
    if not texts:
        return ""
    lo, hi = min(texts), max(texts)  # the extremes bound every other text's agreement
    n = 0
    for x, y in zip(lo, hi, strict=False):
        if x != y:
            break
        n += 1
    return lo[:n]


def _anchor(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    before = text[line_start:pos]
    if not before.strip():
        prev_start = text.rfind("\n", 0, max(0, line_start - 1)) + 1
        before = text[prev_start:line_start]
    return before[-30:]


def _line_at(text: str, pos: int) -> str:
    s = text.rfind("\n", 0, pos) + 1
    e = text.find("\n", pos)
    return text[s : e if e >= 0 else len(text)].strip()[:120]
