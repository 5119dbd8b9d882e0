"""Compaction as composable steps: small named policies a ``Compactor`` runs in order.

The model is LangChain's ``ContextEditingMiddleware(edits=[ClearToolUsesEdit(...)])``: each step
does one thing to the request, and the pipeline is a list a user can reorder, shorten or extend::

    from tokenlean.compaction import Compactor
    from tokenlean.compaction.steps import (
        Dedupe, KeepLastTurns, KeepLastUser, KeepSystem, MaskObservations, SelectUnits,
    )

    compactor = Compactor(
        steps=[KeepSystem(), KeepLastUser(), KeepLastTurns(2), Dedupe(),
               MaskObservations(after=4), SelectUnits(keep=0.3, mode="lexical")],
        store="memory",
    )

``default_steps(**options)`` is the pipeline ``Compactor(**options)`` runs (the keyword options
of earlier versions map onto it one to one, with the same output). Pins come first (``KeepSystem``,
``KeepLastUser``, ``KeepLastTurns``, ``KeepShort``, ``ExcludeTools``): a pinned message is never
touched by the steps after it. Then whole-message policies (``Dedupe``, ``MaskObservations``),
then ``SelectUnits``, which shortens what is left to the token budget. Messages are never
removed, only shortened or replaced by a marker, so a tool call and its result stay together.

**Writing a step.** A step is any object with ``apply(state)`` (see ``State`` for what it can
read and the methods it changes the request with)::

    class MaskOldReasoning:
        '''Replace assistant messages older than ``after`` turns by a marker.'''

        def __init__(self, after: int = 6) -> None:
            self.after = after
            self.live_turns = after  # incremental mode: do not freeze younger messages yet

        def apply(self, state: State) -> None:
            if not state.chat:  # plain texts / compact_documents: nothing to do
                return
            for i in state.candidates():
                if state.messages[i].role == "assistant" and state.ages[i] >= self.after:
                    state.replace_whole(i, "reasoning", "earlier reasoning")

    # first, so it sees the old reasoning before SelectUnits shortens it
    Compactor(steps=[MaskOldReasoning(), *default_steps()])
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from re import Pattern
from typing import Any, get_args

from tokenlean._checks import check_number, str_items
from tokenlean.compaction.protect import ProtectedPatterns
from tokenlean.compaction.segment import Kind
from tokenlean.compaction.select import WS, keywords, select_units
from tokenlean.compaction.state import Mode, State, Step, render
from tokenlean.errors import ConfigError

__all__ = [
    "UNSET",
    "Dedupe",
    "ExcludeTools",
    "KeepLastTurns",
    "KeepLastUser",
    "KeepShort",
    "KeepSystem",
    "MaskObservations",
    "SelectUnits",
    "State",
    "Step",
    "default_steps",
]

_KINDS: tuple[str, ...] = get_args(Kind)
#: Tokens a chat request costs beyond its messages (the reply's priming).
REPLY_TOKENS = 3


class _Unset(enum.Enum):
    UNSET = "unset"


#: ``ratio``'s default marker: "not given" (0.5 unless ``keep`` is given instead).
UNSET = _Unset.UNSET


def kept_share(ratio: float | _Unset | None, keep: float | None, default: float = 0.5) -> float | None:
    """The share of tokens to keep, from ``ratio`` (share removed) or ``keep`` (share kept).

    ``ConfigError`` when both are given, or either is out of range.
    """
    if keep is not None:
        if ratio is not UNSET and ratio is not None:
            raise ConfigError(
                "give ratio (the share of tokens to remove) or keep (the share of tokens to keep), not both"
            )
        check_number(keep, "keep (the share of tokens to keep)", above=0, maximum=1)
        return float(keep)
    r = default if ratio is UNSET else ratio
    check_number(r, "ratio (the share of tokens to remove)", minimum=0, below=1, optional=True)
    return None if r is None else 1.0 - r


# -- pins -------------------------------------------------------------------------------------


class KeepSystem:
    """Keep system and developer prompts whole (they frame every turn)."""

    def apply(self, state: State) -> None:
        if state.chat:
            for i, m in enumerate(state.messages):
                if m.role in ("system", "developer"):
                    state.pin(i)


class KeepLastUser:
    """Keep the latest user message whole: it is the request being answered."""

    def apply(self, state: State) -> None:
        if not state.chat:
            return
        msgs = state.messages
        last = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].role == "user"), None)
        if last is not None:
            state.pin(last)


class KeepLastTurns:
    """Keep the last ``n`` turns whole: they are what the model is working on now.

    A turn starts at a user message, or at an assistant message that follows a tool result or
    another assistant message (one agent step).
    """

    def __init__(self, n: int = 2) -> None:
        check_number(n, "keep_last_turns", minimum=0, integer=True)
        self.n = n
        self.live_turns = n

    def apply(self, state: State) -> None:
        if state.chat:
            for i, age in enumerate(state.ages):
                if age < self.n:
                    state.pin(i)


class KeepShort:
    """Keep messages under ``min_tokens`` tokens whole: a marker would save next to nothing."""

    def __init__(self, min_tokens: int = 48) -> None:
        check_number(min_tokens, "min_tokens", minimum=0, integer=True)
        self.min_tokens = min_tokens

    def apply(self, state: State) -> None:
        if state.chat:
            for i in range(len(state.messages)):
                if state.content_tokens(i) < self.min_tokens:
                    state.pin(i)


class ExcludeTools:
    """Keep the outputs of the named tools whole (results the model must see exactly)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = frozenset(str_items(names, "exclude_tools"))

    def apply(self, state: State) -> None:
        if state.chat and self.names:
            for i, m in enumerate(state.messages):
                if m.role in ("tool", "function") and state.tool_of(i) in self.names:
                    state.pin(i)


