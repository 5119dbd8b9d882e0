"""What a compaction returns: the ``Compacted`` result, its ``Omission`` records and markers.

A result carries the original messages, the compacted ones and, per message, the pieces that make
it (kept character ranges of the original, and markers), so ``verify()`` can prove the output is
verbatim without trusting the code that produced it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenlean.errors import VerbatimViolation
from tokenlean.types import Message, Request

__all__ = ["DEFAULT_MARKER", "DEFAULT_MASK_MARKER", "Compacted", "Omission", "Piece"]

#: The marker that replaces a run of dropped units (``{tokens}``, ``{handle}``).
DEFAULT_MARKER = "[… {tokens} tokens omitted · {handle} …]"
#: The marker that replaces a whole message (masked or de-duplicated; ``{what}`` names it).
DEFAULT_MASK_MARKER = "[… {what}: {tokens} tokens omitted · {handle} …]"


@dataclass(frozen=True, slots=True)
class Omission:
    """One omitted run: which message, which character range(s), why, and its handle."""

    handle: str
    message: int
    ranges: tuple[tuple[int, int], ...]
    tokens: int
    policy: str
    marker: str


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

    def event_attributes(self) -> dict[str, Any]:
        """The compaction as a ``tokenlean.compaction`` event (``tokenlean.events``): counts only."""
        return {
            "tokenlean.compaction.tokens_before": self.tokens_before,
            "tokenlean.compaction.tokens_after": self.tokens_after,
            "tokenlean.compaction.omissions": len(self.omissions),
            "tokenlean.compaction.budget_met": self.budget_met,
        }

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
