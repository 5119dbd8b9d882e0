"""The state a compaction step works on, the services the compactor lends it, and ``Step``.

A call to ``Compactor.compact`` builds one ``State`` for the request and hands it to each step in
turn (``steps.py``): a step pins messages (no later step touches them), replaces whole messages by
a marker, or keeps parts of them, always through the state's methods, so the record of what was
kept (the pieces ``Compacted.verify()`` checks) stays right whatever the steps do.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from tokenlean.compaction.compacted import Omission, Piece
from tokenlean.compaction.omissions import OmissionStore
from tokenlean.compaction.scoring import BM25, tokenize
from tokenlean.compaction.segment import Kind, Unit, segment
from tokenlean.tokens import TOKENS_PER_MESSAGE, TokenCounter
from tokenlean.types import Message

if TYPE_CHECKING:
    from tokenlean.embeddings import Embedder

__all__ = ["Item", "Mode", "Services", "State", "Step"]

Mode = Literal["auto", "lexical", "embedding"]


class OutOfTime(Exception):
    """A call's deadline passed before scoring could start: the caller passes messages through."""


# Segmenting one text runs without a deadline check inside, so it is started only when its
# estimated cost still fits before the deadline: otherwise a huge message reached just before the
# deadline overruns it by the whole of its segmentation. The estimate per character is generous
# (a busy machine runs slower, and passing through beats running late); benchmarks/
# compaction_speed.py measures the real cost.
SEGMENT_S_PER_CHAR = 5e-7

_BINARY = re.compile(r"[\x00-\x08\x0e-\x1f]")


def fits(deadline: float | None, cost_s: float) -> bool:
    """Whether work estimated at ``cost_s`` seconds can still finish before ``deadline``."""
    return deadline is None or time.monotonic() + cost_s <= deadline


def text_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass
class Item:
    """A message (or a text) whose units compete for the budget."""

    index: int
    text: str
    units: list[Unit]
    tokens: list[int]


@dataclass
class Frozen:
    """One message's decision in an incremental session, replayed as it is on later calls."""

    key: bytes
    out_key: bytes
    pieces: tuple[Piece, ...] | None
    message: Message
    omissions: tuple[Omission, ...]
    dropped: dict[str, int]


@dataclass
class Session:
    """An incremental session: the frozen prefix and the document frequencies seen so far."""

    frozen: list[Frozen] = field(default_factory=list)
    bm25: BM25 = field(default_factory=BM25)


class Services:
    """What a ``Compactor`` lends its steps: token counting, the omission store, the markers,
    the embedder, and caches of segmentations and tokenisations (shared by all its calls)."""

    def __init__(
        self,
        *,
        counter: TokenCounter,
        store: OmissionStore,
        marker: str | None,
        mask_marker: str | None,
        embed_max_tokens: int | None,
        embedder_for: Callable[[Mode], Embedder | None],
        stats: dict[str, int],
    ) -> None:
        self.counter = counter
        self.store = store
        self.marker = marker
        self.mask_marker = mask_marker
        self.embed_max_tokens = embed_max_tokens
        self.stats = stats
        self._embedder_for = embedder_for
        self._seg_cache: OrderedDict[tuple[bytes, str, bool], list[Unit]] = OrderedDict()
        self._tok_cache: dict[str, tuple[int, list[str]]] = {}

    def embedder(self, mode: Mode) -> Embedder | None:
        """The embedder for scoring ``mode`` (``None``: score lexically)."""
        return self._embedder_for(mode)

    def unit_info(self, text: str) -> tuple[int, list[str]]:
        """``text``'s token count and its scoring tokens (cached by text)."""
        info = self._tok_cache.get(text)
        if info is None:
            info = (self.counter.count(text), tokenize(text))
            if len(self._tok_cache) > 200_000:
                self._tok_cache.clear()
            self._tok_cache[text] = info
        return info

    def segment(self, text: str, kind: Kind, clauses: bool) -> list[Unit]:
        """``text`` cut into units (cached by content); binary-looking text stays one unit."""
        if _BINARY.search(text[:4096]):
            return [Unit(0, len(text), "binary", 0, text)]  # never cut binary-ish payloads
        key = (text_hash(text), kind, clauses)
        units = self._seg_cache.get(key)
        if units is None:
            units = segment(text, kind, clauses=clauses)
            self._seg_cache[key] = units
            if len(self._seg_cache) > 4096:
                self._seg_cache.popitem(last=False)
        return units

    def item(self, index: int, text: str, kind: Kind, clauses: bool, deadline: float | None) -> Item:
        """``text`` segmented and its units counted, or ``OutOfTime`` if that cannot finish in time."""
        if not fits(deadline, SEGMENT_S_PER_CHAR * len(text)):
            raise OutOfTime(f"no time left to segment a text of {len(text)} characters")
        units = self.segment(text, kind, clauses) if text else []
        tokens: list[int] = []
        for j, u in enumerate(units, 1):
            tokens.append(self.unit_info(u.text)[0])
            if deadline is not None and not j % 1024 and time.monotonic() > deadline:
                raise OutOfTime(f"deadline passed while tokenising ({j} units so far)")
        return Item(index, text, units, tokens)

    def marker_text(self, template: str | None, tokens: int, handle: str, what: str = "") -> str:
        return "" if template is None else template.format(tokens=tokens, handle=handle, what=what)