# -- whole-message policies -------------------------------------------------------------------


class Dedupe:
    """Replace an earlier copy of a later message (a file read twice, a repeated tool output).

    Exact copies (up to whitespace) go; so do near-copies, when the message's line set and a later
    one's overlap by at least ``near_duplicate`` (Jaccard; 1.0 turns near-copies off). Only later
    messages of at least ``min_tokens`` count as copies. The latest copy is always kept.
    """

    def __init__(self, near_duplicate: float = 0.9, min_tokens: int = 48) -> None:
        check_number(near_duplicate, "near_duplicate", minimum=0, maximum=1)
        check_number(min_tokens, "min_tokens", minimum=0, integer=True)
        self.near_duplicate = near_duplicate
        self.min_tokens = min_tokens

    def apply(self, state: State) -> None:
        active = state.candidates() if state.chat else []
        if not active:
            return
        msgs = state.messages
        n = len(msgs)
        norm = {i: WS.sub(" ", msgs[i].text).strip() for i in range(n) if isinstance(msgs[i].content, str)}
        exact: dict[str, int] = {}
        for i in range(n - 1, -1, -1):
            if i in norm and len(norm[i]) > 0:
                exact.setdefault(norm[i], i)
        line_sets: dict[int, frozenset[str]] = {}

        def lines(i: int) -> frozenset[str]:
            s = line_sets.get(i)
            if s is None:
                s = frozenset(ln.strip() for ln in msgs[i].text.splitlines() if ln.strip())
                line_sets[i] = s
            return s

        big = [i for i in range(n) if i in norm and state.content_tokens(i) >= self.min_tokens]
        for i in active:
            later = exact.get(norm[i], i)
            if later > i:
                state.replace_whole(i, "dedupe", f"duplicate of message {later}")
                continue
            if self.near_duplicate < 1.0:
                li = lines(i)
                if len(li) < 3:
                    continue
                for j in big:
                    if j <= i:
                        continue
                    lj = lines(j)
                    inter = len(li & lj)
                    if inter and inter / len(li | lj) >= self.near_duplicate:
                        state.replace_whole(i, "dedupe", f"near-duplicate of message {j}")
                        break


class MaskObservations:
    """Replace tool results at least ``after`` turns old by a marker naming the tool and size."""

    def __init__(self, after: int) -> None:
        check_number(after, "mask_observations_after", minimum=0, integer=True)
        self.after = after
        self.live_turns = after

    def apply(self, state: State) -> None:
        if not state.chat:
            return
        for i in state.candidates():
            if state.messages[i].role in ("tool", "function") and state.ages[i] >= self.after:
                state.replace_whole(i, "mask", f"output of {state.tool_of(i) or 'tool'}")


# -- unit selection ---------------------------------------------------------------------------


