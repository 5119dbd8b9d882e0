"""Re-lay a request stable-first / volatile-last, without changing what the model reads.

The order we aim for is the order in which content changes least often: tools and system
instructions (stable for the whole deployment), few-shot examples, reference documents, the
conversation history (append-only, so stable turn over turn), and last the new turn. Three
things routinely break that order, and each fix is one a model reads the same way:

* tool definitions serialised with a different key order or list order per request: we send
  them with sorted keys, in name order (JSON object key order carries no meaning);
* per-request values (clock, request id, nonce) inside the system prompt: we move the *lines*
  that carry them, verbatim, out of the system prompt to the front of the new turn
  (``volatile_placement="new_turn"``) or to the end of the system prompt (``"system_tail"``).
  Per-conversation values (per-user fields learned by ``fit``, "today" dates) go to the start
  of the conversation instead, when the layout was fitted on a stream: every later turn then
  re-sends the same bytes and the history stays cacheable;
* few-shot examples shuffled per request: we put the example groups, each kept whole, in one
  canonical order learned from the stream.

What we never touch: the order of messages within the history and the new turn, which message
answers which tool call, and any content other than the moved lines. ``verify_layout`` checks
exactly this and ``PromptLayout.apply`` runs it on every result; a property test drives it with
generated conversations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tokenlean import events
from tokenlean._checks import check_number
from tokenlean.errors import LayoutError, MessageFormatError
from tokenlean.layout.canonical import (
    LINE_LABEL,
    Sections,
    as_request,
    canonical_json,
    canonical_tools,
    embedded_json,
    header_length,
    message_key,
    request_segments,
    sections,
)
from tokenlean.layout.patterns import BreakerKind, find_volatile
from tokenlean.types import Message, Request

__all__ = ["Move", "PromptLayout", "Reordered", "reorder", "stable_prefix_tokens", "verify_layout"]

Placement = Literal["new_turn", "system_tail"]
_PER_REQUEST = frozenset({BreakerKind.TIMESTAMP, BreakerKind.UUID, BreakerKind.REQUEST_ID})

_CONTEXT_HEADER = ""  # moved lines are sent verbatim; no wording of ours is added to the prompt


@dataclass(frozen=True, slots=True)
class Move:
    """One change ``reorder`` made, for the record."""

    kind: str  # "tools_canonical" | "json_canonical" | "volatile_moved" | "few_shot_ordered"
    message_index: int | None
    detail: str


@dataclass(frozen=True, slots=True)
class Reordered:
    """The re-laid request, the original, what moved, and the stable prefix before and after."""

    request: Request
    original: Request
    moves: tuple[Move, ...]
    stable_prefix_tokens_before: int
    stable_prefix_tokens_after: int
    source_index: tuple[int, ...] = ()
    """For each message of ``request``, the index of the message of ``original`` it comes from
    (only few-shot groups ever change places); adapters use it to map back to their own types."""

    @property
    def changed(self) -> bool:
        return bool(self.moves)

    @property
    def gain_tokens(self) -> int:
        """Tokens that move into the stable (cacheable) prefix."""
        return self.stable_prefix_tokens_after - self.stable_prefix_tokens_before


def _split_groups(msgs: Sequence[Message], start: int, end: int) -> list[tuple[int, int]]:
    """Example groups in ``msgs[start:end]``: each starts at a user message."""
    groups: list[tuple[int, int]] = []
    i = start
    while i < end:
        j = i + 1
        while j < end and msgs[j].role != "user":
            j += 1
        groups.append((i, j))
        i = j
    return groups


def _group_key(msgs: Sequence[Message], a: int, b: int) -> str:
    return "\x01".join(message_key(m) for m in msgs[a:b])


def _canonical_embedded_json(text: str) -> str:
    """``text`` with every embedded JSON object re-serialised with sorted keys (same layout style)."""
    spans = embedded_json(text)
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    for start, end, value in spans:
        raw = text[start:end]
        if "\n" in raw:
            import json

            from tokenlean.layout.canonical import _sorted

            new = json.dumps(_sorted(value), ensure_ascii=False, indent=2)
        else:
            compact = ": " not in raw and ", " not in raw
            new = canonical_json(value, compact=compact)
        out.append(text[pos:start])
        out.append(new)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


@dataclass(frozen=True)
class PromptLayout:
    """How to lay requests out; ``fit`` learns the stream-specific parts from sample requests.

    ``stable_lines``: lines of the system prompt seen in most requests of the stream; any other
    non-blank system line is treated as per-request (``None``: only pattern-detected values
    count). ``few_shot_order``: the canonical order of example groups seen shuffled.
    """

    sort_tools: bool = True
    canonical_json: bool = True
    move_volatile: bool = True
    volatile_placement: Placement = "new_turn"
    order_few_shot: bool = True
    stable_lines: frozenset[str] | None = None
    few_shot_order: tuple[str, ...] = ()
    verify: bool = True
    _few_shot_keys: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.volatile_placement not in ("new_turn", "system_tail"):
            raise LayoutError(
                f"volatile_placement must be 'new_turn' or 'system_tail', got {self.volatile_placement!r}"
            )
        # ``fit`` fills these; a hand-built layout gets its shapes checked here, not mid-request.
        if not isinstance(self.few_shot_order, tuple) or not all(
            isinstance(g, str) for g in self.few_shot_order
        ):
            raise LayoutError("few_shot_order must be a tuple of example-group keys (str)")
        if self.stable_lines is not None and (
            not isinstance(self.stable_lines, (frozenset, set))
            or not all(isinstance(line, str) for line in self.stable_lines)
        ):
            raise LayoutError("stable_lines must be a frozenset of system-prompt lines (str) or None")
        keys: set[str] = set()
        for g in self.few_shot_order:
            keys.update(g.split("\x01"))
        object.__setattr__(self, "_few_shot_keys", frozenset(keys))

    @property
    def few_shot_keys(self) -> frozenset[str]:
        return self._few_shot_keys

    # -- learning ----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        requests: Iterable[Request | Mapping[str, Any]],
        *,
        min_share: float = 0.5,
        **options: Any,
    ) -> PromptLayout:
        """Learn the stable system lines and the shuffled few-shot groups of a request stream.

        A system line is stable when it occurs in at least ``min_share`` of the requests (and
        in two or more). Example groups right after the system prompt that occur in that many
        requests but in different relative orders are the shuffled few-shot examples; their
        canonical order is the order of first appearance.
        """
        check_number(min_share, "min_share", minimum=0, maximum=1)
        if isinstance(requests, (str, bytes, Mapping)) or not isinstance(requests, Iterable):
            raise MessageFormatError(f"fit() takes a list of requests, got {type(requests).__name__}")
        reqs = [as_request(r) for r in requests]
        base = cls(**options)
        n = len(reqs)
        if n < 2:
            return base
        need = max(2, int(min_share * n + 0.999999))
        line_count: Counter[str] = Counter()
        for r in reqs:
            sec = sections(r)
            seen: set[str] = set()
            for m in r.messages[sec.system[0] : sec.system[1]]:
                if isinstance(m.content, str):
                    text = _canonical_embedded_json(m.content) if base.canonical_json else m.content
                    seen.update(line for line in _lines(text) if line.strip())
            line_count.update(seen)
        # A labelled line seen with two values ("Customer name: A" / "... B") is a per-request
        # or per-user slot, however often each value recurs.
        values: dict[str, set[str]] = {}
        for line in line_count:
            label = LINE_LABEL.match(line)
            if label:
                values.setdefault(label.group(1), set()).add(line)
        slots = {line for lines in values.values() if len(lines) > 1 for line in lines}
        stable = frozenset(
            line for line, c in line_count.items() if c >= need and (line not in slots or c >= 0.9 * n)
        )

        # Leading example groups and their positions per request.
        group_count: Counter[str] = Counter()
        orders: list[list[str]] = []
        for r in reqs:
            sec = sections(r)
            groups = _split_groups(r.messages, sec.system[1], sec.new_turn[0])
            keys = [_group_key(r.messages, a, b) for a, b in groups]
            orders.append(keys)
            group_count.update(set(keys))
        shared = {k for k, c in group_count.items() if c >= need}
        leading: list[list[str]] = []
        for keys in orders:
            run: list[str] = []
            for k in keys:
                if k not in shared:
                    break
                run.append(k)
            leading.append(run)
        first_pos: dict[str, tuple[int, int]] = {}
        ordered_pairs: set[tuple[str, str]] = set()
        for ri, run in enumerate(leading):
            for pi, k in enumerate(run):
                first_pos.setdefault(k, (ri, pi))
                ordered_pairs.update((k, later) for later in run[pi + 1 :])
        shuffled = {k for pair in ordered_pairs if (pair[1], pair[0]) in ordered_pairs for k in pair}
        if not shuffled:
            order: tuple[str, ...] = ()
        else:
            # Examples: the leading groups up to the last shuffled one (later groups are history).
            members = set(shuffled)
            for run in leading:
                last = max((i for i, k in enumerate(run) if k in shuffled), default=-1)
                members.update(run[: last + 1])
            order = tuple(sorted(members, key=lambda k: first_pos[k]))
        return replace(base, stable_lines=stable, few_shot_order=order)

    # -- applying ----------------------------------------------------------------------------
    def sections(self, request: Request) -> Sections:
        return sections(request, self.few_shot_keys)

    def volatile_line(self, line: str) -> bool:
        """Whether a system-prompt line is per-request under this layout."""
        if not line.strip():
            return False
        if find_volatile(line):
            return True
        return self.stable_lines is not None and line not in self.stable_lines

    def apply(self, request: Request | Mapping[str, Any], *, model: str | None = None) -> Reordered:
        """The request re-laid stable-first; see the module docstring for what may move."""
        original = as_request(request)
        moves: list[Move] = []
        tools = original.tools
        if self.sort_tools and tools:
            canon = canonical_tools(tools)
            if [dict(t) for t in tools] != list(canon) or list(map(canonical_json, tools)) != list(
                map(canonical_json, canon)
            ):
                moves.append(Move("tools_canonical", None, f"{len(tools)} tools: keys sorted, name order"))
            elif any(list(dict(t)) != list(c) for t, c in zip(tools, canon, strict=True)):
                moves.append(Move("tools_canonical", None, "tool keys sorted"))
            tools = canon
        msgs = list(original.messages)
        source = list(range(len(msgs)))
        sec = self.sections(original)

        # System block: canonical JSON, then move per-request lines out.
        moved: list[str] = []
        last_system: int | None = None
        for i in range(sec.system[0], sec.system[1]):
            m = msgs[i]
            if not isinstance(m.content, str):
                continue  # multimodal system content is left exactly as sent
            last_system = i
            text = m.content
            if self.canonical_json:
                new = _canonical_embedded_json(text)
                if new != text:
                    moves.append(Move("json_canonical", i, "embedded JSON keys sorted"))
                    text = new
            if self.move_volatile:
                keep: list[str] = []
                for line in _lines(text):
                    (moved if self.volatile_line(line) else keep).append(line)
                if len(keep) != len(_lines(text)):
                    n_moved = len(_lines(text)) - len(keep)
                    moves.append(Move("volatile_moved", i, f"{n_moved} per-request line(s) moved out"))
                    text = "".join(keep)
                    if not m.content.endswith("\n") and text.endswith("\n"):
                        text = text[:-1]
            if text != m.content:
                msgs[i] = replace(m, content=text)

        # Few-shot groups: one canonical order.
        if self.order_few_shot and self.few_shot_order and sec.few_shot[1] > sec.few_shot[0]:
            rank = {k: i for i, k in enumerate(self.few_shot_order)}
            groups = _split_groups(msgs, *sec.few_shot)
            keyed = [(_group_key(msgs, a, b), a, b) for a, b in groups]
            if all(k in rank for k, _, _ in keyed):
                ordered = sorted(keyed, key=lambda t: rank[t[0]])
                if [t[1] for t in ordered] != [t[1] for t in keyed]:
                    block = [m for _, a, b in ordered for m in msgs[a:b]]
                    msgs[sec.few_shot[0] : sec.few_shot[1]] = block
                    source[sec.few_shot[0] : sec.few_shot[1]] = [
                        i for _, a, b in ordered for i in range(a, b)
                    ]
                    moves.append(Move("few_shot_ordered", sec.few_shot[0], f"{len(groups)} example groups"))

        if moved:
            per_request = [line for line in moved if _per_request(line)]
            per_conv = [line for line in moved if not _per_request(line)]
            turn = sec.new_turn[0]
            first = sec.history[0]
            can_place = turn < len(msgs) and msgs[turn].role == "user"
            if self.volatile_placement == "new_turn" and can_place:
                # Only a layout fitted on a stream knows where examples end and the conversation
                # starts; unfitted, per-conversation lines go with the new turn too.
                fitted = self.stable_lines is not None
                if per_conv and fitted and first < turn and msgs[first].role == "user":
                    # Constant for the conversation: at its start, so every later turn re-sends
                    # the same bytes and the history stays cacheable.
                    msgs[first] = _prepend(msgs[first], per_conv)
                    per_conv = []
                msgs[turn] = _prepend(msgs[turn], per_conv + per_request)
            elif last_system is not None:
                sm = msgs[last_system]
                base = sm.content if isinstance(sm.content, str) else ""
                sep = "" if (not base or base.endswith("\n")) else "\n"
                msgs[last_system] = replace(sm, content=base + sep + "".join(moved).rstrip("\n"))

        laid = replace(original, messages=tuple(msgs), tools=tuple(tools))
        if self.verify:
            verify_layout(original, laid, self)
        before = stable_prefix_tokens(original, self, model=model)
        after = stable_prefix_tokens(laid, self, model=model)
        if events.enabled():
            events.emit(
                events.LAYOUT,
                {
                    "tokenlean.layout.breakers": len(moves),
                    "tokenlean.layout.breaker_kinds": tuple(sorted({m.kind for m in moves})),
                    "tokenlean.layout.stable_prefix_tokens_before": before,
                    "tokenlean.layout.stable_prefix_tokens_after": after,
                },
            )
        return Reordered(laid, original, tuple(moves), before, after, tuple(source))


def _per_request(line: str) -> bool:
    """A clock, an id or a nonce changes every request; dates and per-user fields per conversation."""
    return any(v.kind in _PER_REQUEST for v in find_volatile(line))


def _prepend(m: Message, lines: list[str]) -> Message:
    """``m`` with ``lines`` (verbatim) in front of its text; other content parts untouched."""
    if not lines:
        return m
    block = _CONTEXT_HEADER + "".join(lines)
    if not block.endswith("\n"):
        block += "\n"
    if isinstance(m.content, tuple):
        part: dict[str, Any] = {"type": "text", "text": block}
        return replace(m, content=(part, *m.content))
    return replace(m, content=block + (m.content or ""))


def reorder(
    request: Request | Mapping[str, Any],
    layout: PromptLayout | None = None,
    *,
    model: str | None = None,
) -> Reordered:
    """Re-lay one request with ``layout`` (default: ``PromptLayout()``, pattern-based only)."""
    if layout is not None and not isinstance(layout, PromptLayout):
        raise LayoutError(f"layout must be a PromptLayout or None, got {type(layout).__name__}")
    return (layout or PromptLayout()).apply(request, model=model)


# -- stable prefix --------------------------------------------------------------------------------
def _volatile_offset(text: str, layout: PromptLayout, system: bool) -> int | None:
    spans = find_volatile(text)
    first = spans[0].start if spans else None
    if system and layout.stable_lines is not None:
        pos = 0
        for line in _lines(text):
            if line.strip() and line not in layout.stable_lines and not find_volatile(line):
                first = pos if first is None else min(first, pos)
                break
            pos += len(line)
    return first


def stable_prefix_tokens(
    request: Request | Mapping[str, Any],
    layout: PromptLayout | None = None,
    *,
    model: str | None = None,
) -> int:
    """Tokens of the serialised request before its first per-request value or its new turn.

    This is what a prompt cache can reuse from one request to the next of the same kind.
    """
    from tokenlean.tokens import get_counter

    req = as_request(request)
    layout = layout or PromptLayout()
    counter = get_counter(model or req.model)
    sec = layout.sections(req)
    total = 0
    for seg in request_segments(req):
        if seg.kind == "tools":
            off = _volatile_offset(seg.text, layout, system=False)
            if off is not None:
                return total + counter.count(seg.text[:off])
            total += counter.count(seg.text)
            continue
        i = seg.message_index
        assert i is not None
        if i >= sec.new_turn[0]:
            return total
        m = req.messages[i]
        head = header_length(m)
        body = seg.text[head:]
        in_system = sec.system[0] <= i < sec.system[1] and isinstance(m.content, str)
        off = _volatile_offset(body, layout, system=in_system)
        if off is not None:
            return total + counter.count(seg.text[: head + off])
        total += counter.count(seg.text)
    return total


# -- safety ----------------------------------------------------------------------------------------
def _structure(m: Message) -> tuple[str, tuple[str, ...], str | None, str | None]:
    return (m.role, tuple(c.id for c in m.tool_calls), m.tool_call_id, m.name)


def verify_layout(original: Request, laid: Request, layout: PromptLayout | None = None) -> None:
    """Raise ``LayoutError`` unless ``laid`` keeps everything a model could read differently.

    Checked: the same number of messages; outside the few-shot block every message keeps its
    position, role, name and tool-call ids (so history order and tool-call pairing are
    untouched) and its tool calls byte for byte; inside it, the example groups are a
    permutation of the original groups, each group intact; every tool result still follows the
    assistant message that issued its call; the tool set is the same.
    """
    a, b = original.messages, laid.messages
    if len(a) != len(b):
        raise LayoutError(f"layout changed the number of messages: {len(a)} -> {len(b)}")
    sec = sections(original, layout.few_shot_keys if layout else frozenset())
    fs = range(*sec.few_shot)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if i in fs:
            continue
        if _structure(x) != _structure(y) or x.tool_calls != y.tool_calls:
            raise LayoutError(f"layout changed message {i} ({x.role}) outside the few-shot block")
    if sec.few_shot[1] > sec.few_shot[0]:
        ga = Counter(_group_key(a, s, e) for s, e in _split_groups(a, *sec.few_shot))
        gb = Counter(_group_key(b, s, e) for s, e in _split_groups(b, *sec.few_shot))
        if ga != gb:
            raise LayoutError("layout changed the content of few-shot examples")
    issued: dict[str, int] = {}
    for i, m in enumerate(b):
        for c in m.tool_calls:
            issued[c.id] = i
        if m.role == "tool" and m.tool_call_id in {c.id for x in a for c in x.tool_calls}:
            j = issued.get(m.tool_call_id or "")
            if j is None or j > i:
                raise LayoutError(f"tool result {m.tool_call_id!r} no longer follows its call")
    if sorted(map(canonical_json, original.tools)) != sorted(map(canonical_json, laid.tools)):
        raise LayoutError("layout changed the tool definitions")
