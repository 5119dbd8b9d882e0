"""The compactor: message-level policies, then budgeted unit selection, all verbatim.

Pipeline for one call (``Compactor.compact``):

1. **Protect whole messages**: system / developer prompts, the latest user turn and the last
   ``keep_last_turns`` turns are never touched (they are what the model is working on now), and
   neither are messages shorter than ``min_tokens`` (not worth a marker) or outputs of tools in
   ``exclude_tools``. Multimodal messages are left as they are: an image is never dropped silently.
2. **De-duplicate**: when the same file or tool output appears twice (exactly, or near-exactly by
   line-set Jaccard), the earlier copy is replaced by a marker; the latest is kept.
3. **Observation masking**: tool results older than ``mask_observations_after`` turns are replaced
   by a marker naming the tool and the size.
4. **Unit selection**: the remaining old messages are segmented into units (``segment.py``),
   scored against the query (``scoring.py``), and chosen by a greedy that fills the token budget in
   order of priority (score, optionally per token): protected units first (with a quarter of the
   budget still reserved for the best-scored units, so paths in every observation cannot crowd
   out the line the user asks about), near-duplicates skipped (MMR-style), and the rest of a
   sentence promoted once one of its clauses is kept. Output keeps the original order; runs of
   dropped units become one marker each (or vanish with ``marker=None``). When the parts that
   must stay whole already exceed a ``ratio`` budget, the old content is still cut by the ratio
   and ``budget_met`` says the budget was missed.

Messages are never removed, only shortened, so an assistant tool call and its tool results can
never be separated. Every omission marker carries a handle; ``expand_omitted(handle)`` returns the
omitted text byte for byte.

**Incremental mode** (``incremental=True``) is for multi-turn sessions: a message is decided once,
when it leaves the live window, and that decision is frozen, so the compacted prefix is byte-
identical from call to call (provider prompt caches keep hitting) and a call only pays for the
messages that are new. Segmentations, tokenisations, token counts and embeddings are cached by
content hash.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import heapq
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from re import Pattern
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from tokenlean._checks import check_number, str_items
from tokenlean.compaction.omissions import (
    OmissionStore,
    find_handle,
    make_handle,
    open_omission_store,
)
from tokenlean.compaction.protect import ProtectedPatterns
from tokenlean.compaction.scoring import (
    AGENT_WEIGHTS,
    BM25,
    DEFAULT_WEIGHTS,
    DOCUMENT_WEIGHTS,
    LEXICAL_DOCUMENT_WEIGHTS,
    LEXICAL_WEIGHTS,
    STOPWORDS,
    EmbeddingAbandoned,
    UnitFeatures,
    features,
    tokenize,
)
from tokenlean.compaction.segment import Kind, Unit, segment
from tokenlean.errors import (
    ConfigError,
    InputError,
    MessageFormatError,
    TextEncodingError,
    UnknownHandleError,
    VerbatimViolation,
)
from tokenlean.tokens import TOKENS_PER_MESSAGE, get_counter
from tokenlean.types import Message, Request

if TYPE_CHECKING:
    from tokenlean.embeddings import Embedder

__all__ = [
    "DEFAULT_MARKER",
    "DEFAULT_MASK_MARKER",
    "Compacted",
    "Compactor",
    "Omission",
    "compact_text",
]

log = logging.getLogger("tokenlean.compaction")

DEFAULT_MARKER = "[… {tokens} tokens omitted · {handle} …]"
DEFAULT_MASK_MARKER = "[… {what}: {tokens} tokens omitted · {handle} …]"

Mode = Literal["auto", "lexical", "embedding"]
Policy = Literal["dedupe", "mask", "select"]


# -- omission store --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Omission:
    """One omitted run: which message, which character range(s), why, and its handle."""

    handle: str
    message: int
    ranges: tuple[tuple[int, int], ...]
    tokens: int
    policy: str
    marker: str


class _OutOfTime(Exception):
    """A call's deadline passed before scoring could start: the caller passes messages through."""


# Segmenting one text runs without a deadline check inside, so it is started only when its
# estimated cost still fits before the deadline: otherwise a 5 MB message reached with 1 s left
# overran the deadline by the whole of its segmentation. The cost per character was measured on
# a 2-core machine (5 MB: 1.0 s to segment and tokenise) and is taken 2.5 times: a busy machine
# runs slower, and passing through beats running late.
_SEGMENT_S_PER_CHAR = 5e-7


def _fits(deadline: float | None, cost_s: float) -> bool:
    """Whether work estimated at ``cost_s`` seconds can still finish before ``deadline``."""
    return deadline is None or time.monotonic() + cost_s <= deadline


# -- result ----------------------------------------------------------------------------------

Piece = tuple[int, int] | str  # a kept (start, end) range of the original text, or a marker


