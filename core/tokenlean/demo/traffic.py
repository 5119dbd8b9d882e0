"""How the demo sends its traffic: every step through a router, streamed, with optional levers.

``send_steps`` is the application's loop (prepare the request, ask the cache, else stream the
call through the router and store the answer); ``RunRecord`` is one call as the application saw
it. ``ForKind`` and ``ProfilePolicy`` adapt the routing policies to the demo's mixed traffic, and
``prefix_reuse`` reads the llama.cpp servers' own prompt-cache hits from their logs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "STRONG",
    "WEAK",
    "ForKind",
    "ProfilePolicy",
    "RunRecord",
    "log_offsets",
    "norm_answer",
    "prefix_reuse",
    "price_table",
    "send_steps",
]

STRONG, WEAK = "strong", "weak"


@dataclass
class RunRecord:
    """One call of a run, as the application saw it."""

    task_id: str
    kind: str
    text: str
    started_at: float
    first_token_at: float | None
    ended_at: float
    route: str | None = None
    escalated: bool = False
    cache: str | None = None  # "exact" | "semantic" on a hit
    request: Any = None
    response: Any = None


class ForKind:
    """A routing policy that only speaks for one kind of traffic (``metadata["task_type"]``)."""

    def __init__(self, kind: str, policy: Any) -> None:
        self.kind = kind
        self.policy = policy
        self.name = f"{kind}:{getattr(policy, 'name', 'policy')}"

    def decide(self, request: Any) -> Any:
        if request.metadata.get("task_type") != self.kind:
            return None
        return self.policy.decide(request)


class ProfilePolicy:
    """The demo router's policies as one profiler policy (first opinion wins; cascades count as weak)."""

    name = "demo-policies"

    def __init__(self, policies: Sequence[Any]) -> None:
        self.policies = list(policies)

    def decide(self, request: Any) -> Any:
        for p in self.policies:
            d = p.decide(request)
            if d is not None:
                return d
        return None


def norm_answer(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def price_table(strong_as: str, weak_as: str, strong_model: str, weak_model: str) -> Any:
    from tokenlean.metering import PriceTable

    base = PriceTable.default()
    return base.with_price(strong_model, base.price(strong_as)).with_price(weak_model, base.price(weak_as))


def send_steps(
    steps: Sequence[Any],
    router: Any,
    *,
    prepare: Callable[[Any], Any] | None = None,
    cache: Any = None,
    meter: Any = None,
    on_step: Callable[[int], None] | None = None,
) -> list[RunRecord]:
    """Send every step through ``router`` (streamed, so TTFT is real), with optional levers."""
    from tokenlean.routing.router import ROUTING_KEY

    out: list[RunRecord] = []
    for i, step in enumerate(steps):
        request = prepare(step) if prepare is not None else step.request
        started = time.time()
        if cache is not None:
            hit = cache.lookup(request)
            if hit.hit:
                ended = time.time()
                resp = hit.response
                text = hit.text or ""
                usage = resp.usage if resp is not None and resp.usage is not None else None
                if meter is not None:
                    from tokenlean.types import Usage

                    meter.record(
                        model=(resp.model if resp is not None else None) or "cache",
                        usage=usage or Usage(),
                        task_id=step.task_id,
                        tags={"route": "cache", "tier": str(hit.tier)},
                        started_at=started,
                        first_token_at=ended,
                        ended_at=ended,
                        cache_hit=True,
                    )
                out.append(
                    RunRecord(
                        step.task_id,
                        step.kind,
                        text,
                        started,
                        ended,
                        ended,
                        "cache",
                        False,
                        hit.tier,
                        request,
                        resp,
                    )
                )
                if on_step:
                    on_step(i)
                continue
        first: float | None = None
        final = None
        parts: list[str] = []
        for chunk in router.stream(request):
            if chunk.has_token and first is None:
                first = time.time()
            if chunk.text:
                parts.append(chunk.text)
            if chunk.response is not None:
                final = chunk.response
        ended = time.time()
        decision = (final.extra.get(ROUTING_KEY) if final is not None else None) or {}
        text = final.text if final is not None else "".join(parts)
        if cache is not None and final is not None:
            cache.store(request, final)
        out.append(
            RunRecord(
                step.task_id,
                step.kind,
                text,
                started,
                first,
                ended,
                decision.get("target"),
                bool(decision.get("escalated")),
                None,
                request,
                final,
            )
        )
        if on_step:
            on_step(i)
    return out


def log_offsets(servers: Sequence[Any]) -> list[int]:
    return [s.log_file.stat().st_size if s.log_file and s.log_file.exists() else 0 for s in servers]


def prefix_reuse(servers: Sequence[Any], offsets: Sequence[int]) -> float | None:
    """Share of prompt tokens the llama.cpp servers served from their KV cache since ``offsets``.

    llama.cpp reuses the common prefix with its previous prompt; its log says how many tokens
    (``tokenlean.layout.read_llamacpp_prefix_reuse``). This is the prompt-cache hit rate measured.
    """
    from tokenlean.layout import read_llamacpp_prefix_reuse

    reused = evaluated = 0
    for srv, off in zip(servers, offsets, strict=True):
        if not srv.log_file or not srv.log_file.exists():
            return None
        for r in read_llamacpp_prefix_reuse(srv.log_file, offset=off)[0]:
            reused += r.reused_tokens
            evaluated += r.evaluated_tokens
    total = reused + evaluated
    return reused / total if total else None
