"""``Profiler``: read a trace, run every lever estimator, rank them into a ``ProfileReport``.

Each lever's estimator is looked up by name and imports its lever lazily: profiling a ledger of
numbers never loads torch, and a lever whose optional extra is missing is reported as "not
estimated" with the install hint instead of failing the whole profile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokenlean.errors import ProfileError, TokenleanError
from tokenlean.profile.coding import CACHE_SAFE_COMPACTION_TITLE, estimate_cache_safe_compaction
from tokenlean.profile.estimates import (
    LatencyModel,
    LeverEstimate,
    ProfileContext,
    estimate_generate_less,
    estimate_prompt_cache,
)
from tokenlean.profile.levers import (
    estimate_compaction,
    estimate_routing,
    estimate_semantic_cache,
)
from tokenlean.profile.readers import read_traces
from tokenlean.profile.report import ProfileReport, TraceSummary
from tokenlean.profile.sessions import by_day, by_session
from tokenlean.profile.trace import Trace

__all__ = ["LEVERS", "Profiler", "profile"]

log = logging.getLogger("tokenlean.profile")

LEVERS = (
    "prompt-cache",
    "semantic-cache",
    "compaction",
    "cache-safe-compaction",
    "generate-less",
    "routing",
)

_TITLES = {
    "prompt-cache": "Prompt caching (stable prefix, cache-aware layout)",
    "semantic-cache": "Semantic cache (exact + near-duplicate requests)",
    "compaction": "Verbatim compaction (stale context, growth per turn)",
    "cache-safe-compaction": CACHE_SAFE_COMPACTION_TITLE,
    "generate-less": "Generate less (max_tokens / concise answers)",
    "routing": "Routing (cheap model for easy requests)",
}


class Profiler:
    """Estimates, for one workload, what each tokenlean lever would save.

    ``prices`` is a ``tokenlean.metering.PriceTable`` (default list prices); a model it does not
    know is reported as unpriced, never priced as another; only calls that name no model at all
    are priced as ``default_model``. ``cheap_model`` is the routing
    target for easy requests. ``compactor``, ``cache``, ``policy`` and ``relayout`` replace the
    default lever objects (pass the ones you would deploy, so the estimate is of *your* setup).
    ``layout`` is ``True`` (fit ``tokenlean.layout.PromptLayout`` on the trace), a layout, or
    ``None`` (requests as sent); ``prompt_cache_rules`` overrides the provider's caching rules
    (``min_tokens``, ``block``, ``window``; llama.cpp reuses any prefix: ``min_tokens=0, block=1``).
    """

    def __init__(
        self,
        *,
        prices: Any = None,
        default_model: str = "gpt-4o",
        cheap_model: str = "gpt-4o-mini",
        levers: Sequence[str] = LEVERS,
        output_cap: int | None = None,
        compactor: Any = None,
        cache: Any = None,
        policy: Any = None,
        targets: dict[str, str] | None = None,
        layout: Any = True,
        prompt_cache_rules: dict[str, int] | None = None,
        compaction_sample: int | None = 12,
        show_progress: bool = False,
        console: Any = None,
    ) -> None:
        unknown = set(levers) - set(LEVERS)
        if unknown:
            raise ProfileError(f"unknown levers {sorted(unknown)}; choose from {', '.join(LEVERS)}")
        if prices is None:
            from tokenlean.metering import PriceTable

            prices = PriceTable.default()
        self.prices = prices
        self.default_model = default_model
        self.cheap_model = cheap_model
        self.levers = tuple(levers)
        self.output_cap = output_cap
        self.compactor = compactor
        self.cache = cache
        self.policy = policy
        self.targets = targets
        self.layout = layout
        self.prompt_cache_rules = dict(prompt_cache_rules or {})
        self.compaction_sample = compaction_sample
        self.show_progress = show_progress
        self.console = console

    # -- one lever -------------------------------------------------------------------------------
    def _run_lever(self, name: str, ctx: ProfileContext) -> LeverEstimate:
        if name == "generate-less":
            return estimate_generate_less(ctx, self.output_cap)
        if name == "prompt-cache":
            return estimate_prompt_cache(ctx, layout=self.layout, **self.prompt_cache_rules)
        if name == "semantic-cache":
            return estimate_semantic_cache(ctx, cache=self.cache)
        if name == "compaction":
            return estimate_compaction(ctx, compactor=self.compactor, sample=self.compaction_sample)
        if name == "cache-safe-compaction":
            return estimate_cache_safe_compaction(ctx, compactor=self.compactor)
        if name == "routing":
            return estimate_routing(
                ctx, policy=self.policy, targets=self.targets, cheap_model=self.cheap_model
            )
        raise ProfileError(f"unknown lever {name!r}")

    def _source(self, model: str) -> str | None:
        return _source_of(self.prices, model)

    def _safe_lever(self, name: str, ctx: ProfileContext) -> LeverEstimate:
        try:
            return self._run_lever(name, ctx)
        except (ImportError, TokenleanError) as exc:
            log.warning("lever %s not estimated: %s", name, exc)
            est = LeverEstimate(
                lever=name, title=_TITLES[name], action="", applicable=False, reason=f"not estimated: {exc}"
            )
            return ctx.finish(est, [c.usage for c in ctx.trace.calls])

    # -- whole profile ---------------------------------------------------------------------------
    def profile(self, trace: Trace | str | Path | Sequence[str | Path]) -> ProfileReport:
        """Profile a ``Trace`` or trace file paths; returns the ranked report."""
        if not isinstance(trace, Trace):
            paths = [trace] if isinstance(trace, (str, Path)) else list(trace)
            trace = read_traces(paths)
        if not trace.calls:
            raise ProfileError("the trace has no calls")
        latency = LatencyModel.fit(trace.calls)
        progress_cm: Any = None
        task_ids: dict[str, Any] = {}
        tick: Callable[[str, int, int], None] | None = None
        if self.show_progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            progress_cm = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )

            def tick(label: str, done: int, total: int) -> None:
                if label not in task_ids:
                    task_ids[label] = progress_cm.add_task(label, total=total)
                progress_cm.update(task_ids[label], completed=done, total=total)

        ctx = ProfileContext(trace, self.prices, self.default_model, latency, tick)
        estimates: list[LeverEstimate] = []
        if progress_cm is not None:
            progress_cm.start()
        try:
            overall = progress_cm.add_task("levers", total=len(self.levers)) if progress_cm else None
            for i, name in enumerate(self.levers):
                estimates.append(self._safe_lever(name, ctx))
                if progress_cm is not None:
                    progress_cm.update(overall, completed=i + 1)
        finally:
            if progress_cm is not None:
                progress_cm.stop()
        tokens_per_turn: dict[str, list[int]] = {}
        task_cost: dict[str, Decimal] = {}
        for c, cost in zip(trace.calls, ctx.baseline_costs, strict=True):
            tokens_per_turn.setdefault(c.task_id, []).append(c.usage.total_tokens)
            task_cost[c.task_id] = task_cost.get(c.task_id, Decimal(0)) + cost
        assumptions = []
        nameless = sum(1 for c in trace.calls if not c.model)
        if nameless:
            assumptions.append(f"{nameless} calls name no model; they are priced as {self.default_model}.")
        unpriced = ctx.unpriced()
        if unpriced:
            listed = ", ".join(f"{m} ({n:,} tokens)" for m, n in sorted(unpriced.items())[:5])
            assumptions.append(
                f"No price source knows {listed}: those calls are unpriced (their tokens are counted, "
                "their cost is not), never priced as another model."
            )
        sources = sorted({src for m in set(ctx.priced_as) if (src := self._source(m))})
        if sources:
            assumptions.append("Prices: " + "; ".join(sources) + ".")
        counted = sum(1 for c in trace.calls if c.usage_counted)
        if counted:
            assumptions.append(
                f"{counted} of {len(trace.calls)} calls recorded no usage; their tokens were counted with tiktoken."
            )
        if not latency.fitted:
            assumptions.append("The trace has no timings: latency savings use the default latency model.")
        priced = [m in self.prices for m in ctx.priced_as]
        return ProfileReport(
            sessions=by_session(trace.calls, ctx.baseline_costs, priced),
            days=by_day(trace.calls, ctx.baseline_costs, priced),
            summary=TraceSummary.of(trace, ctx.baseline_costs, latency),
            estimates=estimates,
            latency=latency,
            default_model=self.default_model,
            assumptions=assumptions,
            tokens_per_turn=tokens_per_turn,
            ttfts=[c.ttft for c in trace.calls if c.ttft is not None and not c.cache_hit],
            task_cost=task_cost,
        )


def _source_of(prices: Any, model: str) -> str | None:
    """``model: source`` for the assumptions (which table, which version priced it)."""
    source_of = getattr(prices, "source_of", None)
    source = source_of(model) if source_of is not None and model in prices else None
    return f"{model} from {source}" if source else None


def profile(trace: Trace | str | Path | Sequence[str | Path], **kwargs: Any) -> ProfileReport:
    """``Profiler(**kwargs).profile(trace)``."""
    return Profiler(**kwargs).profile(trace)
