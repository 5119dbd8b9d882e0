"""The compactor: runs a pipeline of steps over a request, verbatim, and keeps what it omits.

``Compactor.compact`` turns a request, a message list or a text into a ``State`` (``state.py``)
and runs its steps (``steps.py``) over it: by default, the pins (system / developer prompts, the
latest user turn, the last ``keep_last_turns`` turns, short messages, excluded tools' outputs),
then de-duplication, observation masking, and budgeted unit selection (``select.py``). Multimodal
messages are left as they are: an image is never dropped silently. Messages are never removed,
only shortened, so an assistant tool call and its tool results can never be separated. Every
omission marker carries a handle; ``expand_omitted(handle)`` returns the omitted text byte for
byte.

**Incremental mode** (``incremental=True``) is for multi-turn sessions: a message is decided once,
when it leaves the live window, and that decision is frozen, so the compacted prefix is byte-
identical from call to call (provider prompt caches keep hitting) and a call only pays for the
messages that are new. Segmentations, tokenisations, token counts and embeddings are cached by
content hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from re import Pattern
from typing import TYPE_CHECKING, Any

from tokenlean import events
from tokenlean._checks import check_number
from tokenlean.compaction.compacted import (
    DEFAULT_MARKER,
    DEFAULT_MASK_MARKER,
    Compacted,
    Omission,
    Piece,
)
from tokenlean.compaction.omissions import OmissionStore, find_handle, open_omission_store
from tokenlean.compaction.segment import Kind
from tokenlean.compaction.state import Frozen, Mode, OutOfTime, Services, Session, State, Step
from tokenlean.compaction.steps import REPLY_TOKENS, UNSET, _Unset, default_steps
from tokenlean.errors import (
    ConfigError,
    InputError,
    MessageFormatError,
    TextEncodingError,
    UnknownHandleError,
)
from tokenlean.tokens import get_counter
from tokenlean.types import Message, Request

if TYPE_CHECKING:
    from tokenlean.embeddings import Embedder

__all__ = [
    "DEFAULT_MARKER",
    "DEFAULT_MASK_MARKER",
    "SERVICE_OPTIONS",
    "Compacted",
    "Compactor",
    "Omission",
    "compact_text",
]

log = logging.getLogger("tokenlean.compaction")

#: The ``Compactor`` options that are not policy: they stay on the compactor when ``steps`` is given.
SERVICE_OPTIONS = frozenset(
    {
        "store",
        "model",
        "embedder",
        "deadline",
        "max_sessions",
        "embed_max_tokens",
        "incremental",
        "marker",
        "mask_marker",
    }
)


def _msg_key(m: Message) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(m.role.encode())
    h.update(repr((m.content, m.tool_calls, m.tool_call_id, m.name)).encode("utf-8", "surrogatepass"))
    return h.digest()


def _turns(msgs: Sequence[Message]) -> list[int]:
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


def _default_query(msgs: Sequence[Message]) -> str:
    """Without a query: the latest user message and what the assistant did since (tool calls)."""
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


def _policy_options_given(options: Mapping[str, Any]) -> list[str]:
    """The policy keywords set to something other than their default (they belong in the steps)."""
    defaults = default_steps.__kwdefaults__ or {}
    given = []
    for name, value in options.items():
        default = defaults[name]
        if value is default:
            continue
        if isinstance(default, tuple) and isinstance(value, Iterable) and not isinstance(value, str):
            if not list(value):
                continue
        elif type(value) is type(default) and value == default:
            continue
        given.append(name)
    return given


class Compactor:
    """Verbatim compaction of chat requests, message lists and plain texts.

    **The pipeline.** ``steps`` (see ``tokenlean.compaction.steps``) are the policies, run in
    order: ``Compactor(steps=[KeepSystem(), KeepLastTurns(2), MaskObservations(after=4),
    SelectUnits(keep=0.3)])``. Without ``steps``, the keyword options below build
    ``default_steps(**options)``, the pipeline every earlier version ran, with the same output:
    ``ratio`` is the share of tokens to *remove* (0.9 keeps a tenth) and ``keep`` the share to
    *keep* (LLMLingua's ``rate``: 0.1 keeps a tenth); give one of them (both: ``ConfigError``).
    ``target_tokens`` is an absolute budget for the whole request (it wins over either); with
    none, only the message-level policies run. ``mode="auto"`` uses embeddings when the
    ``embeddings`` extra is installed and falls back to lexical scoring (BM25 and cues)
    otherwise. The other policy options are the steps' (``default_steps`` lists which is whose).

    **The services** (kept when ``steps`` is given; ``SERVICE_OPTIONS``): ``store`` keeps omitted
    text (see ``tokenlean.compaction.omissions``): ``None`` is the durable SQLite default,
    ``"memory"`` a volatile one, a path a SQLite file. ``model`` picks the tokenizer that counts.
    ``embedder`` scores units when a step's mode asks for embeddings (``None``: the shared
    default, loaded on first use). ``marker`` / ``mask_marker`` are the templates that replace a
    dropped run / a whole message (``None``: no marker). ``incremental`` freezes decisions per
    session (see the module docstring); ``max_sessions`` bounds the sessions kept (least recently
    used go first; a forgotten session is decided afresh on its next call, see ``stats``).

    ``deadline`` (seconds, ``None`` for none) bounds one call, because compaction sits in front
    of a model call the user is waiting for: embedding stops at the deadline (or when the
    embedder fails) and the call is scored lexically instead; if even that cannot start in time
    (a huge input), the messages pass through unchanged. Both are logged, neither is an error.
    ``embed_max_tokens`` caps the text one call embeds: above it, units are ranked lexically first
    and only the best of them, up to that many tokens, are embedded (the rest keep their lexical
    rank), so the cost of a call stops growing with the size of a tool output (``benchmarks/
    compaction_speed.py`` measures it); ``None`` embeds all.
    """

    def __init__(
        self,
        *,
        steps: Iterable[Step] | None = None,
        ratio: float | _Unset | None = UNSET,
        keep: float | None = None,
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
        policy: dict[str, Any] = {
            "ratio": ratio,
            "keep": keep,
            "target_tokens": target_tokens,
            "mode": mode,
            "weights": weights,
            "keep_system": keep_system,
            "keep_last_user": keep_last_user,
            "keep_last_turns": keep_last_turns,
            "mask_observations_after": mask_observations_after,
            "dedupe": dedupe,
            "near_duplicate": near_duplicate,
            "min_tokens": min_tokens,
            "exclude_tools": exclude_tools,
            "protect": protect,
            "protect_defaults": protect_defaults,
            "novelty": novelty,
            "length_exponent": length_exponent,
            "sibling_bonus": sibling_bonus,
            "relevance_reserve": relevance_reserve,
            "kind": kind,
            "clauses": clauses,
        }
        if steps is None:
            self.steps: list[Step] = default_steps(**policy)
        else:
            if isinstance(steps, (str, bytes)) or not isinstance(steps, Iterable):
                raise ConfigError(f"steps must be a list of steps, got {type(steps).__name__}")
            self.steps = list(steps)
            for s in self.steps:
                if not callable(getattr(s, "apply", None)):
                    raise ConfigError(f"a step needs an apply(state) method, got {s!r}")
            given = _policy_options_given(policy)
            if given:
                raise ConfigError(
                    f"with steps=, give {', '.join(given)} to the steps (e.g. SelectUnits), not to Compactor"
                )
        for name, tpl in (("marker", marker), ("mask_marker", mask_marker)):
            if tpl is not None:
                if not isinstance(tpl, str):
                    raise ConfigError(f"{name} must be a template string or None, got {type(tpl).__name__}")
                try:
                    tpl.format(tokens=0, handle="om-0", what="x")
                except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
                    raise ConfigError(f"{name} template is invalid: {exc}") from exc
        self._embedder = embedder
        self._embedder_resolved = embedder is not None
        self._embedder_error: Exception | None = None
        self.marker = marker
        self.mask_marker = mask_marker if marker is not None else None
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
        self._services = Services(
            counter=self._counter,
            store=self.store,
            marker=self.marker,
            mask_marker=self.mask_marker,
            embed_max_tokens=embed_max_tokens,
            embedder_for=self._embedder_for,
            stats=self.stats,
        )
        self._lock = threading.RLock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    # -- public API ----------------------------------------------------------------------------
    @property
    def mode(self) -> Mode:
        """The scoring mode of the pipeline (its first step with a ``mode``; else ``lexical``)."""
        for s in self.steps:
            m = getattr(s, "mode", None)
            if m in ("auto", "lexical", "embedding"):
                return m  # type: ignore[no-any-return]
        return "lexical"

    @property
    def embedder(self) -> Embedder | None:
        """The embedder in use (``None`` in lexical mode or without the ``embeddings`` extra)."""
        return self._embedder_for(self.mode)

    def _embedder_for(self, mode: Mode) -> Embedder | None:
        if mode == "lexical":
            return None
        if not self._embedder_resolved:
            self._embedder_resolved = True
            try:
                from tokenlean.embeddings import get_default_embedder

                emb = get_default_embedder()
                emb.embed(["warm-up"])  # fail here, not in the middle of a call
                self._embedder = emb
            except Exception as exc:
                self._embedder_error = exc
                if mode != "embedding":
                    log.info("embeddings unavailable (%s); compaction scores lexically", exc)
        if self._embedder is None and mode == "embedding" and self._embedder_error is not None:
            raise self._embedder_error
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
        return _observed(self._compact(data, query, session))

    def _compact(
        self,
        data: Request | Sequence[Message | Mapping[str, Any]] | str | bytes,
        query: str | None,
        session: str,
    ) -> Compacted:
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
            return self._compact_documents([data], query)
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
            except OutOfTime as exc:
                self.stats["pass_throughs"] += 1
                self._sessions.pop(session, None)  # its state may be half-updated: decide afresh
                log.warning("compaction passed %d messages through: %s", len(msgs), exc)
                result = self._unchanged(msgs, query)
        if request is not None:
            result = replace(result, request=request.with_messages(result.messages))
        return result

    def compact_documents(self, texts: Sequence[str], *, query: str | None = None) -> Compacted:
        """Compact several texts (retrieved chunks, files) *jointly* to one budget.

        Each text is a ``user`` message of the result, in order; units compete across texts, so
        an off-topic chunk can lose everything while the relevant one keeps its context, and a
        sentence repeated by overlapping chunks is kept once. No message-level step applies (the
        budget is ``SelectUnits``': ``ratio`` the share removed, ``keep`` the share kept).
        """
        return _observed(self._compact_documents(texts, query))

    def _compact_documents(self, texts: Sequence[str], query: str | None) -> Compacted:
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
        n = len(msgs)
        state = State(
            messages=msgs,
            query=query or "",
            services=self._services,
            chat=False,
            deadline=deadline,
            to_decide=list(range(n)),
            out=list(msgs),
            pieces=[None] * n,
            pinned=[False] * n,
            decided=[False] * n,
        )

        def count() -> int:
            if state.tokens_before is None:
                state.tokens_before = sum(self._counter.count(t) for t in docs)
            return state.tokens_before

        with self._lock:
            try:
                for step in self.steps:
                    step.apply(state)
            except OutOfTime as exc:
                self.stats["pass_throughs"] += 1
                log.warning("compaction passed %d texts through: %s", len(docs), exc)
                return self._unchanged(msgs, query, count(), whole)
        before = count()
        if all(p is None for p in state.pieces):
            return self._unchanged(msgs, state.query or None, before, whole)
        new_msgs = tuple(state.out)
        after = sum(self._counter.count(m.text) for m in new_msgs)
        budget = self._budget(before)
        kept = tuple(
            whole[k] if pc is None else tuple(p for p in pc if not isinstance(p, str))
            for k, pc in enumerate(state.pieces)
        )
        return Compacted(
            messages=new_msgs,
            original=msgs,
            tokens_before=before,
            tokens_after=after,
            dropped={"select": before - after} if before > after else {},
            kept=kept,
            omissions=tuple(state.omissions),
            budget=budget,
            budget_met=state.met and (budget is None or after <= budget),
            query=state.query,
            _pieces=tuple(pc if pc is not None else whole[k] for k, pc in enumerate(state.pieces)),
        )

    # -- internals -------------------------------------------------------------------------------
    def _start_clock(self) -> float | None:
        """This call's deadline; loading the embedder (once per process) is not charged to it."""
        for s in self.steps:
            m = getattr(s, "mode", None)
            if m in ("auto", "embedding"):
                self._embedder_for(m)
        return None if self.deadline is None else time.monotonic() + self.deadline

    def _budget(self, before: int) -> int | None:
        """The request's token budget: the last budgeted step's (``None``: no step has one)."""
        out: int | None = None
        for s in self.steps:
            fn = getattr(s, "budget", None)
            if callable(fn):
                out = fn(before)
        return out

    def _unchanged(
        self,
        msgs: tuple[Message, ...],
        query: str | None,
        before: int | None = None,
        pieces: tuple[tuple[Piece, ...] | None, ...] | None = None,
    ) -> Compacted:
        """The messages as they came: a pass-through result (``before`` given for plain texts)."""
        if before is None:
            before = sum(self._counter.count_message(m) for m in msgs) + REPLY_TOKENS if msgs else 0
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

    def _session(self, name: str) -> Session:
        sess = self._sessions.get(name)
        if sess is None:
            sess = self._sessions[name] = Session()
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
                self.stats["sessions_evicted"] += 1
        else:
            self._sessions.move_to_end(name)
        return sess

    def _compact_messages(
        self, msgs: tuple[Message, ...], query: str | None, session: str, deadline: float | None = None
    ) -> Compacted:
        n = len(msgs)
        counts = [self._counter.count_message(m) for m in msgs]
        before = sum(counts) + REPLY_TOKENS if n else 0
        budget = self._budget(before)
        if n == 0:
            return Compacted((), (), 0, 0, {}, (), (), budget, True, query or "", None, ())
        turns = _turns(msgs)
        tool_names = {tc.id: tc.name for m in msgs for tc in m.tool_calls}
        state = State(
            messages=msgs,
            query=query if query else _default_query(msgs),
            services=self._services,
            deadline=deadline,
            tokens_before=before,
            budget=budget,
            counts=counts,
            ages=[turns[-1] - t for t in turns],
            tool_names=tool_names,
            out=list(msgs),
            pieces=[None] * n,
            # multimodal or empty content is never touched
            pinned=[not isinstance(m.content, str) or not m.content for m in msgs],
            decided=[False] * n,
        )
        dropped: dict[str, int] = {}
        if self.incremental:
            state.session = sess = self._session(session)
            n_frozen = self._replay(state, sess, dropped)
            # only messages old enough to be final are decided now (and frozen below); the latest
            # user turn is among them when it is that old (an agent loop's task, followed by tool
            # calls): it is frozen whole (a pin keeps it), so the prefix after it can freeze. The
            # frozen prefix stays contiguous: it stops at the first message still live.
            freeze_age = max([0, *(int(getattr(s, "live_turns", 0) or 0) for s in self.steps)])
            end = n_frozen
            while end < n and state.ages[end] >= freeze_age:
                end += 1
            state.to_decide = list(range(n_frozen, end))
        else:
            state.to_decide = list(range(n))

        for step in self.steps:
            step.apply(state)

        for d in state.dropped.values():
            for k, v in d.items():
                dropped[k] = dropped.get(k, 0) + v
        if state.session is not None:
            for i in state.to_decide:
                state.session.frozen.append(
                    Frozen(
                        key=_msg_key(msgs[i]),
                        out_key=_msg_key(state.out[i]),
                        pieces=state.pieces[i],
                        message=state.out[i],
                        omissions=tuple(o for o in state.omissions if o.message == i),
                        dropped=state.dropped.get(i, {}),
                    )
                )
        pieces = state.pieces
        after = REPLY_TOKENS + sum(
            self._counter.count_message(state.out[i]) if pieces[i] is not None else counts[i]
            for i in range(n)
        )
        kept = tuple(
            ((0, len(msgs[i].text)),)
            if pieces[i] is None and msgs[i].text
            else tuple(p for p in (pieces[i] or ()) if not isinstance(p, str))
            for i in range(n)
        )
        return Compacted(
            messages=tuple(state.out),
            original=msgs,
            tokens_before=before,
            tokens_after=after,
            dropped=dropped,
            kept=kept,
            omissions=tuple(state.omissions),
            budget=budget,
            budget_met=(budget is None or after <= budget) and state.met,
            query=state.query,
            _pieces=tuple(pieces),
        )

    @staticmethod
    def _replay(state: State, sess: Session, dropped: dict[str, int]) -> int:
        """Replay the session's frozen decisions on the matching prefix; return its length."""
        msgs = state.messages
        n = len(msgs)
        keys = [_msg_key(m) for m in msgs]
        n_frozen = 0
        # a message matches its frozen decision whether the caller sends the original again or
        # the compacted copy (a history rewritten in place, e.g. LangChain before_model)
        while n_frozen < min(n, len(sess.frozen)) and keys[n_frozen] in (
            sess.frozen[n_frozen].key,
            sess.frozen[n_frozen].out_key,
        ):
            fr = sess.frozen[n_frozen]
            if keys[n_frozen] == fr.key:
                state.pieces[n_frozen] = fr.pieces
                state.out[n_frozen] = fr.message
                state.omissions.extend(fr.omissions)
                for k, v in fr.dropped.items():
                    dropped[k] = dropped.get(k, 0) + v
            state.decided[n_frozen] = True
            n_frozen += 1
        del sess.frozen[n_frozen:]
        return n_frozen


def compact_text(
    text: str,
    query: str | None = None,
    *,
    ratio: float | _Unset | None = UNSET,
    keep: float | None = None,
    **options: Any,
) -> Compacted:
    """One-shot helper: ``Compactor(ratio=ratio, **options).compact(text, query=query)``.

    ``ratio`` is the share of tokens to *remove* (default 0.5), ``keep`` the share to *keep*
    (LLMLingua's ``rate``); give one of them.
    """
    return Compactor(ratio=ratio, keep=keep, **options).compact(text, query=query)


def _observed(result: Compacted) -> Compacted:
    """``result``, after telling the observers (``tokenlean.events``) what the compaction did."""
    if events.enabled():
        events.emit(events.COMPACTION, result.event_attributes())
    return result