@dataclass(frozen=True)
class Compacted:
    """What a compaction did, and the proof that it stayed verbatim.

    ``kept[i]`` are the character ranges of message ``i``'s original text that survive (message
    order and count never change); ``dropped`` the tokens removed per policy; ``omissions`` every
    marker with its handle. ``verify()`` rebuilds each message from its pieces and raises
    ``VerbatimViolation`` unless every kept byte is the original's, in the original order.
    """

    messages: tuple[Message, ...]
    original: tuple[Message, ...]
    tokens_before: int
    tokens_after: int
    dropped: Mapping[str, int]
    kept: tuple[tuple[tuple[int, int], ...], ...]
    omissions: tuple[Omission, ...]
    budget: int | None
    budget_met: bool
    query: str = ""
    request: Request | None = None
    _pieces: tuple[tuple[Piece, ...] | None, ...] = field(default=(), repr=False)

    @property
    def reduction(self) -> float:
        """Share of tokens removed (0.62 = 62% fewer tokens)."""
        return 0.0 if self.tokens_before <= 0 else 1.0 - self.tokens_after / self.tokens_before

    @property
    def text(self) -> str:
        """The compacted text (for a text input: its single message; else messages joined)."""
        return "\n".join(m.text for m in self.messages)

    def kept_lines(self, index: int) -> tuple[tuple[int, int], ...]:
        """1-based inclusive line ranges of message ``index`` that were kept (whole or in part)."""
        src = self.original[index].text
        out: list[tuple[int, int]] = []
        for a, b in self.kept[index]:
            la = src.count("\n", 0, a) + 1
            lb = src.count("\n", 0, max(a, b - 1)) + 1
            if out and la <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(lb, out[-1][1]))
            else:
                out.append((la, lb))
        return tuple(out)

    def to_openai(self) -> list[dict[str, Any]]:
        return [m.to_openai() for m in self.messages]

    def verify(self) -> None:
        """Prove the verbatim property; raise ``VerbatimViolation`` with the first offence."""
        if len(self.messages) != len(self.original):
            raise VerbatimViolation(f"message count changed: {len(self.original)} -> {len(self.messages)}")
        markers = {o.marker for o in self.omissions}
        for i, (new, old) in enumerate(zip(self.messages, self.original, strict=True)):
            if (new.role, new.tool_calls, new.tool_call_id, new.name) != (
                old.role,
                old.tool_calls,
                old.tool_call_id,
                old.name,
            ):
                raise VerbatimViolation(f"message {i}: role, tool calls or ids changed")
            pieces = self._pieces[i] if i < len(self._pieces) else None
            if pieces is None:
                if new.content != old.content:
                    raise VerbatimViolation(f"message {i}: changed without a record of what was kept")
                continue
            src = old.text
            rebuilt: list[str] = []
            last = -1
            for p in pieces:
                if isinstance(p, str):
                    if p not in markers:
                        raise VerbatimViolation(f"message {i}: inserted text {p[:40]!r} is not a marker")
                    rebuilt.append(p)
                    continue
                a, b = p
                if not (0 <= a < b <= len(src)) or a < last:
                    raise VerbatimViolation(f"message {i}: kept range {p} out of order or out of bounds")
                last = b
                rebuilt.append(src[a:b])
            if "".join(rebuilt) != new.text:
                raise VerbatimViolation(f"message {i}: text is not its kept ranges and markers")
            kept = tuple(p for p in pieces if not isinstance(p, str))
            if kept != self.kept[i]:
                raise VerbatimViolation(f"message {i}: reported kept ranges differ from the pieces")


# -- the compactor ---------------------------------------------------------------------------


def _hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _msg_key(m: Message) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(m.role.encode())
    h.update(repr((m.content, m.tool_calls, m.tool_call_id, m.name)).encode("utf-8", "surrogatepass"))
    return h.digest()


_WS = re.compile(r"\s+")
_BINARY = re.compile(r"[\x00-\x08\x0e-\x1f]")
_KINDS: tuple[str, ...] = get_args(Kind)


@dataclass
class _Frozen:
    key: bytes
    out_key: bytes
    pieces: tuple[Piece, ...] | None
    message: Message
    omissions: tuple[Omission, ...]
    dropped: dict[str, int]


@dataclass
class _Session:
    frozen: list[_Frozen] = field(default_factory=list)
    bm25: BM25 = field(default_factory=BM25)


@dataclass
class _Item:
    """A message (or a text) whose units compete for the budget."""

    index: int
    text: str
    units: list[Unit]
    tokens: list[int]