class SelectUnits:
    """Shorten what is left to a token budget, keeping the units that matter most, verbatim.

    The budget: ``target_tokens`` (absolute, for the whole request; it wins), else ``ratio``, the
    share of tokens to *remove* (0.9 keeps a tenth), or ``keep``, the share to *keep* (LLMLingua's
    ``rate``; 0.1 keeps a tenth). Give ``ratio`` or ``keep``, not both (``ConfigError``); with
    neither, ``ratio`` is 0.5; ``ratio=None`` and no target: no budget, the step does nothing.

    The candidate messages (or the texts given to ``compact_documents``, jointly) are cut into
    units (``kind`` / ``clauses``, see ``segment.py``), scored against the query (``mode``:
    ``"auto"`` uses embeddings when available and BM25 and cues otherwise; ``weights`` overrides
    the scorer's), and chosen greedily by priority: units matching ``protect`` patterns (and the
    default ones unless ``protect_defaults=False``) first, with ``relevance_reserve`` of the budget
    kept for the best-scored units; a unit whose embedding is at least ``novelty`` alike to a kept
    one is skipped (``None``: never); ``length_exponent`` > 0 favours short units; keeping a clause
    raises its sentence's other clauses by ``sibling_bonus``. When what must stay whole already
    fills a ``ratio`` budget, the old content is still cut by the ratio and ``budget_met`` reports
    the miss. In incremental mode each decision cuts its own messages by the ratio.
    """

    def __init__(
        self,
        *,
        ratio: float | _Unset | None = UNSET,
        keep: float | None = None,
        target_tokens: int | None = None,
        mode: Mode = "auto",
        weights: Mapping[str, float] | None = None,
        novelty: float | None = 0.95,
        length_exponent: float = 0.0,
        sibling_bonus: float = 4.0,
        relevance_reserve: float = 0.25,
        protect: Iterable[str | Pattern[str]] = (),
        protect_defaults: bool = True,
        kind: Kind = "auto",
        clauses: bool = True,
    ) -> None:
        self.keep = kept_share(ratio, keep)
        # the share removed, as given or implied by keep
        self.ratio: float | None = None
        if self.keep is not None:
            self.ratio = 1.0 - self.keep if isinstance(ratio, _Unset) or ratio is None else ratio
        check_number(target_tokens, "target_tokens", minimum=0, integer=True, optional=True)
        check_number(novelty, "novelty", minimum=-1, maximum=1, optional=True)
        check_number(relevance_reserve, "relevance_reserve", minimum=0, maximum=1)
        check_number(length_exponent, "length_exponent", minimum=-1e6, maximum=1e6)
        check_number(sibling_bonus, "sibling_bonus", minimum=-1e6, maximum=1e6)
        if mode not in ("auto", "lexical", "embedding"):
            raise ConfigError(f"mode must be auto, lexical or embedding, got {mode!r}")
        if kind not in _KINDS:
            raise ConfigError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}")
        if weights is not None and (
            not isinstance(weights, Mapping)
            or not all(isinstance(k, str) for k in weights)
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in weights.values())
        ):
            raise ConfigError("weights must map feature names to finite numbers")
        self.target_tokens = target_tokens
        self.mode: Mode = mode
        self.weights = dict(weights) if weights is not None else None
        self.novelty = novelty
        self.length_exponent = length_exponent
        self.sibling_bonus = sibling_bonus
        self.relevance_reserve = relevance_reserve
        self.protected = ProtectedPatterns(_patterns(protect), defaults=protect_defaults)
        self.kind: Kind = kind
        self.clauses = clauses

    def budget(self, tokens_before: int) -> int | None:
        """The token budget for a request of ``tokens_before`` tokens (``None``: none)."""
        if self.target_tokens is not None:
            return self.target_tokens
        if self.keep is not None:
            return math.floor(tokens_before * self.keep)
        return None

    def apply(self, state: State) -> None:
        if state.chat:
            self._messages(state)
        else:
            self._documents(state)

    def _select(self, state: State, items: list[Any], query: str, budget: int) -> tuple[list[Any], bool]:
        svc = state.services
        pieces, omissions, _dropped, met = select_units(
            items,
            query,
            budget,
            services=svc,
            patterns=self.protected,
            template=svc.marker,
            weights=self.weights,
            embedder=svc.embedder(self.mode),
            novelty=self.novelty,
            length_exponent=self.length_exponent,
            sibling_bonus=self.sibling_bonus,
            relevance_reserve=self.relevance_reserve,
            session=state.session if state.chat else None,
            chat=state.chat,
            deadline=state.deadline,
        )
        state.omissions.extend(omissions)
        state.met = state.met and met
        return pieces, met

    def _messages(self, state: State) -> None:
        active = state.candidates()
        if not active or state.tokens_before is None:
            return
        budget = self.budget(state.tokens_before)
        if budget is None:
            return
        svc = state.services
        msgs, counts = state.messages, state.counts
        live = set(active)
        fixed = REPLY_TOKENS
        for i in range(len(msgs)):
            if i in live:
                continue
            changed = state.pieces[i] is not None or state.decided[i]
            fixed += svc.counter.count_message(state.out[i]) if changed else counts[i]
        own = sum(counts[i] for i in active)
        if state.session is not None and self.target_tokens is None and self.keep is not None:
            # incremental with a ratio: each decision cuts its own messages by the ratio
            unit_budget = math.floor(own * self.keep)
        else:
            unit_budget = budget - fixed
            if self.target_tokens is None and self.keep is not None:
                # When what must stay whole (system prompt, live turns) already fills the budget,
                # the old content still gets the ratio applied to itself, so the units that answer
                # the request survive; budget_met then reports the miss.
                unit_budget = max(unit_budget, math.floor(own * self.keep))
        if own <= unit_budget:
            return
        overhead = sum(counts[i] - svc.counter.count(msgs[i].text) for i in active)
        items = [svc.item(i, msgs[i].text, self.kind, self.clauses, state.deadline) for i in active]
        pieces, _met = self._select(state, items, state.query, max(0, unit_budget - overhead))
        for item, pc in zip(items, pieces, strict=True):
            state.set_pieces(item.index, pc, "select")

    def _documents(self, state: State) -> None:
        """Texts compete jointly for one budget; the query defaults to their own keywords."""
        svc = state.services
        docs = [m.text for m in state.messages]
        items = [svc.item(k, t, self.kind, self.clauses, state.deadline) for k, t in enumerate(docs)]
        # units tile the text and carry BPE-aligned whitespace: their counts sum to the text's
        before = sum(sum(it.tokens) for it in items)
        budget = self.budget(before)
        state.tokens_before, state.budget = before, budget
        if not any(docs) or budget is None or before <= budget:
            return
        query = state.query or keywords("\n".join(docs))
        state.query = query
        pieces, _met = self._select(state, items, query, budget)
        for k, pc in enumerate(pieces):
            state.pieces[k] = tuple(pc)
            state.out[k] = state.messages[k].with_text(render(docs[k], pc))
            state.decided[k] = True


