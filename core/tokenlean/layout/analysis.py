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

import re
from collections.abc import Iterable, Mapping, Sequence
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
    tool_name,
    tools_text,
)
from tokenlean.layout.diff import (
    _anchor,
    _common_prefix,
    _diff_spans,
    _Encoder,
    _lcp,
    _line_at,
    _same_template,
    _Tokenized,
)
from tokenlean.layout.patterns import BreakerKind, find_volatile
from tokenlean.layout.reorder import PromptLayout, _split_groups
from tokenlean.layout.report import Breaker, LayoutReport, RequestLayout, _Found
from tokenlean.types import Request

__all__ = ["Breaker", "LayoutReport", "RequestLayout", "analyze"]


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