class Compactor:
    """Verbatim compaction of chat requests, message lists and plain texts.

    ``ratio`` is the share of tokens to *remove* (0.9 = keep a tenth) and ``target_tokens`` an
    absolute budget for the whole request (it wins when both are given); with neither, only the
    message-level policies run. ``mode="auto"`` uses embeddings when the ``embeddings`` extra is
    installed and falls back to lexical scoring (BM25 and cues) otherwise.

    ``deadline`` (seconds, ``None`` for none) bounds one call, because compaction sits in front
    of a model call the user is waiting for: embedding stops at the deadline (or when the
    embedder fails) and the call is scored lexically instead; if even that cannot start in time
    (a huge input), the messages pass through unchanged. Both are logged, neither is an error.
    ``embed_max_tokens`` caps the text one call embeds: above it, units are ranked lexically first
    and only the best of them, up to that many tokens, are embedded (the rest keep their lexical
    rank), so a multi-megabyte tool output costs seconds instead of minutes; ``None`` embeds all.
    ``max_sessions`` bounds the incremental sessions kept (least recently used go first; a
    forgotten session is decided afresh on its next call, see ``stats``).
    ``store`` keeps omitted text (see ``tokenlean.compaction.omissions``): ``None`` is the
    durable SQLite default, ``"memory"`` a volatile one, a path a SQLite file.
    """

    def __init__(
        self,
        *,
        ratio: float | None = 0.5,
        target_tokens: int | None = None,
        mode: Mode = "auto",
        embedder: Embedder | None = None,
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
        marker: str | None = DEFAULT_MARKER,
        mask_marker: str | None = DEFAULT_MASK_MARKER,
        kind: Kind = "auto",
        clauses: bool = True,
        incremental: bool = False,
        model: str | None = None,
        store: OmissionStore | str | os.PathLike[str] | None = None,
        deadline: float | None = 5.0,
        max_sessions: int = 10_000,
        embed_max_tokens: int | None = 32_000,
    ) -> None:
        # Every numeric option by name: NaN, a bool or a list would otherwise pass a comparison
        # (or fail one with TypeError) and surface as a wrong budget deep inside a call.
        check_number(deadline, "deadline (seconds)", above=0, optional=True)
        check_number(max_sessions, "max_sessions", minimum=1, integer=True)
        check_number(embed_max_tokens, "embed_max_tokens", minimum=1, integer=True, optional=True)
        check_number(ratio, "ratio (the share of tokens to remove)", minimum=0, below=1, optional=True)
        check_number(target_tokens, "target_tokens", minimum=0, integer=True, optional=True)
        check_number(keep_last_turns, "keep_last_turns", minimum=0, integer=True)
        check_number(min_tokens, "min_tokens", minimum=0, integer=True)
        check_number(
            mask_observations_after, "mask_observations_after", minimum=0, integer=True, optional=True
        )
        check_number(near_duplicate, "near_duplicate", minimum=0, maximum=1)
        check_number(novelty, "novelty", minimum=-1, maximum=1, optional=True)
        check_number(relevance_reserve, "relevance_reserve", minimum=0, maximum=1)
        check_number(length_exponent, "length_exponent", minimum=-1e6, maximum=1e6)
        check_number(sibling_bonus, "sibling_bonus", minimum=-1e6, maximum=1e6)
        if mode not in ("auto", "lexical", "embedding"):
            raise ConfigError(f"mode must be auto, lexical or embedding, got {mode!r}")
        if kind not in _KINDS:
            raise ConfigError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}")
        for name, tpl in (("marker", marker), ("mask_marker", mask_marker)):
            if tpl is not None:
                if not isinstance(tpl, str):
                    raise ConfigError(f"{name} must be a template string or None, got {type(tpl).__name__}")
                try:
                    tpl.format(tokens=0, handle="om-0", what="x")
                except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
                    raise ConfigError(f"{name} template is invalid: {exc}") from exc
        if weights is not None and (
            not isinstance(weights, Mapping)
            or not all(isinstance(k, str) for k in weights)
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in weights.values())
        ):
            raise ConfigError("weights must map feature names to finite numbers")
        if isinstance(protect, (str, bytes)) or not isinstance(protect, Iterable):
            raise ConfigError(f"protect must be a list of patterns, got {type(protect).__name__}")
        protect = list(protect)
        for p in protect:
            if not isinstance(p, (str, Pattern)):
                raise ConfigError(f"protect patterns must be str or compiled patterns, got {p!r}")
            if isinstance(p, str):
                try:
                    re.compile(p)
                except re.error as exc:
                    raise ConfigError(f"protect pattern {p!r} does not compile: {exc}") from exc
        exclude_tools = str_items(exclude_tools, "exclude_tools")
        self.ratio = ratio
        self.target_tokens = target_tokens
        self.mode = mode
        self._embedder = embedder
        self._embedder_resolved = embedder is not None
        self.weights = dict(weights) if weights is not None else None
        self.keep_system = keep_system
        self.keep_last_user = keep_last_user
        self.keep_last_turns = keep_last_turns
        self.mask_observations_after = mask_observations_after
        self.dedupe = dedupe
        self.near_duplicate = near_duplicate
        self.min_tokens = min_tokens
        self.exclude_tools = frozenset(exclude_tools)
        self.protected = ProtectedPatterns(protect, defaults=protect_defaults)
        self.novelty = novelty
        self.length_exponent = length_exponent
        self.sibling_bonus = sibling_bonus
        self.relevance_reserve = relevance_reserve
        self.marker = marker
        self.mask_marker = mask_marker if marker is not None else None
        self.kind: Kind = kind
        self.clauses = clauses
        self.incremental = incremental
        self.model = model
        self.store = open_omission_store(store)
        self.deadline = deadline
        self.max_sessions = max_sessions
        self.embed_max_tokens = embed_max_tokens
        self.stats: dict[str, int] = {
            "lexical_fallbacks": 0,
            "pass_throughs": 0,
            "sessions_evicted": 0,
            "embedding_preselected": 0,
        }
        self._counter = get_counter(model)
        self._lock = threading.RLock()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._seg_cache: OrderedDict[tuple[bytes, str], list[Unit]] = OrderedDict()
        self._tok_cache: dict[str, tuple[int, list[str]]] = {}

    # -- public API ----------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder | None:
        """The embedder in use (``None`` in lexical mode or without the ``embeddings`` extra)."""
        if self.mode == "lexical":
            return None
        if not self._embedder_resolved:
            self._embedder_resolved = True
            try:
                from tokenlean.embeddings import get_default_embedder

                emb = get_default_embedder()
                emb.embed(["warm-up"])  # fail here, not in the middle of a call
                self._embedder = emb
            except Exception as exc:
                if self.mode == "embedding":
                    raise
                log.info("embeddings unavailable (%s); compaction scores lexically", exc)
                self._embedder = None
        return self._embedder

    def expand_omitted(self, handle: str) -> str:
        """The exact text an omission marker stands for (``UnknownHandleError`` if unknown)."""
        if not isinstance(handle, str):
            raise UnknownHandleError(str(handle))
        return self.store.get(find_handle(handle))

    def reset(self, session: str | None = None) -> None:
        """Forget frozen decisions (all sessions, or one)."""
        with self._lock:
            if session is None:
                self._sessions.clear()
            else:
                self._sessions.pop(session, None)

    async def acompact(
        self,
        data: Request | Sequence[Message | Mapping[str, Any]] | str | bytes,
        *,
        query: str | None = None,
        session: str = "default",
    ) -> Compacted:
        """``compact`` off the event loop (it is CPU-bound: tokenising, scoring, embedding)."""
        return await asyncio.to_thread(self.compact, data, query=query, session=session)

    def compact(
        self,
        data: Request | Sequence[Message | Mapping[str, Any]] | str | bytes,
        *,
        query: str | None = None,
        session: str = "default",
    ) -> Compacted:
        """Compact a request, a message list (``Message`` or OpenAI dicts) or a text.

        Raises ``MessageFormatError`` for malformed messages and ``TextEncodingError`` for bytes
        that are not UTF-8; empty input passes through unchanged.
        """
        if query is not None and not isinstance(query, str):
            raise InputError("query must be a string")
        if not isinstance(session, str):
            raise InputError("session must be a string")
        if isinstance(data, (bytes, bytearray)):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TextEncodingError(f"input is not valid UTF-8 (byte {exc.start})") from exc
        if isinstance(data, str):
            return self._compact_text(data, query)
        request: Request | None = None
        if isinstance(data, Request):
            request = data
            msgs = data.messages
        elif isinstance(data, Sequence):
            try:
                msgs = tuple(m if isinstance(m, Message) else Message.from_openai(m) for m in data)
            except MessageFormatError:
                raise
            except (TypeError, ValueError) as exc:
                raise MessageFormatError(f"malformed message: {exc}") from exc
        else:
            raise InputError(
                f"compact() takes a Request, a list of messages or a str, not {type(data).__name__}"
            )
        deadline = self._start_clock()
        with self._lock:
            try:
                result = self._compact_messages(msgs, query, session, deadline)
            except _OutOfTime as exc:
                self.stats["pass_throughs"] += 1
                self._sessions.pop(session, None)  # its state may be half-updated: decide afresh
                log.warning("compaction passed %d messages through: %s", len(msgs), exc)
                result = self._unchanged(msgs, query)
        if request is not None:
            result = replace(result, request=request.with_messages(result.messages))
        return result

    def _start_clock(self) -> float | None:
        """This call's deadline; loading the embedder (once per process) is not charged to it."""
        _ = self.embedder
        return None if self.deadline is None else time.monotonic() + self.deadline

    def _unchanged(
        self,
        msgs: tuple[Message, ...],
        query: str | None,
        before: int | None = None,
        pieces: tuple[tuple[Piece, ...] | None, ...] | None = None,
    ) -> Compacted:
        """The messages as they came: a pass-through result (``before`` given for plain texts)."""
        if before is None:
            before = sum(self._count_msg(m) for m in msgs) + 3 if msgs else 0
        budget = self._budget(before)
        whole = tuple(((0, len(m.text)),) if m.text else () for m in msgs)
        return Compacted(
            messages=msgs,
            original=msgs,
            tokens_before=before,
            tokens_after=before,
            dropped={},
            kept=whole,
            omissions=(),
            budget=budget,
            budget_met=budget is None or before <= budget,
            query=query or "",
            _pieces=pieces if pieces is not None else tuple(None for _ in msgs),
        )

    # -- budgets and counting ------------------------------------------------------------------
    def _budget(self, before: int) -> int | None:
        if self.target_tokens is not None:
            return self.target_tokens
        if self.ratio is not None:
            return math.floor(before * (1.0 - self.ratio))
        return None

    def _count_msg(self, m: Message) -> int:
        return self._counter.count_message(m)

    def _unit_info(self, text: str) -> tuple[int, list[str]]:
        info = self._tok_cache.get(text)
        if info is None:
            info = (self._counter.count(text), tokenize(text))
            if len(self._tok_cache) > 200_000:
                self._tok_cache.clear()
            self._tok_cache[text] = info
        return info

    def _item(self, index: int, text: str, deadline: float | None) -> _Item:
        """``text`` segmented and its units tokenised, or ``_OutOfTime`` if that cannot finish in time."""
        if not _fits(deadline, _SEGMENT_S_PER_CHAR * len(text)):
            raise _OutOfTime(f"no time left to segment a text of {len(text)} characters")
        units = self._segment(text) if text else []
        tokens: list[int] = []
        for j, u in enumerate(units, 1):
            tokens.append(self._unit_info(u.text)[0])
            if deadline is not None and not j % 1024 and time.monotonic() > deadline:
                raise _OutOfTime(f"deadline passed while tokenising ({j} units so far)")
        return _Item(index, text, units, tokens)

    def _segment(self, text: str) -> list[Unit]:
        if _BINARY.search(text[:4096]):
            return [Unit(0, len(text), "binary", 0, text)]  # never cut binary-ish payloads
        key = (_hash(text), self.kind)
        units = self._seg_cache.get(key)
        if units is None:
            units = segment(text, self.kind, clauses=self.clauses)
            self._seg_cache[key] = units
            if len(self._seg_cache) > 4096:
                self._seg_cache.popitem(last=False)
        return units

    def _marker_text(
        self, template: str | None, tokens: int, handle: str, trailing: str, what: str = ""
    ) -> str:
        if template is None:
            return ""
        body = template.format(tokens=tokens, handle=handle, what=what)
        return body + trailing

    # -- texts ---------------------------------------------------------------------------------
    def _compact_text(self, text: str, query: str | None) -> Compacted:
        return self.compact_documents([text], query=query)

    def compact_documents(self, texts: Sequence[str], *, query: str | None = None) -> Compacted:
        """Compact several texts (retrieved chunks, files) *jointly* to one budget.

        Each text is a ``user`` message of the result, in order; units compete across texts, so
        an off-topic chunk can lose everything while the relevant one keeps its context, and a
        sentence repeated by overlapping chunks is kept once. No message-level policy applies.
        """
        if query is not None and not isinstance(query, str):
            raise InputError("query must be a string")
        if isinstance(texts, (str, bytes, Mapping)) or not isinstance(texts, Iterable):
            raise InputError(f"compact_documents() takes a list of str, got {type(texts).__name__}")
        deadline = self._start_clock()
        docs = list(texts)
        for t in docs:
            if not isinstance(t, str):
                raise InputError(f"compact_documents() takes str items, got {type(t).__name__}")
        msgs = tuple(Message(role="user", content=t) for t in docs)
        whole = tuple(((0, len(t)),) if t else () for t in docs)
        try:
            items = [self._item(k, t, deadline) for k, t in enumerate(docs)]
        except _OutOfTime as exc:
            self.stats["pass_throughs"] += 1
            log.warning("compaction passed %d texts through: %s", len(docs), exc)
            return self._unchanged(msgs, query, sum(self._counter.count(t) for t in docs), whole)
        # units tile the text and carry BPE-aligned whitespace: their counts sum to the text's
        before = sum(sum(it.tokens) for it in items)
        budget = self._budget(before)

        def unchanged() -> Compacted:
            return self._unchanged(msgs, query, before, whole)

        if not any(docs) or budget is None or before <= budget:
            return unchanged()
        q = query if query else _keywords("\n".join(docs))
        with self._lock:
            try:
                pieces, omissions, _dropped_tokens, met = self._select(
                    items, q, budget, None, deadline=deadline
                )
            except _OutOfTime as exc:
                self.stats["pass_throughs"] += 1
                log.warning("compaction passed %d texts through: %s", len(docs), exc)
                return unchanged()
        new_msgs = tuple(
            Message(role="user", content=_render(t, pc)) for t, pc in zip(docs, pieces, strict=True)
        )
        after = sum(self._counter.count(m.text) for m in new_msgs)
        return Compacted(
            messages=new_msgs,
            original=msgs,
            tokens_before=before,
            tokens_after=after,
            dropped={"select": before - after} if before > after else {},
            kept=tuple(tuple(p for p in pc if not isinstance(p, str)) for pc in pieces),
            omissions=tuple(omissions),
            budget=budget,
            budget_met=met and after <= budget,
            query=q,
            _pieces=tuple(tuple(pc) for pc in pieces),
        )

    # -- messages --------------------------------------------------------------------------------
    def _turns(self, msgs: Sequence[Message]) -> list[int]:
        """Turn number of each message: a turn starts at a user message, or at an assistant
        message that follows a tool result or another assistant message (one agent step)."""
        turns: list[int] = []
        t = 0
        prev: str | None = None
        for m in msgs:
            if (m.role == "user" and prev is not None and prev != "user") or (
                m.role == "assistant" and prev in ("tool", "function", "assistant")
            ):
                t += 1
            turns.append(t)
            prev = m.role if m.role not in ("system", "developer") else prev
        return turns

    def _default_query(self, msgs: Sequence[Message]) -> str:
        parts: list[str] = []
        last_user = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].role == "user"), None)
        if last_user is not None:
            parts.append(msgs[last_user].text)
            for m in msgs[last_user + 1 :][-2:]:
                if m.role == "assistant" and m.text:
                    parts.append(m.text)
                for tc in m.tool_calls:
                    parts.append(f"{tc.name} {tc.arguments}")
        q = "\n".join(p for p in parts if p)
        return q[:4000]

    def _tool_names(self, msgs: Sequence[Message]) -> dict[str, str]:
        names: dict[str, str] = {}
        for m in msgs:
            for tc in m.tool_calls:
                names[tc.id] = tc.name
        return names

    def _compact_messages(
        self, msgs: tuple[Message, ...], query: str | None, session: str, deadline: float | None = None
    ) -> Compacted:
        n = len(msgs)
        counts = [self._count_msg(m) for m in msgs]
        before = sum(counts) + 3 if n else 0
        budget = self._budget(before)
        if n == 0:
            return Compacted((), (), 0, 0, {}, (), (), budget, True, query or "", None, ())
        turns = self._turns(msgs)
        last_turn = turns[-1]
        ages = [last_turn - t for t in turns]
        last_user = next((i for i in range(n - 1, -1, -1) if msgs[i].role == "user"), -1)
        tool_names = self._tool_names(msgs)
        q = query if query else self._default_query(msgs)

        # Which messages may be touched at all?
        def touchable(i: int) -> bool:
            m = msgs[i]
            if not isinstance(m.content, str) or not m.content:
                return False
            if self.keep_system and m.role in ("system", "developer"):
                return False
            if self.keep_last_user and i == last_user:
                return False
            if ages[i] < self.keep_last_turns:
                return False
            if counts[i] - TOKENS_PER_MESSAGE < self.min_tokens:
                return False
            return not (m.role in ("tool", "function") and self._tool_of(m, tool_names) in self.exclude_tools)

        freeze_age = max(self.keep_last_turns, self.mask_observations_after or 0)
        sess = self._session(session) if self.incremental else None
        pieces: list[tuple[Piece, ...] | None] = [None] * n
        new_msgs: list[Message] = list(msgs)
        omissions: list[Omission] = []
        dropped: dict[str, int] = {}
        decided = [False] * n
        n_frozen = 0
        if sess is not None:
            keys = [_msg_key(m) for m in msgs]
            # a message matches its frozen decision whether the caller sends the original again
            # or the compacted copy (a history rewritten in place, e.g. LangChain before_model)
            while n_frozen < min(n, len(sess.frozen)) and keys[n_frozen] in (
                sess.frozen[n_frozen].key,
                sess.frozen[n_frozen].out_key,
            ):
                fr = sess.frozen[n_frozen]
                if keys[n_frozen] == fr.key:
                    pieces[n_frozen] = fr.pieces
                    new_msgs[n_frozen] = fr.message
                    omissions.extend(fr.omissions)
                    for k, v in fr.dropped.items():
                        dropped[k] = dropped.get(k, 0) + v
                decided[n_frozen] = True
                n_frozen += 1
            del sess.frozen[n_frozen:]
            # only messages old enough to be final are decided now (and frozen below); the latest
            # user turn is among them when it is that old (an agent loop's task, followed by tool
            # calls): it is frozen whole (``touchable`` keeps it), so the prefix after it can freeze
            to_decide = [i for i in range(n_frozen, n) if ages[i] >= freeze_age]
            # the frozen prefix must stay contiguous: stop at the first message still live
            contiguous: list[int] = []
            for i in to_decide:
                if contiguous and i != contiguous[-1] + 1:
                    break
                if not contiguous and i != n_frozen:
                    break
                contiguous.append(i)
            to_decide = contiguous
        else:
            to_decide = list(range(n))

        active = [i for i in to_decide if touchable(i)]
        per_msg_drop: dict[int, dict[str, int]] = {}

        def mark_whole(i: int, policy: str, what: str) -> None:
            text = msgs[i].text
            handle = self.store.put(text)
            ntok = counts[i] - TOKENS_PER_MESSAGE - self._counter.count(msgs[i].role)
            marker = self._marker_text(self.mask_marker, ntok, handle, "", what)
            pieces[i] = (marker,) if marker else ()
            new_msgs[i] = msgs[i].with_text(marker)
            omissions.append(Omission(handle, i, ((0, len(text)),), ntok, policy, marker))
            per_msg_drop.setdefault(i, {})[policy] = ntok
            decided[i] = True

        # 2. de-duplication: an earlier copy of a later message goes.
        if self.dedupe and active:
            norm = {
                i: _WS.sub(" ", msgs[i].text).strip() for i in range(n) if isinstance(msgs[i].content, str)
            }
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

            big = [i for i in range(n) if i in norm and counts[i] - TOKENS_PER_MESSAGE >= self.min_tokens]
            for i in active:
                later = exact.get(norm[i], i)
                if later > i:
                    mark_whole(i, "dedupe", f"duplicate of message {later}")
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
                            mark_whole(i, "dedupe", f"near-duplicate of message {j}")
                            break
            active = [i for i in active if pieces[i] is None]

        # 3. observation masking
        if self.mask_observations_after is not None:
            for i in list(active):
                m = msgs[i]
                if m.role in ("tool", "function") and ages[i] >= self.mask_observations_after:
                    mark_whole(i, "mask", f"output of {self._tool_of(m, tool_names) or 'tool'}")
            active = [i for i in active if pieces[i] is None]

        # 4. unit selection over what is left, to the budget
        met = True
        if active and (budget is not None):
            fixed = 3
            for i in range(n):
                if i in active:
                    continue
                fixed += self._count_msg(new_msgs[i]) if pieces[i] is not None or decided[i] else counts[i]
            if sess is not None and self.target_tokens is None and self.ratio is not None:
                # incremental with a ratio: each decision cuts its own messages by the ratio
                unit_budget = math.floor(sum(counts[i] for i in active) * (1.0 - self.ratio))
            else:
                unit_budget = budget - fixed
                if self.target_tokens is None and self.ratio is not None:
                    # When what must stay whole (system prompt, live turns) already fills the
                    # budget, the old content still gets the ratio applied to itself, so the
                    # units that answer the request survive; budget_met then reports the miss.
                    own = math.floor(sum(counts[i] for i in active) * (1.0 - self.ratio))
                    unit_budget = max(unit_budget, own)
            overhead = {i: counts[i] - self._counter.count(msgs[i].text) for i in active}
            total_active = sum(counts[i] for i in active)
            if total_active > unit_budget:
                items = [self._item(i, msgs[i].text, deadline) for i in active]
                content_budget = max(0, unit_budget - sum(overhead.values()))
                sel_pieces, sel_om, _dt, met = self._select(
                    items, q, content_budget, sess, chat=True, deadline=deadline
                )
                omissions.extend(sel_om)
                for item, pc in zip(items, sel_pieces, strict=True):
                    i = item.index
                    pieces[i] = tuple(pc)
                    new_text = _render(item.text, pc)
                    new_msgs[i] = msgs[i].with_text(new_text)
                    saved = counts[i] - self._count_msg(new_msgs[i])
                    if saved:
                        per_msg_drop.setdefault(i, {})["select"] = saved
                    decided[i] = True
        for d in per_msg_drop.values():
            for k, v in d.items():
                dropped[k] = dropped.get(k, 0) + v

        if sess is not None:
            for i in to_decide:
                sess.frozen.append(
                    _Frozen(
                        key=_msg_key(msgs[i]),
                        out_key=_msg_key(new_msgs[i]),
                        pieces=pieces[i],
                        message=new_msgs[i],
                        omissions=tuple(o for o in omissions if o.message == i),
                        dropped=per_msg_drop.get(i, {}),
                    )
                )
        after = 3 + sum(
            self._count_msg(new_msgs[i]) if pieces[i] is not None else counts[i] for i in range(n)
        )
        kept = tuple(
            ((0, len(msgs[i].text)),)
            if pieces[i] is None and msgs[i].text
            else tuple(p for p in (pieces[i] or ()) if not isinstance(p, str))
            for i in range(n)
        )
        return Compacted(
            messages=tuple(new_msgs),
            original=msgs,
            tokens_before=before,
            tokens_after=after,
            dropped=dropped,
            kept=kept,
            omissions=tuple(omissions),
            budget=budget,
            budget_met=(budget is None or after <= budget) and met,
            query=q,
            _pieces=tuple(pieces),
        )

    @staticmethod
    def _tool_of(m: Message, names: Mapping[str, str]) -> str:
        if m.name:
            return m.name
        return names.get(m.tool_call_id or "", "")

    # -- selection -------------------------------------------------------------------------------
    def _session(self, name: str) -> _Session:
        sess = self._sessions.get(name)
        if sess is None:
            sess = self._sessions[name] = _Session()
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
                self.stats["sessions_evicted"] += 1
        else:
            self._sessions.move_to_end(name)
        return sess

    def _weights_for(self, chat: bool, passages: bool, embedded: bool) -> dict[str, float]:
        """The scorer weights for this kind of input: the user's, else agent / passages / document."""
        if self.weights is not None:
            return self.weights
        if chat:
            return AGENT_WEIGHTS
        if passages:
            return DEFAULT_WEIGHTS if embedded else LEXICAL_WEIGHTS
        return DOCUMENT_WEIGHTS if embedded else LEXICAL_DOCUMENT_WEIGHTS

    def _select(
        self,
        items: list[_Item],
        query: str,
        budget: int,
        sess: _Session | None,
        chat: bool = False,
        deadline: float | None = None,
    ) -> tuple[list[list[Piece]], list[Omission], int, bool]:
        """Choose units across ``items`` to fit ``budget`` tokens; build pieces and markers."""
        flat: list[tuple[int, int]] = []  # (item index, unit index)
        texts: list[str] = []
        groups: list[int] = []
        kinds: list[str] = []
        sents: list[int] = []
        costs: list[int] = []
        toks: list[list[str]] = []
        g0 = 0
        s0 = 0
        for k, it in enumerate(items):
            for j, u in enumerate(it.units):
                flat.append((k, j))
                texts.append(u.text)
                groups.append(g0 + u.group)
                kinds.append(u.kind)
                sents.append(s0 + u.sentence)
                c, t = self._unit_info(u.text)
                costs.append(c)
                toks.append(t)
                if deadline is not None and not len(flat) % 1024 and time.monotonic() > deadline:
                    raise _OutOfTime(f"deadline passed while tokenising ({len(flat)} units so far)")
            g0 += (it.units[-1].group + 1) if it.units else 0
            s0 += (it.units[-1].sentence + 1) if it.units else 0
        nu = len(flat)
        if sess is not None:
            sess.bm25.add(toks)
            bm25 = sess.bm25
        else:
            bm25 = None
        emb = self.embedder
        if deadline is not None and time.monotonic() > deadline:
            raise _OutOfTime("deadline passed before scoring")
        passages = _passages(items)
        mask: np.ndarray | None = None
        lex: UnitFeatures | None = None
        lex_score = np.zeros(0)
        if emb is not None and self.embed_max_tokens is not None and sum(costs) > self.embed_max_tokens:
            # Too much to embed within a call: rank lexically, embed only the best units.
            lex = features(
                texts, groups, kinds, query, token_counts=costs, bm25=bm25, unit_tokens=toks, sentences=sents
            )
            lex_score = lex.score(self._weights_for(chat, passages, embedded=False))
            mask = _embed_mask(lex_score, sents, costs, self.embed_max_tokens)
            self.stats["embedding_preselected"] += 1
        try:
            feats = features(
                texts,
                groups,
                kinds,
                query,
                token_counts=costs,
                embedder=emb,
                bm25=bm25,
                unit_tokens=toks,
                sentences=sents,
                deadline=deadline,
                embed_mask=mask,
            )
        except EmbeddingAbandoned as exc:
            self.stats["lexical_fallbacks"] += 1
            log.warning("compaction scores %d units lexically this call: %s", nu, exc)
            emb = None
            # the lexical pre-pass, when there was one, is this very matrix
            feats = (
                lex
                if lex is not None
                else features(
                    texts,
                    groups,
                    kinds,
                    query,
                    token_counts=costs,
                    bm25=bm25,
                    unit_tokens=toks,
                    sentences=sents,
                )
            )
        score = feats.score(self._weights_for(chat, passages, embedded=emb is not None))
        if mask is not None and emb is not None and mask.any() and not mask.all():
            # Two stages, as a retriever and its re-ranker: the lexically best units (the ones
            # embedded) re-ranked by the full scorer, all above the rest in their lexical order.
            score = np.where(mask, score - score[mask].min() + lex_score[~mask].max() + 1.0, lex_score)
        cost_arr = np.asarray(costs, dtype=np.float64)
        priority = score - self.length_exponent * np.log(np.maximum(cost_arr, 1.0))
        match = self.protected.matcher(query)
        protected = np.zeros(nu, dtype=bool)
        base = 0
        for it in items:
            if it.units:
                ends = [u.end for u in it.units]
                for a, b in match.spans(it.text):
                    k = bisect.bisect_right(ends, a)
                    while k < len(ends) and it.units[k].start < b:
                        protected[base + k] = True
                        k += 1
            base += len(it.units)

        marker_cost = 0
        if self.marker is not None:
            marker_cost = (
                self._counter.count(self.marker.format(tokens=999, handle=make_handle(""), what="")) + 1
            )
        keep = [False] * nu
        prot = protected.tolist()
        # unit position within its item, for run accounting
        first_of = [0] * nu
        last_of = [0] * nu
        starts: list[int] = []
        pos = 0
        for it in items:
            starts.append(pos)
            pos += len(it.units)
        for k, it in enumerate(items):
            for j in range(len(it.units)):
                first_of[starts[k] + j] = starts[k]
                last_of[starts[k] + j] = starts[k] + len(it.units) - 1
        used = marker_cost * len(items)  # every item starts as one dropped run
        vecs = feats.embeddings
        twins = _near_duplicates(vecs, sents, self.novelty) if self.novelty is not None else {}
        seen_text: set[str] = set()
        met = True
        # Max-heap on priority (protected first). Keeping a clause raises its sibling clauses by
        # ``sibling_bonus``: the rest of a sentence that was worth quoting is the likeliest next
        # unit to matter ("It was published ..." -> "... in 1997").
        boosted = [float(x) for x in priority]
        heap = [(not prot[i], -boosted[i], i) for i in range(nu)]
        heapq.heapify(heap)
        done = [False] * nu
        by_sentence: dict[int, list[int]] = {}
        for i in range(nu):
            by_sentence.setdefault(sents[i], []).append(i)
        # Protected units are kept whatever they cost, but they must not crowd out the units
        # that answer the request: a share of the budget stays reserved for the best-scored ones.
        # (set when the first unprotected unit comes up, i.e. after protected units and the
        # markers they split off have been paid for)
        limit: int | None = None
        skipped: set[int] = set()  # did not fit: would have split a dropped run (another marker)

        def requeue_neighbours(i: int) -> None:
            """A kept unit makes its skipped neighbours cheaper (no marker between): queue them again."""
            for j in (i - 1, i + 1):
                if j in skipped and first_of[i] <= j <= last_of[i]:
                    skipped.discard(j)
                    done[j] = False
                    heapq.heappush(heap, (not prot[j], -boosted[j], j))

        while heap:
            _p, negp, i = heapq.heappop(heap)
            if done[i] or -negp != boosted[i]:
                continue  # stale entry: the unit was boosted and re-queued
            done[i] = True
            left_dropped = i > first_of[i] and not keep[i - 1]
            right_dropped = i < last_of[i] and not keep[i + 1]
            delta = costs[i] + marker_cost * (int(left_dropped) + int(right_dropped) - 1)
            if prot[i]:
                keep[i] = True
                used += delta
                if used > budget:
                    met = False
                requeue_neighbours(i)
                continue
            if limit is None:
                limit = max(budget, used + int(self.relevance_reserve * budget))
            if used + delta > limit:
                skipped.add(i)
                continue
            if costs[i] >= 8 and kinds[i] in ("sentence", "list_item", "line"):
                key = _WS.sub(" ", texts[i]).strip()
                if key in seen_text:
                    continue  # the same sentence from an overlapping chunk: keep it once
                seen_text.add(key)
            if i in twins and any(keep[j] for j in twins[i]):
                continue  # a near-duplicate of what is already kept adds nothing (MMR)
            keep[i] = True
            used += delta
            requeue_neighbours(i)
            if self.sibling_bonus:
                for j in by_sentence[sents[i]]:
                    if not done[j]:
                        boosted[j] += self.sibling_bonus
                        heapq.heappush(heap, (not prot[j], -boosted[j], j))

        out_pieces: list[list[Piece]] = []
        out_om: list[Omission] = []
        dropped_tokens = 0
        for k, it in enumerate(items):
            pcs: list[Piece] = []
            run: list[int] = []
            base = starts[k]

            def flush(run: list[int], pcs: list[Piece], k: int = k, base: int = base) -> int:
                """Replace a dropped run by its marker; return the tokens it removed (0: kept)."""
                if not run:
                    return 0
                units = items[k].units
                a, b = units[run[0]].start, units[run[-1]].end
                ntok = sum(costs[base + j] for j in run)
                if marker_cost and ntok <= marker_cost:
                    # a marker that costs more than the text it replaces saves nothing
                    if pcs and not isinstance(pcs[-1], str) and pcs[-1][1] == a:
                        pcs[-1] = (pcs[-1][0], b)
                    else:
                        pcs.append((a, b))
                    return 0
                omitted = items[k].text[a:b]
                handle = self.store.put(omitted)
                if self.marker is not None:
                    lead = " " if omitted[:1] in (" ", "\t") else ""
                    tail = omitted[len(omitted.rstrip()) :]
                    tail = "\n" if "\n" in tail else ""
                    marker = lead + self.marker.format(tokens=ntok, handle=handle, what="") + tail
                    pcs.append(marker)
                else:
                    marker = ""
                out_om.append(Omission(handle, items[k].index, ((a, b),), ntok, "select", marker))
                return ntok

            for j, u in enumerate(it.units):
                if keep[base + j]:
                    dropped_tokens += flush(run, pcs)
                    run = []
                    if pcs and not isinstance(pcs[-1], str) and pcs[-1][1] == u.start:
                        pcs[-1] = (pcs[-1][0], u.end)
                    else:
                        pcs.append((u.start, u.end))
                else:
                    run.append(j)
            dropped_tokens += flush(run, pcs)
            out_pieces.append(pcs)
        return out_pieces, out_om, dropped_tokens, met


