"""Plan provider prompt-cache markers for a (re-laid) request.

Each provider caches prefixes differently, and a marker in the wrong place costs money:

* **Anthropic** caches only up to explicit ``cache_control`` breakpoints, at most 4 per
  request, and only a prefix of at least the model's minimum length (1024 tokens for most
  Sonnet/Opus models, 2048 for Sonnet 4.6 and the Haiku 3 family, 4096 for Opus 4.5/4.6 and
  Haiku 4.5). A cache write costs 1.25x a normal input token, so a breakpoint after a
  per-request value is a write that will never be read: we place breakpoints only at section
  ends inside the stable prefix (tools, system, few-shot), plus one at the end of the request
  (or of the history, when the new turn carries per-request values) so the next turn of the
  conversation reads everything before it.
* **OpenAI** caches automatically from 1024 tokens, in 128-token steps; ``prompt_cache_key``
  routes requests with the same prefix to the same cache, which raises the hit rate when many
  prefixes share traffic. We derive the key from the stable prefix itself.
* **vLLM** automatic prefix caching (on by default in V1) matches whole KV blocks (16 tokens by
  default), so the reusable part is the stable prefix rounded down to a block.
* **llama.cpp** (``llama_cpp.server``) reuses the prefix a request shares with the slot's previous
  prompt; no marker exists.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tokenlean._checks import check_number
from tokenlean.errors import ConfigError
from tokenlean.layout.canonical import as_request, request_segments
from tokenlean.layout.reorder import PromptLayout, stable_prefix_tokens
from tokenlean.types import Request

__all__ = [
    "ANTHROPIC_MAX_BREAKPOINTS",
    "OPENAI_MIN_CACHEABLE_TOKENS",
    "CacheBreakpoint",
    "CachePlan",
    "anthropic_min_cacheable_tokens",
    "plan_cache_markers",
]

ANTHROPIC_MAX_BREAKPOINTS = 4
OPENAI_MIN_CACHEABLE_TOKENS = 1024
OPENAI_CACHE_STEP = 128
VLLM_BLOCK_SIZE = 16
PROVIDERS = ("anthropic", "openai", "vllm", "llamacpp")
_EPHEMERAL = {"type": "ephemeral"}


def anthropic_min_cacheable_tokens(model: str | None) -> int:
    """The minimum cacheable prompt length of an Anthropic model (Anthropic's prompt-caching docs).

    4096 for Claude Opus 4.5 / 4.6 and Haiku 4.5; 2048 for Sonnet 4.6 and the Haiku 3 / 3.5
    family; 1024 for the other Sonnet and Opus models (3.x, 4, 4.1, 4.5) and for unknown names.
    """
    if not model:
        return 1024
    name = model.lower().rsplit("/", 1)[-1].replace(".", "-").replace("_", "-")
    if "haiku" in name:
        return 4096 if re.search(r"haiku-4|4-\d-haiku", name) else 2048
    if "opus" in name:
        return 4096 if re.search(r"opus-4-[5-9]\b|opus-4-[5-9]-|4-[5-9]-opus", name) else 1024
    if "sonnet" in name:
        return 2048 if re.search(r"sonnet-4-[6-9]", name) else 1024
    return 1024


@dataclass(frozen=True, slots=True)
class CacheBreakpoint:
    """Where a marker goes: after ``where`` (tools / system / few_shot / history / request)."""

    where: str
    message_index: int | None
    tool_index: int | None
    prefix_tokens: int


@dataclass(frozen=True)
class CachePlan:
    """The markers and parameters for one provider, and what they should buy.

    ``expected_cached_tokens``: tokens the *next* request with the same stable prefix should
    read from the cache (0 when the stable prefix is below the provider's minimum).
    """

    provider: str
    model: str | None
    min_cacheable_tokens: int
    prompt_tokens: int
    stable_prefix_tokens: int
    expected_cached_tokens: int
    breakpoints: tuple[CacheBreakpoint, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def apply(self, request: Request | Mapping[str, Any]) -> Request:
        """The request with this plan's markers and parameters (the caller's object untouched)."""
        req = as_request(request)
        if self.params:
            req = replace(req, params={**req.params, **self.params})
        if self.provider != "anthropic" or not self.breakpoints:
            return req
        msgs = list(req.messages)
        tools = [dict(t) for t in req.tools]
        for bp in self.breakpoints:
            if bp.message_index is None:
                if bp.tool_index is not None and tools:
                    tools[bp.tool_index] = {**tools[bp.tool_index], "cache_control": dict(_EPHEMERAL)}
                continue
            m = msgs[bp.message_index]
            if isinstance(m.content, str):
                if not m.content:
                    continue
                parts: tuple[Mapping[str, Any], ...] = (
                    {"type": "text", "text": m.content, "cache_control": dict(_EPHEMERAL)},
                )
            elif isinstance(m.content, tuple) and m.content:
                last = {**m.content[-1], "cache_control": dict(_EPHEMERAL)}
                parts = (*m.content[:-1], last)
            else:
                continue
            msgs[bp.message_index] = replace(m, content=parts)
        return replace(req, messages=tuple(msgs), tools=tuple(tools))

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "min_cacheable_tokens": self.min_cacheable_tokens,
            "prompt_tokens": self.prompt_tokens,
            "stable_prefix_tokens": self.stable_prefix_tokens,
            "expected_cached_tokens": self.expected_cached_tokens,
            "breakpoints": [
                {
                    "where": b.where,
                    "message_index": b.message_index,
                    "tool_index": b.tool_index,
                    "prefix_tokens": b.prefix_tokens,
                }
                for b in self.breakpoints
            ],
            "params": dict(self.params),
            "notes": list(self.notes),
        }


def _section_ends(
    req: Request, layout: PromptLayout, model: str | None
) -> tuple[list[tuple[str, int | None, int]], int]:
    """(section, last message index or None for tools, cumulative tokens at its end), and the total."""
    from tokenlean.tokens import get_counter

    counter = get_counter(model)
    sec = layout.sections(req)
    ends: list[tuple[str, int | None, int]] = []
    total = 0
    last_name: str | None = None
    for seg in request_segments(req):
        total += counter.count(seg.text)
        if seg.kind == "tools":
            ends.append(("tools", None, total))
            continue
        i = seg.message_index
        assert i is not None
        name = sec.section_of(i)
        if name == last_name and ends:
            ends[-1] = (name, i, total)
        else:
            ends.append((name, i, total))
        last_name = name
    return ends, total


def plan_cache_markers(
    request: Request | Mapping[str, Any],
    provider: str = "anthropic",
    *,
    model: str | None = None,
    layout: PromptLayout | None = None,
    max_breakpoints: int = ANTHROPIC_MAX_BREAKPOINTS,
    block_size: int = VLLM_BLOCK_SIZE,
) -> CachePlan:
    """Plan cache markers for ``request`` on ``provider`` ("anthropic", "openai", "vllm", "llamacpp").

    Run ``reorder`` first: a marker can only cache the stable prefix the request already has.
    """
    if not isinstance(provider, str) or provider not in PROVIDERS:
        raise ConfigError(f"unknown provider {provider!r}; expected one of {PROVIDERS}")
    check_number(
        max_breakpoints, "max_breakpoints", minimum=1, maximum=ANTHROPIC_MAX_BREAKPOINTS, integer=True
    )
    check_number(block_size, "block_size", minimum=1, integer=True)
    if layout is not None and not isinstance(layout, PromptLayout):
        raise ConfigError(f"layout must be a PromptLayout or None, got {type(layout).__name__}")
    req = as_request(request)
    layout = layout or PromptLayout()
    model = model or req.model
    stable = stable_prefix_tokens(req, layout, model=model)
    ends, total = _section_ends(req, layout, model)
    notes: list[str] = []

    if provider == "anthropic":
        minimum = anthropic_min_cacheable_tokens(model)
        sec = layout.sections(req)
        candidates: list[CacheBreakpoint] = []
        for name, mi, upto in ends:
            if name in ("tools", "system", "few_shot") and upto <= stable:
                tool_index = len(req.tools) - 1 if name == "tools" else None
                candidates.append(CacheBreakpoint(name, mi, tool_index, upto))
        hist = [e for e in ends if e[0] == "history"]
        # An agent loop (calls and results after the last user turn) is repeated whole by its next
        # call: its "new turn" is not per-request, whatever ids or timestamps the results carry.
        loop = any(m.role == "assistant" for m in req.messages[sec.new_turn[0] + 1 :])
        if not loop and _new_turn_has_values(req, sec.new_turn[0]):
            if hist:
                candidates.append(CacheBreakpoint("history", hist[-1][1], None, hist[-1][2]))
            notes.append("the new turn carries per-request values: the last breakpoint ends the history")
        elif req.messages:
            candidates.append(CacheBreakpoint("request", len(req.messages) - 1, None, total))
        kept: list[CacheBreakpoint] = []
        for bp in candidates:
            if bp.prefix_tokens < minimum:
                continue
            if kept and kept[-1].prefix_tokens == bp.prefix_tokens:
                kept[-1] = bp
                continue
            kept.append(bp)
        kept = kept[-max_breakpoints:]
        if not kept:
            notes.append(
                f"no prefix reaches the {minimum}-token minimum of {model or 'this model'}: no markers"
            )
        elif stable < (ends[0][2] if ends else 0):
            notes.append("a per-request value sits in the first section: reorder the request first")
        # The next request of the same kind reads the longest marked prefix inside the stable part.
        expected = max((b.prefix_tokens for b in kept if b.prefix_tokens <= stable), default=0)
        last = kept[-1] if kept else None
        if last is not None and last.where in ("history", "request"):
            notes.append(f"the next turn of this conversation can read {last.prefix_tokens} tokens")
        return CachePlan(provider, model, minimum, total, stable, expected, tuple(kept), {}, tuple(notes))

    if provider == "openai":
        minimum = OPENAI_MIN_CACHEABLE_TOKENS
        expected = 0
        if stable >= minimum:
            expected = minimum + ((stable - minimum) // OPENAI_CACHE_STEP) * OPENAI_CACHE_STEP
        else:
            notes.append(f"stable prefix {stable} < {minimum} tokens: OpenAI will not cache it")
        key = "tl-" + _prefix_digest(req, layout)
        return CachePlan(
            provider, model, minimum, total, stable, expected, (), {"prompt_cache_key": key}, tuple(notes)
        )

    if provider == "vllm":
        if block_size < 1:
            raise ConfigError("block_size must be positive")
        expected = (stable // block_size) * block_size
        notes.append(
            f"automatic prefix caching reuses whole {block_size}-token blocks (--enable-prefix-caching)"
        )
        return CachePlan(provider, model, block_size, total, stable, expected, (), {}, tuple(notes))

    notes.append("llama.cpp reuses the prefix shared with the slot's previous prompt")
    return CachePlan(provider, model, 1, total, stable, stable, (), {}, tuple(notes))


def _new_turn_has_values(req: Request, turn: int) -> bool:
    from tokenlean.layout.canonical import message_text
    from tokenlean.layout.patterns import find_volatile

    return any(find_volatile(message_text(m)) for m in req.messages[turn:])


def _prefix_digest(req: Request, layout: PromptLayout) -> str:
    """A short stable id of the request's stable sections (tools, system, few-shot)."""
    sec = layout.sections(req)
    h = hashlib.sha256()
    for seg in request_segments(req):
        if seg.kind == "tools" or (seg.message_index is not None and seg.message_index < sec.few_shot[1]):
            h.update(seg.text.encode("utf-8", "surrogatepass"))  # a key: lone surrogates are fine
            h.update(b"\x00")
    return h.hexdigest()[:16]
