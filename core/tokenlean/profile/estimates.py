"""Lever estimates: what each lever would save on *this* workload, in tokens, cost and latency.

Every estimator takes the same ``Trace`` and ``ProfileContext`` and returns a ``LeverEstimate``.
Cost is always computed by ``tokenlean.metering.PriceTable.cost`` on a changed ``Usage`` (more
cached input, fewer output tokens, a cheaper model), never by hand-written arithmetic, so the
profiler and the meter agree to the cent. Latency uses a ``LatencyModel`` fitted to the trace's
own timings when it has them (TTFT against uncached prompt tokens; decode speed from output
tokens over generation time), and documented defaults otherwise; the report says which.

The content levers call the lever's own code (the compactor, the cache's guards, the layout
analyser, the router's policy) so an estimate never drifts from what the lever really does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from tokenlean.profile.trace import Call, Trace
from tokenlean.types import Usage

__all__ = [
    "LatencyModel",
    "LeverEstimate",
    "ProfileContext",
    "estimate_generate_less",
    "estimate_prompt_cache",
    "provider_cached_tokens",
]

log = logging.getLogger("tokenlean.profile")

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Seconds a call takes as a function of its tokens.

    ``ttft = overhead_s + prefill_s_per_token * uncached_input_tokens`` and
    ``decode = output_tokens / decode_tokens_per_s``. The defaults are rough figures for a hosted
    frontier model, used only when the trace has no timings to fit; ``fitted`` says whether the
    numbers come from the trace itself.
    """

    overhead_s: float = 0.35
    prefill_s_per_token: float = 1 / 4000
    decode_tokens_per_s: float = 60.0
    fitted: bool = False

    def ttft(self, uncached_input_tokens: int) -> float:
        return self.overhead_s + self.prefill_s_per_token * uncached_input_tokens

    def decode(self, output_tokens: int) -> float:
        return output_tokens / self.decode_tokens_per_s if self.decode_tokens_per_s > 0 else 0.0

    def latency(self, usage: Usage) -> float:
        return self.ttft(usage.uncached_input_tokens) + self.decode(usage.output_tokens)

    @classmethod
    def fit(cls, calls: Iterable[Call]) -> LatencyModel:
        """Least-squares TTFT line and median decode speed over the calls that have timings."""
        xs: list[float] = []
        ys: list[float] = []
        speeds: list[float] = []
        for c in calls:
            if c.cache_hit:
                continue
            if c.ttft is not None:
                xs.append(float(c.usage.uncached_input_tokens))
                ys.append(c.ttft)
            d = c.decode_seconds
            if d is not None and d > 0 and c.usage.output_tokens > 1:
                speeds.append((c.usage.output_tokens - 1) / d)
        base = cls()
        overhead, slope, fitted = base.overhead_s, base.prefill_s_per_token, False
        if len(xs) >= 3:
            mx = sum(xs) / len(xs)
            my = sum(ys) / len(ys)
            var = sum((x - mx) ** 2 for x in xs)
            if var > 0:
                s = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
                if s > 0:
                    slope, overhead, fitted = s, max(0.0, my - s * mx), True
            if not fitted:
                overhead, slope, fitted = max(0.0, my), 0.0, True
        tps = base.decode_tokens_per_s
        if speeds:
            speeds.sort()
            tps = speeds[len(speeds) // 2]
            fitted = True
        return cls(overhead, slope, tps, fitted)


@dataclass
class LeverEstimate:
    """What one lever would save on the profiled trace.

    ``tokens_saved`` counts tokens no longer paid at full price: removed input and output
    tokens, or (prompt caching) input tokens read from the provider's cache at its discount.
    ``cost_before`` / ``cost_after`` are for the whole trace; ``task_cost_after`` per task for
    the report's before/after chart. ``basis`` says how the number was obtained.
    """

    lever: str
    title: str
    action: str
    applicable: bool = True
    reason: str = ""
    input_tokens_saved: int = 0
    output_tokens_saved: int = 0
    cost_before: Decimal = _ZERO
    cost_after: Decimal = _ZERO
    latency_saved_s: float = 0.0
    ttft_saved_s: float = 0.0
    calls_affected: int = 0
    task_cost_after: dict[str, Decimal] = field(default_factory=dict)
    call_usage_after: list[Usage] = field(default_factory=list, repr=False)
    metrics: dict[str, Any] = field(default_factory=dict)
    basis: str = ""

    @property
    def tokens_saved(self) -> int:
        return self.input_tokens_saved + self.output_tokens_saved

    @property
    def cost_saved(self) -> Decimal:
        return self.cost_before - self.cost_after

    @property
    def cost_saved_share(self) -> float:
        return float(self.cost_saved / self.cost_before) if self.cost_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "lever": self.lever,
            "title": self.title,
            "action": self.action,
            "applicable": self.applicable,
            "reason": self.reason,
            "tokens_saved": self.tokens_saved,
            "input_tokens_saved": self.input_tokens_saved,
            "output_tokens_saved": self.output_tokens_saved,
            "cost_before": str(self.cost_before),
            "cost_after": str(self.cost_after),
            "cost_saved": str(self.cost_saved),
            "cost_saved_share": round(self.cost_saved_share, 4),
            "latency_saved_s": round(self.latency_saved_s, 3),
            "ttft_saved_s": round(self.ttft_saved_s, 3),
            "calls_affected": self.calls_affected,
            "task_cost_after": {k: str(v) for k, v in self.task_cost_after.items()},
            "metrics": self.metrics,
            "basis": self.basis,
        }