#: The embedding model reads at most this many tokens of a text (256 word pieces, about as many
#: BPE tokens): what embedding one sentence costs at most, whatever its length.
_EMBED_READS_TOKENS = 256


def _embed_mask(score: np.ndarray, sents: Sequence[int], costs: Sequence[int], cap: int) -> np.ndarray:
    """The units to embed: whole sentences (they are embedded whole), best lexical score first,
    until their cost (each sentence's tokens, at most what the model reads) reaches ``cap``."""
    sid, inv = np.unique(np.asarray(sents, dtype=np.int64), return_inverse=True)
    best = np.full(len(sid), -np.inf)
    np.maximum.at(best, inv, score)
    cost = np.zeros(len(sid), dtype=np.int64)
    np.add.at(cost, inv, np.asarray(costs, dtype=np.int64))
    order = np.argsort(-best, kind="stable")
    within = np.cumsum(np.minimum(cost[order], _EMBED_READS_TOKENS)) <= cap
    chosen = np.zeros(len(sid), dtype=bool)
    chosen[order[within]] = True
    return chosen[inv]


def _near_duplicates(vecs: np.ndarray | None, sents: Sequence[int], novelty: float) -> dict[int, list[int]]:
    """For each unit, the units of *other* sentences whose vectors are at least ``novelty`` alike.

    Computed once per call in blocks (matrix products), so the selection loop checks a short list
    instead of comparing each candidate with everything kept so far. Units without a vector (left
    out of embedding) have a zero row and are nobody's twin. Clauses of one sentence share its
    vector and are never each other's duplicates.
    """
    if vecs is None or not len(vecs):
        return {}
    live = np.flatnonzero(np.any(vecs != 0, axis=1))
    if len(live) < 2:
        return {}
    v = np.ascontiguousarray(vecs[live], dtype=np.float32)
    sid = np.asarray(sents, dtype=np.int64)[live]
    out: dict[int, list[int]] = {}
    block = 1024
    for a in range(0, len(live), block):
        sims = v[a : a + block] @ v.T
        rows, cols = np.nonzero(sims >= novelty)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i, j = a + r, c
            if sid[i] != sid[j]:
                out.setdefault(int(live[i]), []).append(int(live[j]))
    return out