def _patterns(protect: Iterable[str | Pattern[str]]) -> list[str | Pattern[str]]:
    if isinstance(protect, (str, bytes)) or not isinstance(protect, Iterable):
        raise ConfigError(f"protect must be a list of patterns, got {type(protect).__name__}")
    out = list(protect)
    for p in out:
        if not isinstance(p, (str, Pattern)):
            raise ConfigError(f"protect patterns must be str or compiled patterns, got {p!r}")
        if isinstance(p, str):
            try:
                re.compile(p)
            except re.error as exc:
                raise ConfigError(f"protect pattern {p!r} does not compile: {exc}") from exc
    return out


# -- the default pipeline ---------------------------------------------------------------------


def default_steps(
    *,
    ratio: float | _Unset | None = UNSET,
    keep: float | None = None,
    target_tokens: int | None = None,
    mode: Mode = "auto",
    weights: Mapping[str, float] | None = None,
    keep_system: bool = True,
    keep_last_user: bool = True,
    keep_last_turns: int = 2,
    mask_observations_after: int | None = None,
    dedupe: bool = True,
    near_duplicate: float = 0.9,
    min_tokens: int = 48,
    exclude_tools: Iterable[str] = (),
    protect: Iterable[str | Pattern[str]] = (),
    protect_defaults: bool = True,
    novelty: float | None = 0.95,
    length_exponent: float = 0.0,
    sibling_bonus: float = 4.0,
    relevance_reserve: float = 0.25,
    kind: Kind = "auto",
    clauses: bool = True,
) -> list[Step]:
    """The pipeline ``Compactor(**options)`` runs, from the same keyword options.

    ``KeepSystem`` (``keep_system``), ``KeepLastUser`` (``keep_last_user``),
    ``KeepLastTurns(keep_last_turns)``, ``KeepShort(min_tokens)``, ``ExcludeTools(exclude_tools)``,
    ``Dedupe(near_duplicate, min_tokens)`` (``dedupe``), ``MaskObservations(mask_observations_after)``
    (when not ``None``), then ``SelectUnits`` with the remaining options. ``ratio`` is the share of
    tokens to *remove*, ``keep`` the share to *keep* (give one; see ``SelectUnits``).
    """
    select = SelectUnits(
        ratio=ratio,
        keep=keep,
        target_tokens=target_tokens,
        mode=mode,
        weights=weights,
        novelty=novelty,
        length_exponent=length_exponent,
        sibling_bonus=sibling_bonus,
        relevance_reserve=relevance_reserve,
        protect=protect,
        protect_defaults=protect_defaults,
        kind=kind,
        clauses=clauses,
    )
    turns = KeepLastTurns(keep_last_turns)
    short = KeepShort(min_tokens)
    tools = ExcludeTools(exclude_tools)
    dedupe_step = Dedupe(near_duplicate, min_tokens)
    mask = None if mask_observations_after is None else MaskObservations(mask_observations_after)
    steps: list[Step] = []
    if keep_system:
        steps.append(KeepSystem())
    if keep_last_user:
        steps.append(KeepLastUser())
    steps += [turns, short]
    if tools.names:
        steps.append(tools)
    if dedupe:
        steps.append(dedupe_step)
    if mask is not None:
        steps.append(mask)
    steps.append(select)
    return steps