@dataclass(eq=False)
class State:
    """One request being compacted, as the steps see it.

    ``messages`` are the originals (never changed) and ``out`` what each has become so far;
    ``pieces[i]`` records how ``out[i]`` was made (``None``: unchanged). ``chat`` is false for
    ``compact_documents`` and plain texts: message-level steps then do nothing. ``ages[i]`` is how
    many turns ago message ``i`` was sent (0: the current turn). ``to_decide`` are the messages
    this call may change: all of them, or in incremental mode those that have just left the live
    window (the frozen prefix before them was decided on earlier calls and is replayed as it was).
    ``tokens_before`` and ``budget`` are the request's count and token budget (``None``: none).
    """

    messages: tuple[Message, ...]
    query: str
    services: Services
    chat: bool = True
    deadline: float | None = None
    tokens_before: int | None = None
    budget: int | None = None
    counts: list[int] = field(default_factory=list)
    ages: list[int] = field(default_factory=list)
    tool_names: dict[str, str] = field(default_factory=dict)
    session: Session | None = None
    to_decide: list[int] = field(default_factory=list)
    out: list[Message] = field(default_factory=list)
    pieces: list[tuple[Piece, ...] | None] = field(default_factory=list)
    pinned: list[bool] = field(default_factory=list)
    decided: list[bool] = field(default_factory=list)
    omissions: list[Omission] = field(default_factory=list)
    dropped: dict[int, dict[str, int]] = field(default_factory=dict)
    met: bool = True

    def candidates(self) -> list[int]:
        """Messages a step may still change: to be decided now, not pinned, not yet replaced."""
        return [i for i in self.to_decide if not self.pinned[i] and self.pieces[i] is None]

    def pin(self, i: int) -> None:
        """Keep message ``i`` whole: no later step touches it."""
        self.pinned[i] = True

    def content_tokens(self, i: int) -> int:
        """Tokens of message ``i``'s content (its count without the per-message overhead)."""
        return self.counts[i] - TOKENS_PER_MESSAGE

    def tool_of(self, i: int) -> str:
        """The tool whose output message ``i`` is (``""`` if unknown or not a tool result)."""
        m = self.messages[i]
        if m.name:
            return m.name
        return self.tool_names.get(m.tool_call_id or "", "")

    def replace_whole(self, i: int, policy: str, what: str) -> None:
        """Replace message ``i`` by one marker naming ``what`` (text kept in the omission store)."""
        msg = self.messages[i]
        text = msg.text
        svc = self.services
        handle = svc.store.put(text)
        ntok = self.counts[i] - TOKENS_PER_MESSAGE - svc.counter.count(msg.role)
        marker = svc.marker_text(svc.mask_marker, ntok, handle, what)
        self.pieces[i] = (marker,) if marker else ()
        self.out[i] = msg.with_text(marker)
        self.omissions.append(Omission(handle, i, ((0, len(text)),), ntok, policy, marker))
        self.dropped.setdefault(i, {})[policy] = ntok
        self.decided[i] = True

    def set_pieces(self, i: int, pieces: Sequence[Piece], policy: str) -> None:
        """Make message ``i`` its ``pieces`` (kept ranges and markers); count what ``policy`` saved.

        Record each marker's ``Omission`` in ``omissions`` as well: ``verify()`` accepts no
        inserted text that is not a recorded marker.
        """
        msg = self.messages[i]
        self.pieces[i] = tuple(pieces)
        self.out[i] = msg.with_text(render(msg.text, pieces))
        saved = self.counts[i] - self.services.counter.count_message(self.out[i])
        if saved:
            self.dropped.setdefault(i, {})[policy] = saved
        self.decided[i] = True


def render(text: str, pieces: Sequence[Piece]) -> str:
    """The text ``pieces`` make of ``text``: kept ranges copied, markers inserted."""
    return "".join(p if isinstance(p, str) else text[p[0] : p[1]] for p in pieces)


@runtime_checkable
class Step(Protocol):
    """One step of a compaction pipeline: ``apply(state)`` changes ``state`` in place.

    Steps run in order; a pin (``state.pin``) holds for the steps after it. Two optional extras
    a step may define: ``live_turns`` (an int: messages younger than that many turns may still
    change under this step, so incremental mode does not freeze them yet) and
    ``budget(tokens_before) -> int | None`` (the token budget it works to; the result reports the
    last such step's budget and whether it was met).
    """

    def apply(self, state: State) -> None: ...