def _passages(items: Sequence[_Item]) -> bool:
    """Whether the texts are separate passages (retrieved chunks) rather than one document.

    Several texts given together are passages; one text is when most of its blocks open with a
    title of their own (``Document [3](Title: ...)``, a heading per chunk). Passage priors (the
    best passage, its first sentence) help there and mislead inside one long document.
    """
    if sum(1 for it in items if it.units) > 1:
        return True
    blocks = titled = 0
    for it in items:
        last = None
        for u in it.units:
            if u.group != last:
                last = u.group
                blocks += 1
                titled += u.kind == "heading"
    return blocks >= 3 and titled * 2 >= blocks


def _render(text: str, pieces: Sequence[Piece]) -> str:
    return "".join(p if isinstance(p, str) else text[p[0] : p[1]] for p in pieces)


def _keywords(text: str, k: int = 24) -> str:
    """Without a query, compact towards the text's own most frequent content words."""
    freq: dict[str, int] = {}
    for w in tokenize(text):
        if w not in STOPWORDS and len(w) > 2 and not w.isdigit():
            freq[w] = freq.get(w, 0) + 1
    return " ".join(sorted(freq, key=lambda w: -freq[w])[:k])


def compact_text(text: str, query: str | None = None, *, ratio: float = 0.5, **options: Any) -> Compacted:
    """One-shot helper: ``Compactor(ratio=ratio, **options).compact(text, query=query)``."""
    return Compactor(ratio=ratio, **options).compact(text, query=query)
