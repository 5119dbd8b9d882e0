"""Find the longest stable prefix of a request stream, and what breaks it, and where.

A provider prompt cache reuses the longest prefix a request shares with a recent one, token for
token. ``analyze`` serialises every request canonically (``canonical.request_segments``),
tokenizes it with ``tokenlean.tokens`` and simulates an ideal prefix cache over the stream:
each request reuses its longest common token prefix with any of the last ``window`` requests.
That gives the reusable tokens now, and, after re-laying every request with the layout learned
from the same stream, the reusable tokens after the fix.

Breakers are found by comparing like with like, so that *every* breaker is reported and not
only the first one in each request:

* tool blocks of consecutive requests: key order, list order, changed definitions;
* the system prompt of consecutive requests, span by span: a differing span is named by what
  it is (timestamp, date, UUID, request id, JSON with reordered keys) or else it is per-user
  data (the rest of the prompt matches);
* few-shot example groups that occur in different orders;
* the history of consecutive requests of one conversation: anything re-rendered;
* and in every request, values that will break the prefix when they change even if the stream
  has not shown it yet (``observed=False``): clock times, UUIDs, request ids, "today" dates.

Each breaker says where (section, message index, character offset into the message text or
the tool JSON), how often it occurred, and how many prompt tokens behind it were lost to caching.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenlean._checks import check_number
from tokenlean.errors import ConfigError, EmptyInputError, MessageFormatError
from tokenlean.layout.canonical import (
    LINE_LABEL,
    as_request,
    canonical_json,
    embedded_json,
    header_length,
    message_key,
    message_text,
    request_segments,
    tool_name,
    tools_text,
)
from tokenlean.layout.patterns import BreakerKind, find_volatile
from tokenlean.layout.reorder import PromptLayout, _split_groups
from tokenlean.types import Request

__all__ = ["Breaker", "LayoutReport", "RequestLayout", "analyze"]

_HINTS: dict[BreakerKind, str] = {
    BreakerKind.TIMESTAMP: "move the clock value to the new turn (reorder does this)",
    BreakerKind.DATE: "move the date to the new turn, or round it to a coarser stable value",
    BreakerKind.UUID: "keep ids out of the prompt or move them to the new turn",
    BreakerKind.REQUEST_ID: "request/trace ids belong in metadata, not in the prompt",
    BreakerKind.PER_USER_DATA: "move per-user fields after the shared instructions (new turn)",
    BreakerKind.TOOL_KEY_ORDER: "serialise tools with sorted keys (reorder does this)",
    BreakerKind.TOOL_ORDER: "send tools in a fixed order (reorder sorts them by name)",
    BreakerKind.TOOL_SET: "keep the tool set fixed per deployment; vary tool_choice instead",
    BreakerKind.JSON_KEY_ORDER: "serialise JSON with sorted keys (reorder does this in the system prompt)",
    BreakerKind.FEW_SHOT_ORDER: "send few-shot examples in one fixed order (reorder learns it)",
    BreakerKind.HISTORY_REWRITE: "send earlier turns byte-identical; append, never re-render",
}
# What ``reorder`` / a client-side change can fix inside the request; a changed tool set and a
# rewritten history are deployment or application decisions, so they are only reported.
_FIXABLE = frozenset(BreakerKind) - {BreakerKind.TOOL_SET, BreakerKind.HISTORY_REWRITE}


@dataclass(frozen=True, slots=True)
class Breaker:
    """One thing that ends the stable prefix, and where.

    ``message_index`` is None for the tool block (then ``tool_index`` names the tool);
    ``char_offset`` is into the message's text (``canonical.message_text``) or into the tool
    block's JSON. ``observed`` is True when the stream showed the value changing, False when
    only its form says it will. ``tokens_at_risk``: prompt tokens from this point to the end of
    the requests where it occurred, summed (what a fix can make reusable, at most).
    """

    kind: BreakerKind
    section: str
    message_index: int | None
    char_offset: int
    excerpt: str
    request_index: int
    tool_index: int | None = None
    observed: bool = True
    occurrences: int = 1
    tokens_at_risk: int = 0
    fixable: bool = True
    hint: str = ""

    @property
    def location(self) -> str:
        if self.message_index is None:
            tool = f" (tool {self.tool_index})" if self.tool_index is not None else ""
            return f"tools{tool}, char {self.char_offset}"
        return f"message {self.message_index} ({self.section}), char {self.char_offset}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "section": self.section,
            "message_index": self.message_index,
            "tool_index": self.tool_index,
            "char_offset": self.char_offset,
            "excerpt": self.excerpt,
            "request_index": self.request_index,
            "observed": self.observed,
            "occurrences": self.occurrences,
            "tokens_at_risk": self.tokens_at_risk,
            "fixable": self.fixable,
            "hint": self.hint,
        }


@dataclass(frozen=True, slots=True)
class RequestLayout:
    """One request of the stream under the ideal prefix cache."""

    index: int
    prompt_tokens: int
    reused_prefix_tokens: int
    reused_prefix_tokens_after: int
    stable_prefix_tokens: int
    best_match: int | None  # index of the earlier request it shares the longest prefix with


@dataclass(frozen=True)
class LayoutReport:
    """What ``analyze`` found: breakers, the stable prefix, and the reusable tokens before/after.

    ``reused_prefix_tokens``: tokens an ideal prefix cache serves over the stream as sent;
    ``reused_prefix_tokens_after``: the same after ``layout`` re-lays every request;
    ``common_prefix_tokens``: the prefix every request shares.
    """

    requests: int
    prompt_tokens: int
    reused_prefix_tokens: int
    reused_prefix_tokens_after: int
    prompt_tokens_after: int
    common_prefix_tokens: int
    common_prefix_text: str
    breakers: tuple[Breaker, ...]
    per_request: tuple[RequestLayout, ...]
    layout: PromptLayout
    model: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def cacheable_share(self) -> float:
        return self.reused_prefix_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def cacheable_share_after(self) -> float:
        return self.reused_prefix_tokens_after / self.prompt_tokens_after if self.prompt_tokens_after else 0.0

    @property
    def expected_gain_tokens(self) -> int:
        """Extra tokens served from cache over this stream once the layout is applied."""
        return self.reused_prefix_tokens_after - self.reused_prefix_tokens

    @property
    def stable_prefix_tokens(self) -> int:
        """Alias of ``common_prefix_tokens``: the prefix shared by every request."""
        return self.common_prefix_tokens

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for b in self.breakers:
            out[str(b.kind)] = out.get(str(b.kind), 0) + 1
        return out

    def observed(self) -> tuple[Breaker, ...]:
        return tuple(b for b in self.breakers if b.observed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "prompt_tokens_after": self.prompt_tokens_after,
            "reused_prefix_tokens": self.reused_prefix_tokens,
            "reused_prefix_tokens_after": self.reused_prefix_tokens_after,
            "cacheable_share": round(self.cacheable_share, 4),
            "cacheable_share_after": round(self.cacheable_share_after, 4),
            "expected_gain_tokens": self.expected_gain_tokens,
            "common_prefix_tokens": self.common_prefix_tokens,
            "breakers": [b.to_dict() for b in self.breakers],
            "by_kind": self.by_kind(),
            "notes": list(self.notes),
        }

    def format(self) -> str:
        """A plain-text summary (the CLI prints a rich table instead when rich is installed)."""
        lines = [
            f"{self.requests} request(s), {self.prompt_tokens} prompt tokens",
            f"stable prefix shared by all: {self.common_prefix_tokens} tokens",
            f"reusable by a prefix cache: {self.reused_prefix_tokens} ({self.cacheable_share:.1%})"
            f" -> after layout: {self.reused_prefix_tokens_after} ({self.cacheable_share_after:.1%})",
            f"{len(self.breakers)} breaker(s):",
        ]
        for b in self.breakers:
            seen = "observed" if b.observed else "latent"
            lines.append(
                f"  {b.kind:<15} {b.location:<36} x{b.occurrences:<4} {seen:<8} "
                f"{b.tokens_at_risk:>8} tok  {b.excerpt!r}"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


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


# -- the detector -------------------------------------------------------------------------------------
class _Found:
    """Breakers aggregated by (kind, section, message index / tool, anchor)."""

    def __init__(self) -> None:
        self.items: dict[tuple[Any, ...], dict[str, Any]] = {}

    def add(
        self,
        kind: BreakerKind,
        section: str,
        message_index: int | None,
        offset: int,
        excerpt: str,
        request_index: int,
        at_risk: int,
        *,
        anchor: str,
        tool_index: int | None = None,
        observed: bool = True,
    ) -> None:
        key = (kind, section, message_index, anchor)  # a tool is named in its anchor
        got = self.items.get(key)
        if got is None:
            self.items[key] = {
                "kind": kind,
                "section": section,
                "message_index": message_index,
                "tool_index": tool_index,
                "char_offset": offset,
                "excerpt": excerpt,
                "request_index": request_index,
                "observed": observed,
                "occurrences": 1,
                "tokens_at_risk": at_risk,
                "requests": {request_index},
            }
            return
        if request_index not in got["requests"]:
            got["requests"].add(request_index)
            got["occurrences"] += 1
            got["tokens_at_risk"] += at_risk
        if observed and not got["observed"]:
            got.update(observed=True, char_offset=offset, excerpt=excerpt, request_index=request_index)

    def has_observed(self, kind: BreakerKind, message_index: int | None, anchor: str) -> bool:
        return any(
            v["observed"] and k[0] == kind and k[2] == message_index and k[3] == anchor
            for k, v in self.items.items()
        )

    def breakers(self) -> list[Breaker]:
        out = []
        for v in self.items.values():
            kind = v["kind"]
            out.append(
                Breaker(
                    kind=kind,
                    section=v["section"],
                    message_index=v["message_index"],
                    char_offset=v["char_offset"],
                    excerpt=v["excerpt"],
                    request_index=v["request_index"],
                    tool_index=v["tool_index"],
                    observed=v["observed"],
                    occurrences=v["occurrences"],
                    tokens_at_risk=v["tokens_at_risk"],
                    fixable=kind in _FIXABLE,
                    hint=_HINTS[kind],
                )
            )
        out.sort(key=lambda b: (not b.observed, -b.tokens_at_risk, b.request_index))
        return out


class _Analysis:
    def __init__(self, reqs: list[Request], encode: _Encoder, layout: PromptLayout) -> None:
        self.reqs = reqs
        self.encode = encode
        self.layout = layout
        self.tok = [_Tokenized(r, encode) for r in reqs]
        self.secs = [layout.sections(r) for r in reqs]
        self.found = _Found()

    # token position of (message index, char offset in message text) in request ri
    def _tokens_after(self, ri: int, message_index: int | None, offset: int) -> int:
        t = self.tok[ri]
        if message_index is None:
            seg = 0
            head = len("<|tools|>\n")
        else:
            seg = t.seg_msg.index(message_index)
            head = header_length(self.reqs[ri].messages[message_index])
        pos = t.seg_start[seg] + self.encode.count(t.seg_texts[seg][: head + offset])
        return max(0, t.total - pos)

    def _add(
        self,
        kind: BreakerKind,
        ri: int,
        section: str,
        mi: int | None,
        offset: int,
        text: str,
        *,
        tool_index: int | None = None,
        observed: bool = True,
        excerpt: str | None = None,
        anchor: str | None = None,
    ) -> None:
        self.found.add(
            kind,
            section,
            mi,
            offset,
            excerpt if excerpt is not None else _line_at(text, offset),
            ri,
            self._tokens_after(ri, mi, offset),
            anchor=anchor if anchor is not None else _anchor(text, offset),
            tool_index=tool_index,
            observed=observed,
        )

    # -- classify one differing span of two versions of the same text -------------------------------
    def _classify(
        self,
        ri: int,
        section: str,
        mi: int | None,
        a: str,
        b: str,
        span: tuple[int, int, int, int],
        fallback: BreakerKind,
        *,
        tool_index: int | None = None,
        base: int = 0,
    ) -> None:
        a0, a1, b0, b1 = span
        # JSON with the same value but another key order?
        for s, e, value in embedded_json(b):
            if s <= b0 < e or s < b1 <= e:
                for s2, e2, v2 in embedded_json(a):
                    if (s2 <= a0 < e2 or s2 < a1 <= e2) and v2 == value and a[s2:e2] != b[s:e]:
                        self._add(
                            BreakerKind.JSON_KEY_ORDER, ri, section, mi, base + s, b,
                            tool_index=tool_index, anchor=_anchor(b, s), excerpt=b[s:e][:80],
                        )  # fmt: skip
                        return
        hits = [v for v in find_volatile(b, dates="all") if v.start < max(b1, b0 + 1) and b0 < v.end + 1]
        hits = [v for v in hits if v.start <= b1 and v.end >= b0]
        if hits:
            for v in hits:
                self._add(
                    v.kind, ri, section, mi, base + v.start, b,
                    tool_index=tool_index, anchor=_anchor(b, v.start), excerpt=v.text,
                )  # fmt: skip
            return
        # An id/clock removed in b (present in a only) still breaks the prefix at b0.
        gone = [v for v in find_volatile(a, dates="all") if v.start <= a1 and v.end >= a0]
        if gone and b0 == b1:
            self._add(
                gone[0].kind, ri, section, mi, base + b0, b, tool_index=tool_index, excerpt=gone[0].text
            )
            return
        if fallback is BreakerKind.PER_USER_DATA:
            # One breaker per templated line, anchored on its label ("Customer name:") when it
            # has one, else on the lead the two versions share.
            line_start = b.rfind("\n", 0, b0) + 1
            line_end = b.find("\n", b0)
            line = b[line_start : line_end if line_end >= 0 else len(b)]
            label = LINE_LABEL.match(line)
            if label and line_start + label.end() <= b1:
                start = line_start + label.end()
                anchor = label.group(1).strip()
            else:
                la = a[a.rfind("\n", 0, a0) + 1 : a0]
                lb = b[line_start:b0]
                lead = re.sub(r"\w+$", "", _common_prefix([la, lb]))
                start = b0 - (len(lb) - len(lead))
                anchor = lead[-30:] if lead.strip() else _anchor(b, start)
            self._add(fallback, ri, section, mi, base + start, b, anchor=anchor, excerpt=_line_at(b, b0))
            return
        self._add(fallback, ri, section, mi, base + b0, b, tool_index=tool_index)

    # -- passes -------------------------------------------------------------------------------------
    def tools_pass(self) -> None:
        for ri in range(1, len(self.reqs)):
            prev, cur = self.reqs[ri - 1].tools, self.reqs[ri].tools
            if not prev or not cur or tools_text(prev) == tools_text(cur):
                continue
            text = tools_text(cur)
            offsets = self._tool_offsets(cur)
            pc = {tool_name(t): canonical_json(t) for t in prev}
            cc = {tool_name(t): canonical_json(t) for t in cur}
            pnames = [tool_name(t) for t in prev]
            cnames = [tool_name(t) for t in cur]
            if sorted(pc.values()) == sorted(cc.values()) and pnames != cnames:
                k = next(i for i, (x, y) in enumerate(zip(pnames, cnames, strict=False)) if x != y)
                self._add(
                    BreakerKind.TOOL_ORDER, ri, "tools", None, offsets[k], text,
                    tool_index=k, anchor="", excerpt=f"{pnames} -> {cnames}"[:120],
                )  # fmt: skip
            prev_raw = {tool_name(t): tools_text([t])[1:-1] for t in prev}
            for k, t in enumerate(cur):
                name = tool_name(t)
                raw = tools_text([t])[1:-1]
                if name not in prev_raw:
                    self._add(
                        BreakerKind.TOOL_SET, ri, "tools", None, offsets[k], text,
                        tool_index=k, anchor=f"+{name}", excerpt=f"tool {name!r} added",
                    )  # fmt: skip
                    continue
                old = prev_raw[name]
                if old == raw:
                    continue
                if pc[name] == cc[name]:
                    first = next(
                        (i for i, (x, y) in enumerate(zip(old, raw, strict=False)) if x != y),
                        min(len(old), len(raw)),
                    )
                    self._add(
                        BreakerKind.TOOL_KEY_ORDER, ri, "tools", None, offsets[k] + first, text,
                        tool_index=k, anchor=name, excerpt=f"tool {name!r}: {raw[first : first + 40]}",
                    )  # fmt: skip
                    continue
                for span in _diff_spans(old, raw):
                    self._classify(
                        ri, "tools", None, old, raw, span, BreakerKind.TOOL_SET, tool_index=k, base=offsets[k]
                    )
            for name in set(pc) - set(cc):
                self._add(
                    BreakerKind.TOOL_SET, ri, "tools", None, len(text), text,
                    anchor=f"-{name}", excerpt=f"tool {name!r} removed",
                )  # fmt: skip

    @staticmethod
    def _tool_offsets(tools: Sequence[Mapping[str, Any]]) -> list[int]:
        offsets = []
        pos = 1  # after "["
        for t in tools:
            offsets.append(pos)
            pos += len(tools_text([t])) - 2 + 1  # the tool's JSON plus the comma
        return offsets

    def system_pass(self) -> None:
        for ri in range(1, len(self.reqs)):
            pa, pb = self.secs[ri - 1].system, self.secs[ri].system
            for mi in range(pb[0], min(pa[1], pb[1])):
                a = message_text(self.reqs[ri - 1].messages[mi])
                b = message_text(self.reqs[ri].messages[mi])
                if a == b:
                    continue
                if not _same_template(a, b):
                    continue
                for span in _diff_spans(a, b):
                    self._classify(ri, "system", mi, a, b, span, BreakerKind.PER_USER_DATA)

    def few_shot_pass(self) -> None:
        order = self.layout.few_shot_order
        if not order:
            return
        rank = {k: i for i, k in enumerate(order)}
        for ri, r in enumerate(self.reqs):
            sec = self.secs[ri]
            groups = _split_groups(r.messages, *sec.few_shot)
            keys = ["\x01".join(message_key(m) for m in r.messages[a:b]) for a, b in groups]
            ranks = [rank.get(k, -1) for k in keys]
            if ranks == sorted(ranks):
                continue
            k = next(i for i in range(len(ranks)) if ranks[i] != sorted(ranks)[i])
            mi = groups[k][0]
            self._add(
                BreakerKind.FEW_SHOT_ORDER, ri, "few_shot", sec.few_shot[0], 0,
                message_text(r.messages[mi]), anchor="", excerpt=f"{len(groups)} example groups, first out of order at message {mi}",
            )  # fmt: skip

    def history_pass(self) -> None:
        """Consecutive requests of one conversation must re-send earlier turns byte-identical."""
        last_of: dict[str, int] = {}
        for ri, r in enumerate(self.reqs):
            sec = self.secs[ri]
            conv = self._conversation_key(r, sec.few_shot[1])
            if conv is None:
                continue
            pj = last_of.get(conv)
            last_of[conv] = ri
            if pj is None:
                continue
            p = self.reqs[pj]
            upto = min(len(p.messages), sec.new_turn[0] + 1, len(r.messages))
            changed: list[tuple[int, str, str]] = []
            same = 0
            for mi in range(sec.few_shot[1], upto):
                x, y = p.messages[mi], r.messages[mi]
                if x.role != y.role:
                    break
                a, b = message_text(x), message_text(y)
                if a == b:
                    same += 1
                elif not (mi == sec.new_turn[0] and len(p.messages) <= mi + 1):  # not a fresh new turn
                    changed.append((mi, a, b))
            if len(changed) > same:
                continue  # two conversations that open alike, not one conversation re-rendered
            for mi, a, b in changed:
                for span in _diff_spans(a, b):
                    self._classify(ri, sec.section_of(mi), mi, a, b, span, BreakerKind.HISTORY_REWRITE)

    def _conversation_key(self, r: Request, start: int) -> str | None:
        """The first user message after the examples: equal in every request of one conversation."""
        for m in r.messages[start:]:
            if m.role == "user":
                # Volatile values (a timestamp prefix) must not split one conversation in two.
                text = message_text(m)
                for v in reversed(find_volatile(text, dates="all")):
                    text = text[: v.start] + text[v.end :]
                return text[:2000]
        return None

    def latent_pass(self) -> None:
        """Values that will break the prefix when they change, in every request (first seen)."""
        seen: set[tuple[Any, ...]] = set()
        for ri, r in enumerate(self.reqs):
            sec = self.secs[ri]
            if r.tools:
                self._add_latent(seen, ri, "tools", None, tools_text(r.tools))
            for mi in range(sec.system[0], sec.few_shot[1]):
                self._add_latent(seen, ri, sec.section_of(mi), mi, message_text(r.messages[mi]))

    def _add_latent(
        self, seen: set[tuple[Any, ...]], ri: int, section: str, mi: int | None, text: str
    ) -> None:
        """Report each volatile value of ``text`` once, unless it was already seen changing."""
        for v in find_volatile(text):
            anchor = _anchor(text, v.start)
            key: tuple[Any, ...] = (v.kind, mi, anchor)
            if key in seen or self.found.has_observed(v.kind, mi, anchor):
                continue
            seen.add(key)
            self._add(v.kind, ri, section, mi, v.start, text, observed=False, anchor=anchor, excerpt=v.text)

    # -- the ideal prefix cache -----------------------------------------------------------------------
    @staticmethod
    def simulate(tok: list[_Tokenized], window: int) -> list[tuple[int, int | None]]:
        out: list[tuple[int, int | None]] = []
        for i, t in enumerate(tok):
            best, who = 0, None
            for j in range(max(0, i - window), i):
                n = _lcp(t.ids, tok[j].ids)
                if n > best:
                    best, who = n, j
            out.append((best, who))
        return out


def _iter_requests(requests: Any) -> list[Request]:
    if isinstance(requests, (Request, Mapping)):
        return [as_request(requests)]
    if isinstance(requests, (str, bytes)) or not isinstance(requests, Iterable):
        raise MessageFormatError(f"expected a request or a list of requests, got {type(requests).__name__}")
    return [as_request(r) for r in requests]


def analyze(
    requests: Request | Mapping[str, Any] | Iterable[Request | Mapping[str, Any]],
    *,
    model: str | None = None,
    window: int = 64,
    layout: PromptLayout | None = None,
    min_share: float = 0.5,
) -> LayoutReport:
    """Analyse one request or a stream for its stable prefix and everything that breaks it.

    ``model`` picks the tokenizer (default: the first request's model). ``window``: how many
    earlier requests the simulated prefix cache remembers. ``layout``: the layout to evaluate
    as the fix (default: ``PromptLayout.fit`` on the same stream).
    """
    check_number(window, "window", minimum=0, integer=True)
    check_number(min_share, "min_share", minimum=0, maximum=1)
    if layout is not None and not isinstance(layout, PromptLayout):
        raise ConfigError(f"layout must be a PromptLayout or None, got {type(layout).__name__}")
    reqs = _iter_requests(requests)
    if not reqs:
        raise EmptyInputError("analyze() needs at least one request")
    model = model or reqs[0].model
    encode = _Encoder(model)
    fitted = layout or PromptLayout.fit(reqs, min_share=min_share)
    run = _Analysis(reqs, encode, fitted)
    run.tools_pass()
    run.system_pass()
    run.few_shot_pass()
    run.history_pass()
    run.latent_pass()
    breakers = tuple(run.found.breakers())

    before = run.simulate(run.tok, window)
    laid = [fitted.apply(r, model=model).request for r in reqs]
    tok_after = [_Tokenized(r, encode) for r in laid]
    after = run.simulate(tok_after, window)

    from tokenlean.layout.reorder import stable_prefix_tokens

    per = tuple(
        RequestLayout(
            index=i,
            prompt_tokens=run.tok[i].total,
            reused_prefix_tokens=before[i][0],
            reused_prefix_tokens_after=after[i][0],
            stable_prefix_tokens=stable_prefix_tokens(reqs[i], fitted, model=model),
            best_match=before[i][1],
        )
        for i in range(len(reqs))
    )
    common = run.tok[0].total
    for t in run.tok[1:]:
        common = min(common, _lcp(run.tok[0].ids, t.ids))
    full = ["".join(t.seg_texts) for t in run.tok]
    common_text = _common_prefix(full) if len(full) > 1 else full[0]
    notes: list[str] = []
    if len(reqs) == 1:
        notes.append("one request: breakers are inferred from value patterns only (observed=False)")
        common = stable_prefix_tokens(reqs[0], fitted, model=model)
        turn = run.secs[0].new_turn[0]
        t0 = run.tok[0]
        common_text = "".join(
            x for x, mi in zip(t0.seg_texts, t0.seg_msg, strict=True) if mi is None or mi < turn
        )
    return LayoutReport(
        requests=len(reqs),
        prompt_tokens=sum(t.total for t in run.tok),
        reused_prefix_tokens=sum(b for b, _ in before),
        reused_prefix_tokens_after=sum(a for a, _ in after),
        prompt_tokens_after=sum(t.total for t in tok_after),
        common_prefix_tokens=common,
        common_prefix_text=common_text,
        breakers=breakers,
        per_request=per,
        layout=fitted,
        model=model,
        notes=tuple(notes),
    )
