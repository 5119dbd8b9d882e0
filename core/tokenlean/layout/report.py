"""What ``analyze`` reports: each breaker of the stable prefix, where it sits, and the reuse it costs.

A ``Breaker`` is one thing that ends the stable prefix: its kind, its place (section, message or
tool, character offset), how often it occurred, the prompt tokens behind it that caching lost, and
the fix. ``LayoutReport`` gathers the breakers with what an ideal prefix cache reuses over the
stream as sent and after the layout. The analysis sees one breaker once per request it breaks;
``_Found`` folds those sightings into one ``Breaker``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenlean.layout.patterns import BreakerKind
from tokenlean.layout.reorder import PromptLayout

__all__ = ["Breaker", "LayoutReport", "RequestLayout"]

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