Progress = Callable[[str, int, int], None]


def _write_1h(call: Any) -> int:
    """Cache-write tokens of the 1-hour tier a coding-agent trace recorded (priced apart)."""
    value = (getattr(call, "extra", None) or {}).get("cache_write_1h_tokens", 0)
    return int(value) if isinstance(value, int) and value > 0 else 0


@dataclass
class ProfileContext:
    """What every estimator shares: prices, the latency model and per-call baselines."""

    trace: Trace
    prices: Any  # tokenlean.metering.PriceTable (typed loosely: imported lazily)
    default_model: str = "gpt-4o"
    latency: LatencyModel = field(default_factory=LatencyModel)
    progress: Progress | None = None
    options: dict[str, Any] = field(default_factory=dict)
    _baseline: list[Decimal] = field(default_factory=list, init=False, repr=False)
    _priced_as: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        for c in self.trace.calls:
            model = self.price_model(c.model)
            self._priced_as.append(model)
            self._baseline.append(self.cost(model, c.usage, _write_1h(c)))

    def price_model(self, model: str | None) -> str:
        """The model a call is priced as: its own when the table knows it. A model the table does
        not know stays itself (unpriced: never priced as another model); only a call that names
        no model at all (some traces record none) is priced as ``default_model``."""
        if model:
            return model
        return self.default_model

    def cost(self, model: str, usage: Usage, cache_write_1h_tokens: int = 0) -> Decimal:
        """The call's cost; zero when the model has no price (``unpriced`` lists those)."""
        value = self.prices.cost(model, usage, cache_write_1h_tokens=cache_write_1h_tokens)
        return _ZERO if value is None else value

    def unpriced(self) -> dict[str, int]:
        """Models no price source knows -> their tokens (reported, not priced)."""
        out: dict[str, int] = {}
        for c, model in zip(self.trace.calls, self._priced_as, strict=True):
            if model not in self.prices:
                out[model or "(none)"] = out.get(model or "(none)", 0) + c.usage.total_tokens
        return out

    @property
    def baseline_costs(self) -> list[Decimal]:
        return self._baseline

    @property
    def priced_as(self) -> list[str]:
        return self._priced_as

    def tick(self, label: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(label, done, total)

    def finish(
        self, est: LeverEstimate, usages_after: Sequence[Usage], models_after: Sequence[str] | None = None
    ) -> LeverEstimate:
        """Fill cost, per-task cost and latency of ``est`` from the per-call usage after the lever."""
        calls = self.trace.calls
        models = list(models_after) if models_after is not None else self._priced_as
        before = sum(self._baseline, _ZERO)
        per_task: dict[str, Decimal] = {}
        after_total = _ZERO
        lat_saved = 0.0
        ttft_saved = 0.0
        for i, (c, u) in enumerate(zip(calls, usages_after, strict=True)):
            cost = self.cost(models[i], u, min(_write_1h(c), u.cache_write_tokens)) if u is not None else _ZERO
            after_total += cost
            per_task[c.task_id] = per_task.get(c.task_id, _ZERO) + cost
            if u is None:
                continue
            t0 = self.latency.ttft(c.usage.uncached_input_tokens)
            t1 = self.latency.ttft(u.uncached_input_tokens)
            ttft_saved += t0 - t1
            lat_saved += (
                (t0 - t1) + self.latency.decode(c.usage.output_tokens) - self.latency.decode(u.output_tokens)
            )
        est.cost_before = before
        est.cost_after = after_total
        est.task_cost_after = per_task
        est.call_usage_after = list(usages_after)
        est.latency_saved_s += lat_saved
        est.ttft_saved_s += ttft_saved
        return est


# -- generate less -------------------------------------------------------------------------------
def estimate_generate_less(ctx: ProfileContext, cap: int | None = None) -> LeverEstimate:
    """Output-token share of cost and latency, and what a ``max_tokens`` cap would save.

    The cap defaults to the 75th percentile of the free-text answers' lengths: the long tail
    above it is where verbose answers live. Calls that emit tool calls are never capped (a
    truncated tool call is a broken call). ``metrics["truncated_calls"]`` says how many answers
    the cap would cut short: a cap is only a lever if those answers were padding.
    """
    calls = ctx.trace.calls
    est = LeverEstimate(
        lever="generate-less",
        title="Generate less (max_tokens / concise answers)",
        action="set max_tokens near the answers' useful length and ask for concise output",
    )
    text_outs = sorted(
        c.usage.output_tokens
        for c in calls
        if not c.cache_hit and not (c.response is not None and c.response.message.tool_calls)
    )
    total_out = sum(c.usage.output_tokens for c in calls)
    total_in = sum(c.usage.input_tokens for c in calls)
    out_cost = sum(
        (ctx.cost(m, Usage(0, c.usage.output_tokens)) for c, m in zip(calls, ctx.priced_as, strict=True)),
        _ZERO,
    )
    base_cost = sum(ctx.baseline_costs, _ZERO)
    decode_s = sum(ctx.latency.decode(c.usage.output_tokens) for c in calls)
    total_s = sum(ctx.latency.latency(c.usage) for c in calls)
    est.metrics = {
        "output_token_share": round(total_out / (total_in + total_out), 4) if total_in + total_out else 0.0,
        "output_cost_share": round(float(out_cost / base_cost), 4) if base_cost else 0.0,
        "output_latency_share": round(decode_s / total_s, 4) if total_s else 0.0,
    }
    if not text_outs:
        est.applicable = False
        est.reason = "no free-text answers to cap (every call emits tool calls)"
        return ctx.finish(est, [c.usage for c in calls])
    if cap is None:
        cap = max(1, text_outs[min(len(text_outs) - 1, math.ceil(0.75 * len(text_outs)) - 1)])
    after: list[Usage] = []
    truncated = 0
    for c in calls:
        u = c.usage
        if (
            c.cache_hit
            or (c.response is not None and c.response.message.tool_calls)
            or u.output_tokens <= cap
        ):
            after.append(u)
            continue
        truncated += 1
        cut = u.output_tokens - cap
        est.output_tokens_saved += cut
        after.append(replace(u, output_tokens=cap, reasoning_tokens=min(u.reasoning_tokens, cap)))
    est.calls_affected = truncated
    est.metrics.update({"cap": cap, "truncated_calls": truncated})
    est.basis = f"max_tokens={cap} applied to each recorded answer length (tool-calling turns exempt)"
    if not truncated:
        est.applicable = False
        est.reason = f"no answer is longer than the cap ({cap} tokens)"
    return ctx.finish(est, after)


# -- prompt caching -----------------------------------------------------------------------------
def provider_cached_tokens(
    reused: int, prompt_tokens: int, *, min_tokens: int = 1024, block: int = 128
) -> int:
    """What a provider bills as cached, given the prefix an ideal cache could reuse.

    OpenAI (and vLLM's block cache) reuse whole ``block``-token blocks, and only for prompts of
    at least ``min_tokens``; ``min_tokens=0, block=1`` describes llama.cpp's token-level reuse.
    """
    if prompt_tokens < min_tokens:
        return 0
    cached = (reused // block) * block if block > 1 else reused
    return cached if cached >= min_tokens else 0


def estimate_prompt_cache(
    ctx: ProfileContext,
    *,
    layout: Any = True,
    min_tokens: int = 1024,
    block: int = 128,
    window: int = 16,
) -> LeverEstimate:
    """Prompt-cache savings from a stable prefix, at the provider's cached-input price.

    ``tokenlean.layout.analyze`` replays the calls (in time order) through its ideal prefix cache
    (each request reuses its longest common token prefix with one of the last ``window``
    requests) as sent and after re-laying every request stable-first (``layout``: ``True`` fits
    ``PromptLayout`` on the trace, ``None``/``False`` keeps the requests as sent, or pass your
    ``PromptLayout``). The provider's rules (``provider_cached_tokens``) turn the reusable prefix
    into billed cached tokens; the saving is what that adds over the cached tokens the trace's
    usage already reports.
    """
    from tokenlean.layout import analyze

    calls = ctx.trace.calls
    est = LeverEstimate(
        lever="prompt-cache",
        title="Prompt caching (stable prefix, cache-aware layout)",
        action="tokenlean.layout.PromptLayout: stable prefix first, volatile values last; turn on provider caching",
    )
    order = [
        i
        for i in sorted(
            range(len(calls)), key=lambda i: (calls[i].started_at is None, calls[i].started_at or 0.0, i)
        )
        if calls[i].request is not None
    ]
    if not order:
        est.applicable = False
        est.reason = "the trace has no request content (a ledger): prefix stability cannot be measured"
        return ctx.finish(est, [c.usage for c in calls])
    ctx.tick("prompt-cache", 0, 1)
    kwargs: dict[str, Any] = {"model": ctx.default_model, "window": window}
    if layout not in (True, None, False):
        kwargs["layout"] = layout
    report = analyze([r for i in order if (r := calls[i].request) is not None], **kwargs)
    ctx.tick("prompt-cache", 1, 1)
    use_layout = layout not in (None, False)
    # A layout fitted on a mixed stream can do worse than the requests as sent; then the
    # advice is "cache what you send" and the estimate says so.
    if use_layout and report.reused_prefix_tokens_after < report.reused_prefix_tokens:
        use_layout = False
        est.metrics["layout_not_helpful"] = True
    cached_by_call: dict[int, int] = {}
    as_sent = 0
    for pos, i in enumerate(order):
        per = report.per_request[pos]
        prompt = calls[i].usage.input_tokens
        # The analyser counts its own serialisation of the request (segment headers, tool-call
        # ids), the bill counts the prompt as sent: convert the reusable prefix into billed
        # tokens by the request's own ratio. Capping it at the prompt instead would bill the
        # new turn, never sent before, as cached whenever the serialisation is the longer count.
        scale = prompt / per.prompt_tokens if per.prompt_tokens else 0.0

        def billed(reused: int, scale: float = scale, prompt: int = prompt) -> int:
            return min(prompt, int(reused * scale))

        sent = provider_cached_tokens(
            billed(per.reused_prefix_tokens), prompt, min_tokens=min_tokens, block=block
        )
        after = per.reused_prefix_tokens_after if use_layout else per.reused_prefix_tokens
        as_sent += sent
        cached_by_call[i] = provider_cached_tokens(billed(after), prompt, min_tokens=min_tokens, block=block)
    usages: list[Usage] = []
    prompt_tokens = 0
    for i, c in enumerate(calls):
        u = c.usage
        prompt_tokens += u.input_tokens
        cached = min(u.input_tokens, cached_by_call.get(i, 0))
        if cached <= u.cached_input_tokens or c.cache_hit:
            usages.append(u)
            continue
        est.input_tokens_saved += cached - u.cached_input_tokens
        est.calls_affected += 1
        usages.append(Usage(u.input_tokens, u.output_tokens, cached, 0, u.reasoning_tokens))
    est.metrics = {
        **est.metrics,
        "prompt_tokens": prompt_tokens,
        "already_cached_tokens": sum(c.usage.cached_input_tokens for c in calls),
        "cacheable_tokens_as_sent": as_sent,
        "cacheable_tokens_after_layout": sum(cached_by_call.values()),
        "cacheable_share": round(sum(cached_by_call.values()) / prompt_tokens, 4) if prompt_tokens else 0.0,
        "ideal_reuse_share_as_sent": round(report.cacheable_share, 4),
        "ideal_reuse_share_after_layout": round(report.cacheable_share_after, 4),
        "breakers": report.by_kind(),
        "min_cacheable_tokens": min_tokens,
        "block_tokens": block,
    }
    est.basis = (
        f"tokenlean.layout.analyze prefix replay (window {window})"
        + (" with the fitted layout" if use_layout else " on the requests as sent")
        + f", billed in {block}-token blocks from {min_tokens} tokens"
    )
    if not est.input_tokens_saved:
        est.applicable = False
        est.reason = "no reusable prefix of cacheable length beyond what is already cached"
    return ctx.finish(est, usages)
