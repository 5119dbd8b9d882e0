"""Estimators that run the real levers on the trace: layout, semantic cache, compaction, routing.

Each one calls the lever's own code (``tokenlean.layout.PromptLayout``, the cache's key and
guards, ``Compactor.compact``, a routing policy's ``decide``) rather than re-implementing it, so
the estimate moves when the lever improves. Heavy dependencies (the embedder for the semantic
cache) load only when that lever is estimated.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from itertools import pairwise
from typing import Any

from tokenlean.profile.estimates import LeverEstimate, ProfileContext
from tokenlean.types import Usage

__all__ = [
    "default_cache",
    "default_compactor",
    "default_routing_policy",
    "estimate_compaction",
    "estimate_routing",
    "estimate_semantic_cache",
]

log = logging.getLogger("tokenlean.profile")


# -- routing ---------------------------------------------------------------------------------------
def default_routing_policy(max_prompt_tokens: int = 1500) -> Any:
    """Without outcome data, "easy" means short prompts that use no tools (the cheap model's turf).

    Pass a fitted ``tokenlean.routing.LearnedRouter`` (or any policy) to estimate with your own
    difficulty model instead.
    """
    from tokenlean.routing.rules import Rule, RulesPolicy

    return RulesPolicy(
        [Rule(target="cheap", max_tokens=max_prompt_tokens, has_tools=False, name="short prompt, no tools")]
    )


def estimate_routing(
    ctx: ProfileContext,
    *,
    policy: Any = None,
    targets: dict[str, str] | None = None,
    cheap_model: str = "gpt-4o-mini",
) -> LeverEstimate:
    """Savings if the policy's easy requests went to ``cheap_model`` (same tokens, cheaper price).

    ``targets`` maps a policy target name to the model it means (default ``{"cheap":
    cheap_model}``); any other decision keeps the call's own model. Quality is not estimated
    here: check routed answers with the routing evaluation or a cascade before switching.
    """
    calls = ctx.trace.calls
    est = LeverEstimate(
        lever="routing",
        title="Routing (cheap model for easy requests)",
        action=f"tokenlean.routing.Router: send easy requests to {cheap_model}, cascade on doubt",
    )
    if not ctx.trace.has_content:
        est.applicable = False
        est.reason = "the trace has no request content: difficulty cannot be judged"
        return ctx.finish(est, [c.usage for c in calls])
    policy = policy or default_routing_policy()
    targets = targets or {"cheap": cheap_model}
    models_after: list[str] = []
    reasons: Counter[str] = Counter()
    scores: list[float] = []
    for i, (c, model) in enumerate(zip(calls, ctx.priced_as, strict=True)):
        new_model = model
        if c.request is not None and not c.cache_hit:
            decision = policy.decide(c.request)
            if decision is not None:
                if decision.score is not None:
                    scores.append(float(decision.score))
                target_model = targets.get(decision.target)
                if target_model is not None and target_model != model:
                    new_model = target_model
                    est.calls_affected += 1
                    reasons[decision.reason.split(":")[0]] += 1
        models_after.append(new_model)
        if i % 50 == 0:
            ctx.tick("routing", i, len(calls))
    n = len(calls)
    est.metrics = {
        "routed_share": round(est.calls_affected / n, 4) if n else 0.0,
        "routed_calls": est.calls_affected,
        "reasons": dict(reasons),
        "target_models": dict(targets),
    }
    if scores:
        scores.sort()
        est.metrics["score_p10_p50_p90"] = [
            scores[int(0.1 * (len(scores) - 1))],
            scores[len(scores) // 2],
            scores[int(0.9 * (len(scores) - 1))],
        ]
    est.basis = (
        f"{getattr(policy, 'name', type(policy).__name__)} policy decided each recorded request; routed calls "
        f"priced at {', '.join(sorted(set(targets.values())))} with the same tokens"
    )
    if not est.calls_affected:
        est.applicable = False
        est.reason = "the policy routes no request to a cheaper model (no easy requests)"
    return ctx.finish(est, [c.usage for c in calls], models_after)


# -- semantic cache ------------------------------------------------------------------------------------
def default_cache() -> Any:
    """An in-memory ``SemanticCache`` with its default scope, guards and calibrated scorer.

    Without the ``embeddings`` extra it is exact-tier only (and says so in the estimate).
    """
    from tokenlean.cache import SemanticCache

    try:
        from tokenlean.embeddings import get_default_embedder

        embedder = get_default_embedder()
        embedder.embed(["warm-up"])
    except Exception as exc:  # no torch / model: exact duplicates still count
        log.info("semantic tier unavailable for the estimate (%s); exact tier only", exc)
        return SemanticCache(semantic=False)
    return SemanticCache(embedder=embedder)


def estimate_semantic_cache(ctx: ProfileContext, *, cache: Any = None) -> LeverEstimate:
    """Hit potential of exact and near-duplicate requests, by replaying the trace through the cache.

    Calls are replayed in time order through a fresh ``SemanticCache`` (the cache's own scope,
    guards, scorer and thresholds decide every hit): a miss stores the recorded answer, a hit
    would have cost nothing and taken only the lookup time. Pass your configured (empty) cache
    to estimate your settings.
    """
    calls = ctx.trace.calls
    est = LeverEstimate(
        lever="semantic-cache",
        title="Semantic cache (exact + near-duplicate requests)",
        action="tokenlean.cache.SemanticCache in front of the model (guards on numbers, negation, entities)",
    )
    if not any(c.request is not None and c.response is not None for c in calls):
        est.applicable = False
        est.reason = "the trace has no request/answer content: duplicates cannot be found"
        return ctx.finish(est, [c.usage for c in calls])
    cache = cache if cache is not None else default_cache()
    order = sorted(
        range(len(calls)), key=lambda i: (calls[i].started_at is None, calls[i].started_at or 0.0, i)
    )
    hit_at: dict[int, Any] = {}
    tiers: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    lookup_s = 0.0
    for n, i in enumerate(order):
        c = calls[i]
        if c.request is None or c.cache_hit:
            continue
        res = cache.lookup(c.request)
        lookup_s += res.total_ms / 1000
        if res.hit:
            hit_at[i] = res
            tiers[str(res.tier)] += 1
        else:
            if res.rejected_by:
                rejected[res.rejected_by] += 1
            if c.response is not None:
                cache.store(c.request, c.response)
        if n % 10 == 0:
            ctx.tick("semantic-cache", n, len(order))
    after: list[Usage] = []
    for i, c in enumerate(calls):
        if i in hit_at:
            est.calls_affected += 1
            est.input_tokens_saved += c.usage.input_tokens
            est.output_tokens_saved += c.usage.output_tokens
            after.append(Usage())
        else:
            after.append(c.usage)
    looked = sum(1 for c in calls if c.request is not None and not c.cache_hit)
    est.metrics = {
        "hit_rate": round(len(hit_at) / looked, 4) if looked else 0.0,
        "exact_hits": tiers.get("exact", 0),
        "semantic_hits": tiers.get("semantic", 0),
        "rejected_by": dict(rejected),
        "semantic_tier": bool(getattr(cache, "semantic", False)),
        "lookup_ms_per_call": round(1000 * lookup_s / looked, 2) if looked else 0.0,
        "hits": [{"query": r.query, "cached_query": r.cached_query, "tier": r.tier} for r in hit_at.values()][
            :20
        ],
    }
    est.latency_saved_s -= lookup_s
    est.basis = (
        f"{looked} calls replayed through {type(cache).__name__} "
        f"({'exact + semantic' if est.metrics['semantic_tier'] else 'exact tier only'}); "
        f"{len(hit_at)} would be served from the cache"
    )
    if not hit_at:
        est.applicable = False
        est.reason = "no request repeats or paraphrases an earlier one within the cache's scope"
    return ctx.finish(est, after)


# -- compaction -------------------------------------------------------------------------------------------
def default_compactor() -> Any:
    """What the profiler assumes when you pass no compactor: the safe message-level policies.

    Duplicate tool outputs and file views collapse to their latest copy and tool observations
    older than three turns are masked (with handles to expand them); nothing else is cut, so the
    estimate is of a setting that needs no tuning. Lexical scoring keeps it torch-free.
    """
    from tokenlean.compaction import Compactor

    return Compactor(ratio=None, mask_observations_after=3, dedupe=True, mode="lexical", store="memory")


def _sample_positions(n: int, k: int | None) -> list[int]:
    """``k`` turn positions spread evenly over ``0..n-1``, always with the first and the last."""
    if k is None or n <= k:
        return list(range(n))
    k = max(2, k)
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def estimate_compaction(
    ctx: ProfileContext, *, compactor: Any = None, sample: int | None = 12
) -> LeverEstimate:
    """Input tokens verbatim compaction removes, measured by running the compactor on the trace.

    The compactor runs on up to ``sample`` calls per task, spread over its turns (``None``: every
    call); the share it removes is interpolated by turn for the calls in between and applied to
    each call's billed input. Context growth (prompt tokens added per turn) and the stale share
    (what the compactor's masking and de-duplication drop) are reported alongside. The time the
    compactor itself takes is charged against the latency saved.
    """
    import time

    calls = ctx.trace.calls
    est = LeverEstimate(
        lever="compaction",
        title="Verbatim compaction (stale context, growth per turn)",
        action="tokenlean.compaction.Compactor: mask stale tool output, drop duplicate views",
    )
    if not ctx.trace.has_content:
        est.applicable = False
        est.reason = "the trace has no request content: there is nothing to compact"
        return ctx.finish(est, [c.usage for c in calls])
    compactor = compactor or default_compactor()
    index_of = {id(c): i for i, c in enumerate(calls)}
    share = [0.0] * len(calls)
    dropped: Counter[str] = Counter()
    measured_before = 0
    measured_after = 0
    compact_s = 0.0
    runs = 0
    growth: list[float] = []
    tasks = ctx.trace.tasks()
    done = 0
    total_sampled = sum(len(_sample_positions(len(v), sample)) for v in tasks.values())
    for task, task_calls in tasks.items():
        with_req = [c for c in task_calls if c.request is not None]
        if len(with_req) >= 2:
            first, last = with_req[0].usage.input_tokens, with_req[-1].usage.input_tokens
            growth.append((last - first) / (len(with_req) - 1))
        positions = _sample_positions(len(task_calls), sample)
        points: list[tuple[int, float]] = []
        for pos in positions:
            c = task_calls[pos]
            done += 1
            if c.request is None:
                continue
            t0 = time.perf_counter()
            result = compactor.compact(c.request, session=f"profile:{task}")
            compact_s += time.perf_counter() - t0
            runs += 1
            measured_before += result.tokens_before
            measured_after += result.tokens_after
            for k, v in result.dropped.items():
                dropped[k] += int(v)
            frac = 1.0 - result.tokens_after / result.tokens_before if result.tokens_before else 0.0
            points.append((pos, max(0.0, frac)))
            ctx.tick("compaction", done, total_sampled)
        for pos, c in enumerate(task_calls):
            share[index_of[id(c)]] = _interpolate(points, pos)
    after: list[Usage] = []
    for c, frac in zip(calls, share, strict=True):
        u = c.usage
        cut = round(frac * u.uncached_input_tokens) if not c.cache_hit else 0
        if cut <= 0:
            after.append(u)
            continue
        est.calls_affected += 1
        est.input_tokens_saved += cut
        after.append(replace(u, input_tokens=u.input_tokens - cut))
    per_call_s = compact_s / runs if runs else 0.0
    est.latency_saved_s -= per_call_s * len(calls)
    total_in = sum(c.usage.input_tokens for c in calls)
    est.metrics = {
        "calls_compacted": runs,
        "measured_reduction": round(1 - measured_after / measured_before, 4) if measured_before else 0.0,
        "stale_share": round(sum(dropped.values()) / measured_before, 4) if measured_before else 0.0,
        "dropped_by_policy": dict(dropped),
        "context_growth_tokens_per_turn": round(sum(growth) / len(growth), 1) if growth else 0.0,
        "input_share_saved": round(est.input_tokens_saved / total_in, 4) if total_in else 0.0,
        "compactor_ms_per_call": round(per_call_s * 1000, 2),
    }
    est.basis = (
        f"{type(compactor).__name__}.compact run on {runs} of {len(calls)} calls"
        + (" (all)" if runs == len(calls) else ", interpolated by turn")
        + f"; {est.metrics['measured_reduction']:.0%} of their prompt tokens removed"
    )
    if not est.input_tokens_saved:
        est.applicable = False
        est.reason = "the compactor removes nothing from these prompts (no stale or duplicate context)"
    return ctx.finish(est, after)


def _interpolate(points: Sequence[tuple[int, float]], pos: int) -> float:
    """Linear interpolation of sampled (position, share) points; flat beyond the ends."""
    if not points:
        return 0.0
    if pos <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in pairwise(points):
        if x0 <= pos <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (pos - x0) / (x1 - x0)
    return points[-1][1]
