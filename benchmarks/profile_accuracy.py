"""Profiler accuracy: each lever's *estimated* saving against the saving measured by *applying* it.

    python benchmarks/profile_accuracy.py [--data DIR] [--json OUT] [--quick]

Data: the SWE-agent trajectories in ``DIR/agent_traces/swe-agent`` (``.traj``; the folder holds 19,
not the 20 its README counts), read with ``tokenlean.profile.readers.read_trace`` exactly as
``tokenlean profile`` reads them (no model recorded: every call is priced as the profiler's
default, gpt-4o, from ``PriceTable.pinned()``; token counts from tiktoken, as the reader counts
them). Each trajectory is profiled on its own with ``Profiler()`` at its defaults, then each lever
the profiler estimates (``tokenlean.profile.profiler.LEVERS``) is applied to the same calls where
that can be done offline, and the two savings are compared in the unit the estimator reports:

* **compaction** (unit: input tokens): the estimator runs ``default_compactor()`` on up to 12
  sampled calls per task and interpolates the share removed for the calls in between. Applied:
  the same compactor (a fresh ``default_compactor()``, the same session name) compacts *every*
  call's request in turn order, and the compacted messages are counted with the counter that
  produced the call's recorded ``input_tokens`` (``tokenlean.tokens.count_messages``). Saving =
  input tokens removed / input tokens. The cost share is reported alongside, and so is the saving
  under OpenAI prompt caching (``compaction_sessions.CacheLedger``): the estimate assumes no cache.
* **prompt-cache** (unit: cost): the estimator replays the requests through
  ``tokenlean.layout.analyze`` (window 16, its own serialisation and token count) and bills the
  reusable prefix by OpenAI's rules. Applied: each request is re-laid with ``PromptLayout.fit`` on
  the trace (or sent as recorded when the estimator found the layout does not help); the prefix
  it shares with any earlier call of the session is counted in the units its prompt is billed in
  (``BilledPrefix``: identical leading messages by ``count_message``, then the common token prefix
  of the first differing one) and rounded by ``compaction_sessions.openai_cached`` (>= 1,024
  tokens, then 128-token steps); those tokens are priced at gpt-4o's cached-input price. Saving =
  cost saved / cost without caching (input and output, as the estimator's ``cost_saved_share``).
  The same replay in the analyser's units (``compaction_sessions.CacheLedger``) is reported too.
* **semantic-cache** (unit: cost): the estimator counts every hit of a replay through a fresh
  ``SemanticCache`` as free. Applied: the same replay, but a hit is a saving only when the answer
  it serves is the answer the model gave to that request in the trace (text and tool calls);
  any other hit would have fed the agent a different answer, after which the rest of the recorded
  trace no longer happens. Exact repeats of earlier requests are counted as ground truth.
* **generate-less** and **routing** change what the model *writes*: applying them needs a model to
  answer under the cap or on the cheaper model. Offline, their arithmetic (truncate the recorded
  answer at the cap; the same tokens at the cheaper price) *is* the estimate, so they are listed
  under ``not_applicable`` with the reason and their estimates, not scored.

Errors: ``abs_error = |estimated - applied|``; ``rel_error = abs_error / applied`` (0 when both are
0, ``None`` when only the applied saving is 0); ``within_10pct = rel_error <= 0.10``. The overall
figures pool all traces (savings summed over savings' bases), not an average of per-trace ratios.

No estimator was changed for this benchmark, so nothing was fitted and no tuning split is needed;
the first 10 and the last 9 trajectories by file name are also reported separately.
``--quick`` takes the 3 smallest trajectories (for the test).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compaction_sessions as cs  # sibling benchmark: cache pricing, serialisation
from _output import write_json

DEFAULT_DATA = cs.DEFAULT_DATA
TRACES = cs.TRACES
HALF = cs.HALF
TARGET = 0.10
QUICK_TRACES = 3
SAMPLE_SIZES = (4, 8, 12, None)  # the profiler's compaction_sample (default 12; None: every call)

UNITS = {"compaction": "tokens", "prompt-cache": "cost", "semantic-cache": "cost"}
HOW_APPLIED = {
    "compaction": (
        "default_compactor() (the profiler's assumed settings) run on every call's request in turn "
        "order, one session per trajectory; the compacted messages counted with "
        "tokenlean.tokens.count_messages (the counter behind the recorded input tokens)"
    ),
    "prompt-cache": (
        "each request re-laid with PromptLayout.fit on the trajectory (as sent if the estimator "
        "found the layout unhelpful); the prefix shared with any earlier call counted in billed "
        "prompt tokens (identical leading messages by count_message, then the common token prefix "
        "of the first differing one), rounded by OpenAI's rule (compaction_sessions.openai_cached: "
        ">= 1024 tokens, 128-token steps) and priced at gpt-4o's cached-input price"
    ),
    "semantic-cache": (
        "requests replayed in order through a fresh default SemanticCache; a hit saves the call "
        "only if the answer it serves equals the answer recorded for that request"
    ),
}
NOT_APPLICABLE = {
    "generate-less": (
        "a max_tokens cap changes what the model writes; offline, truncating the recorded answers at "
        "the cap is exactly the estimator's arithmetic, so 'applying' it would compare the estimate "
        "with itself. Measuring it needs a model answering under the cap (and, for these agents, a "
        "check that the action, written at the end of each answer, survives)"
    ),
    "routing": (
        "sending a request to the cheaper model changes the answer, and the trace holds no cheaper "
        "model's answers to judge; the price arithmetic (same tokens, cheaper price) is the estimate "
        "itself. Measuring it needs both models answering (see benchmarks/routing_honest.py)"
    ),
    "cache-safe-compaction": (
        "it prices compaction on top of the prompt cache the provider really served, and these "
        "trajectories record no cache reads (the estimator says so and steps aside for plain "
        "compaction); checking it needs coding-agent sessions with realised cache reads"
    ),
}


# -- helpers ---------------------------------------------------------------------------------------


def _share(saved: float | Decimal, base: float | Decimal) -> float:
    return float(saved) / float(base) if base else 0.0


def errors(estimated: float, applied: float) -> dict[str, Any]:
    """abs / rel error and the 10% verdict, one definition for every row."""
    abs_error = abs(estimated - applied)
    if applied:
        rel: float | None = abs_error / abs(applied)
    else:
        rel = 0.0 if abs_error == 0 else None
    return {
        "abs_error": round(abs_error, 6),
        "rel_error": None if rel is None else round(rel, 6),
        "within_10pct": rel is not None and rel <= TARGET + 1e-12,
    }


def _row(estimated: float, applied: float, **extra: Any) -> dict[str, Any]:
    return {
        "estimated": round(estimated, 6),
        "applied": round(applied, 6),
        **errors(estimated, applied),
        **extra,
    }


def _messages(request: Any) -> list[dict[str, Any]]:
    if request.tools:  # the serialiser sees messages only; .traj requests carry no tool schemas
        raise SystemExit("a request with tool schemas: profile_accuracy expects SWE-agent trajectories")
    return [m.to_openai() for m in request.messages]


# -- levers applied ----------------------------------------------------------------------------------


def apply_compaction(ctx: Any, ser: cs.Serializer) -> dict[str, Any]:
    """Every call compacted by the profiler's default compactor; tokens and cost of what is sent."""
    from tokenlean.profile.levers import default_compactor
    from tokenlean.tokens import count_messages

    trace = ctx.trace
    index_of = {id(c): i for i, c in enumerate(trace.calls)}
    after: list[Any] = [c.usage for c in trace.calls]
    base_ledger, comp_ledger = cs.CacheLedger(), cs.CacheLedger()
    for task, calls in trace.tasks().items():
        compactor = default_compactor()
        for c in calls:
            if c.request is None or c.cache_hit:
                continue
            res = compactor.compact(c.request, session=f"profile:{task}")
            res.verify()
            sent = count_messages(res.messages, c.request.model, c.request.tools)
            after[index_of[id(c)]] = replace(c.usage, input_tokens=sent)
            base_ledger.add(ser.segments(_messages(c.request)), [])
            comp_ledger.add(ser.segments([m.to_openai() for m in res.messages]), [])
    ser.reset()
    total_in = sum(c.usage.input_tokens for c in trace.calls)
    saved = sum(c.usage.input_tokens - u.input_tokens for c, u in zip(trace.calls, after, strict=True))
    cost_after = sum((ctx.cost(m, u) for m, u in zip(ctx.priced_as, after, strict=True)), Decimal(0))
    cost_before = sum(ctx.baseline_costs, Decimal(0))
    base_oa, comp_oa = cs.costs(base_ledger)["openai"], cs.costs(comp_ledger)["openai"]
    return {
        "saved": saved,
        "base": total_in,
        "cost_saved": cost_before - cost_after,
        "cost_base": cost_before,
        "cached_input_cost_before": base_oa,
        "cached_input_cost_after": comp_oa,
    }


class BilledPrefix:
    """Reusable prefix of a request, counted in the units its prompt is billed in.

    The provider caches the rendered chat (per message: framing, role, text, tool calls), and a
    call's billed prompt (``usage.input_tokens``) is counted by ``tokenlean.tokens`` in exactly
    those units. The prefix one request shares with an earlier one is the run of identical leading
    messages (each counted with ``count_message``) plus, in the first message that differs (same
    role), the framing and the common prefix of the two texts' token ids.
    """

    def __init__(self, model: str | None) -> None:
        from tokenlean.tokens import TOKENS_PER_MESSAGE, get_counter

        self._counter = get_counter(model)
        self._frame = TOKENS_PER_MESSAGE
        self._seen: list[tuple[Any, ...]] = []
        self._sizes: dict[int, int] = {}
        self._ids: dict[str, list[int]] = {}

    def _size(self, m: Any) -> int:
        n = self._sizes.get(id(m))  # the messages live as long as the trace: ids stay unique
        if n is None:
            n = self._sizes[id(m)] = self._counter.count_message(m)
        return n

    def _encode(self, text: str) -> list[int]:
        ids = self._ids.get(text)
        if ids is None:
            ids = self._ids[text] = self._counter.encode(text)
        return ids

    def _shared(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> int:
        n = 0
        for x, y in zip(a, b, strict=False):
            if x == y:
                n += self._size(x)
                continue
            if x.role == y.role and not x.tool_calls and not y.tool_calls:
                common = 0
                for p, q in zip(self._encode(x.text), self._encode(y.text), strict=False):
                    if p != q:
                        break
                    common += 1
                n += self._frame + self._counter.count(x.role) + common
            return n
        return n

    def add(self, messages: tuple[Any, ...]) -> int:
        """Tokens of ``messages`` an earlier request of the session already sent (the best match)."""
        best = max((self._shared(messages, old) for old in self._seen), default=0)
        self._seen.append(messages)
        return best


def apply_prompt_cache(ctx: Any, est: Any, ser: cs.Serializer) -> dict[str, Any]:
    """Requests (re-laid as the estimator advises) priced under OpenAI's prefix-cache rules."""
    from tokenlean.layout import PromptLayout
    from tokenlean.types import Usage

    calls = ctx.trace.calls
    order = sorted(
        (i for i, c in enumerate(calls) if c.request is not None),
        key=lambda i: (calls[i].started_at is None, calls[i].started_at or 0.0, i),
    )
    use_layout = not est.metrics.get("layout_not_helpful", False)
    reqs = [calls[i].request for i in order]
    if use_layout:
        layout = PromptLayout.fit(reqs)
        reqs = [layout.apply(r, model=ctx.default_model).request for r in reqs]
    billed = BilledPrefix(reqs[0].model if reqs else None)
    ledger = cs.CacheLedger()  # the same replay in the layout analyser's units (a diagnostic)
    cached_by_call: dict[int, int] = {}
    canonical_by_call: dict[int, int] = {}
    for i, r in zip(order, reqs, strict=True):
        prompt = calls[i].usage.input_tokens
        shared = billed.add(r.messages)
        cached_by_call[i] = cs.openai_cached(min(shared, prompt))
        before = ledger.oa_cached
        ledger.add(ser.segments(_messages(r)), [])
        canonical_by_call[i] = ledger.oa_cached - before
    ser.reset()

    def cost_with(cached_of: dict[int, int]) -> tuple[Decimal, int]:
        total, cached_total = Decimal(0), 0
        for i, (c, model) in enumerate(zip(calls, ctx.priced_as, strict=True)):
            u = c.usage
            cached = min(u.input_tokens, cached_of.get(i, 0))
            if not c.cache_hit and cached > u.cached_input_tokens:
                u = Usage(u.input_tokens, u.output_tokens, cached, 0, u.reasoning_tokens)
            total += ctx.cost(model, u)
            cached_total += u.cached_input_tokens
        return total, cached_total

    cost_before = sum(ctx.baseline_costs, Decimal(0))
    cost_after, cached_tokens = cost_with(cached_by_call)
    cost_canonical, cached_canonical = cost_with(canonical_by_call)
    capped = sum(1 for i, n in canonical_by_call.items() if n > calls[i].usage.input_tokens)
    return {
        "saved": cost_before - cost_after,
        "base": cost_before,
        "layout_applied": use_layout,
        "cached_tokens": cached_tokens,
        "saved_canonical_units": cost_before - cost_canonical,
        "cached_tokens_canonical_units": cached_canonical,
        "calls_prefix_over_prompt": capped,
    }


def _same_answer(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    ta = [(t.name, t.arguments) for t in a.message.tool_calls]
    tb = [(t.name, t.arguments) for t in b.message.tool_calls]
    return a.message.text.strip() == b.message.text.strip() and ta == tb


def apply_semantic_cache(ctx: Any) -> dict[str, Any]:
    """Replay through a fresh cache; only hits that serve the recorded answer are savings."""
    from tokenlean.layout import canonical_json
    from tokenlean.profile.levers import default_cache

    calls = ctx.trace.calls
    cache = default_cache()
    order = sorted(
        range(len(calls)), key=lambda i: (calls[i].started_at is None, calls[i].started_at or 0.0, i)
    )
    seen: set[str] = set()
    hits = verified = exact_repeats = 0
    saved = Decimal(0)
    for i in order:
        c = calls[i]
        if c.request is None or c.cache_hit:
            continue
        key = canonical_json(_messages(c.request))
        exact_repeats += key in seen
        seen.add(key)
        res = cache.lookup(c.request)
        if res.hit:
            hits += 1
            if _same_answer(res.response, c.response):
                verified += 1
                saved += ctx.baseline_costs[i]
        elif c.response is not None:
            cache.store(c.request, c.response)
    base = sum(ctx.baseline_costs, Decimal(0))
    return {
        "saved": saved,
        "base": base,
        "hits": hits,
        "verified_hits": verified,
        "exact_repeats": exact_repeats,
        "semantic_tier": bool(getattr(cache, "semantic", False)),
    }


def _action_cut(ctx: Any, cap: int | None) -> int:
    """Answers the generate-less cap would truncate whose text ends in the agent's action block."""
    if cap is None:
        return 0
    n = 0
    for c in ctx.trace.calls:
        r = c.response
        if r is None or r.message.tool_calls or c.usage.output_tokens <= cap:
            continue
        n += r.message.text.rstrip().endswith("```")
    return n


# -- the run -------------------------------------------------------------------------------------------


def trace_files(data: Path, quick: bool) -> list[Path]:
    files = sorted((data / TRACES).glob("*.traj"))
    if quick:
        files = sorted(sorted(files, key=lambda p: p.stat().st_size)[:QUICK_TRACES])
    return files


def run(data: Path, quick: bool) -> dict[str, Any]:
    from tokenlean.metering import PriceTable
    from tokenlean.profile.estimates import ProfileContext
    from tokenlean.profile.profiler import LEVERS, Profiler
    from tokenlean.profile.readers import read_trace
    from tokenlean.profile.trace import Trace

    all_files = sorted((data / TRACES).glob("*.traj"))
    half_of = {p.name: ("first" if k < HALF else "last") for k, p in enumerate(all_files)}
    files = trace_files(data, quick)
    prices = PriceTable.pinned()  # frozen list prices: money figures comparable across releases
    profiler = Profiler(prices=prices)
    ser = cs.Serializer()
    # pooled sums per lever: estimated saved, applied saved, base (estimate and application share it)
    pooled: dict[str, dict[str, dict[str, float]]] = {
        lever: {h: {"est": 0.0, "app": 0.0, "base": 0.0} for h in ("all", "first", "last")} for lever in UNITS
    }
    per_trace: dict[str, list[dict[str, Any]]] = {lever: [] for lever in UNITS}
    extra: dict[str, dict[str, float]] = {
        "compaction": {"est_cost": 0.0, "app_cost": 0.0, "cost_base": 0.0, "oa_before": 0.0, "oa_after": 0.0},
        "semantic-cache": {"hits": 0, "verified_hits": 0, "exact_repeats": 0, "calls": 0},
    }
    unapplied: dict[str, dict[str, Any]] = {
        lever: {"cost_saved": 0.0, "cost_base": 0.0, "calls_affected": 0, "per_trace": []}
        for lever in NOT_APPLICABLE
    }
    seconds = {"profile": 0.0, "apply": 0.0}
    sample_saved = {str(k): 0 for k in SAMPLE_SIZES}
    traces_read: list[Any] = []
    semantic_tier = None
    for path in files:
        trace = read_trace(path)
        t0 = time.perf_counter()
        report = profiler.profile(trace)
        seconds["profile"] += time.perf_counter() - t0
        est = {e.lever: e for e in report.estimates}
        missing = set(LEVERS) - set(est)
        if missing:
            raise SystemExit(f"{path.name}: the profiler returned no estimate for {sorted(missing)}")
        ctx = ProfileContext(trace, profiler.prices, profiler.default_model)
        half = half_of.get(path.name, "last")
        n_calls = len(trace.calls)
        total_in = sum(c.usage.input_tokens for c in trace.calls)

        t0 = time.perf_counter()
        comp = apply_compaction(ctx, ser)
        pc = apply_prompt_cache(ctx, est["prompt-cache"], ser)
        sc = apply_semantic_cache(ctx)
        seconds["apply"] += time.perf_counter() - t0

        e_comp = est["compaction"]
        measured = {
            "compaction": (e_comp.input_tokens_saved, comp["saved"], total_in),
            "prompt-cache": (est["prompt-cache"].cost_saved, pc["saved"], pc["base"]),
            "semantic-cache": (est["semantic-cache"].cost_saved, sc["saved"], sc["base"]),
        }
        details = {
            "compaction": {
                "input_tokens": total_in,
                "tokens_saved_estimated": e_comp.input_tokens_saved,
                "tokens_saved_applied": comp["saved"],
                "cost_share_estimated": round(e_comp.cost_saved_share, 6),
                "cost_share_applied": round(_share(comp["cost_saved"], comp["cost_base"]), 6),
                "calls_compacted_by_estimator": e_comp.metrics.get("calls_compacted"),
            },
            "prompt-cache": {
                "layout_applied": pc["layout_applied"],
                "cached_tokens_estimated": est["prompt-cache"].input_tokens_saved,
                "cached_tokens_applied": pc["cached_tokens"],
                "applied_in_canonical_units": round(_share(pc["saved_canonical_units"], pc["base"]), 6),
                "cached_tokens_canonical_units": pc["cached_tokens_canonical_units"],
                "calls_canonical_prefix_over_prompt": pc["calls_prefix_over_prompt"],
            },
            "semantic-cache": {
                "hits_estimated": est["semantic-cache"].calls_affected,
                "hits_applied": sc["hits"],
                "verified_hits": sc["verified_hits"],
                "exact_repeats": sc["exact_repeats"],
            },
        }
        for lever, (e_saved, a_saved, base) in measured.items():
            e_share, a_share = _share(e_saved, base), _share(a_saved, base)
            per_trace[lever].append(
                _row(e_share, a_share, trace=path.name, calls=n_calls, half=half, **details[lever])
            )
            for h in ("all", half):
                slot = pooled[lever][h]
                slot["est"] += float(e_saved)
                slot["app"] += float(a_saved)
                slot["base"] += float(base)
        xc = extra["compaction"]
        xc["est_cost"] += float(e_comp.cost_saved)
        xc["app_cost"] += float(comp["cost_saved"])
        xc["cost_base"] += float(comp["cost_base"])
        xc["oa_before"] += comp["cached_input_cost_before"]
        xc["oa_after"] += comp["cached_input_cost_after"]
        xs = extra["semantic-cache"]
        for k in ("hits", "verified_hits", "exact_repeats"):
            xs[k] += sc[k]
        xs["calls"] += n_calls
        semantic_tier = sc["semantic_tier"]

        # sensitivity of the compaction estimate to its sample size (calls compacted per task)
        for k in SAMPLE_SIZES:
            e_k = (
                Profiler(prices=prices, levers=("compaction",), compaction_sample=k)
                .profile(trace)
                .estimates[0]
            )
            sample_saved[str(k)] += e_k.input_tokens_saved
        traces_read.append(trace)

        for lever in NOT_APPLICABLE:
            e = est[lever]
            u = unapplied[lever]
            u["cost_saved"] += float(e.cost_saved)
            u["cost_base"] += float(e.cost_before)
            u["calls_affected"] += e.calls_affected
            row: dict[str, Any] = {
                "trace": path.name,
                "estimated": round(e.cost_saved_share, 6),
                "calls_affected": e.calls_affected,
            }
            if lever == "generate-less":
                row["cap"] = e.metrics.get("cap")
                row["action_blocks_cut"] = _action_cut(
                    ctx, e.metrics.get("cap") if e.calls_affected else None
                )
            u["per_trace"].append(row)

    levers: dict[str, Any] = {}
    for lever, unit in UNITS.items():
        p = pooled[lever]
        e_all, a_all = _share(p["all"]["est"], p["all"]["base"]), _share(p["all"]["app"], p["all"]["base"])
        rows = per_trace[lever]
        entry = _row(e_all, a_all)
        entry.update(
            {
                "unit": unit,
                "how_applied": HOW_APPLIED[lever],
                "traces_within_10pct": sum(r["within_10pct"] for r in rows),
                "halves": {
                    h: _row(_share(p[h]["est"], p[h]["base"]), _share(p[h]["app"], p[h]["base"]))
                    for h in ("first", "last")
                    if p[h]["base"]
                },
                "per_trace": rows,
            }
        )
        levers[lever] = entry
    xc = extra["compaction"]
    levers["compaction"]["cost"] = _row(
        _share(xc["est_cost"], xc["cost_base"]), _share(xc["app_cost"], xc["cost_base"])
    )
    levers["compaction"]["applied_under_openai_caching"] = {
        "input_cost_share_saved": round(1 - xc["oa_after"] / xc["oa_before"], 6) if xc["oa_before"] else 0.0,
        "note": (
            "input cost with OpenAI prefix caching on, compacted vs as sent (compaction_sessions.CacheLedger); "
            "the estimator prices compaction without a prompt cache"
        ),
    }
    comp_base = pooled["compaction"]["all"]["base"]
    comp_applied = _share(pooled["compaction"]["all"]["app"], comp_base)
    levers["compaction"]["by_sample_size"] = {
        k: _row(_share(v, comp_base), comp_applied) for k, v in sample_saved.items()
    }
    xs = extra["semantic-cache"]
    if not quick and len(traces_read) > 1:  # one cache in front of every session: cross-trace hits
        merged = Trace.merge(traces_read)
        e_m = Profiler(prices=prices, levers=("semantic-cache",)).profile(merged).estimates[0]
        ctx_m = ProfileContext(merged, profiler.prices, profiler.default_model)
        a_m = apply_semantic_cache(ctx_m)
        levers["semantic-cache"]["merged_stream"] = {
            **_row(e_m.cost_saved_share, _share(a_m["saved"], a_m["base"])),
            "hits_estimated": e_m.calls_affected,
            "hits_applied": a_m["hits"],
            "verified_hits": a_m["verified_hits"],
            "exact_repeats": a_m["exact_repeats"],
        }
    levers["semantic-cache"].update(
        {
            "hits": int(xs["hits"]),
            "verified_hits": int(xs["verified_hits"]),
            "exact_repeats": int(xs["exact_repeats"]),
            "semantic_tier": semantic_tier,
        }
    )
    not_applicable_estimates = {
        lever: {
            "estimated": round(_share(u["cost_saved"], u["cost_base"]), 6),
            "unit": "cost",
            "calls_affected": u["calls_affected"],
            "per_trace": u["per_trace"],
        }
        for lever, u in unapplied.items()
    }
    return {
        "levers": levers,
        "not_applicable": dict(NOT_APPLICABLE),
        "not_applicable_estimates": not_applicable_estimates,
        "profiler_levers": list(LEVERS),
        "traces": len(files),
        "calls": sum(r["calls"] for r in per_trace["compaction"]),
        "split": (
            "no estimator was changed, so nothing was fitted to these traces: every trajectory is reported; "
            f"the first {HALF} by file name ('first') and the rest ('last') are also shown separately"
            + (f"; --quick: the {QUICK_TRACES} smallest trajectories only" if quick else "")
        ),
        "target": f"|estimated - applied| <= {TARGET:.0%} of applied",
        "quick": quick,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
    }


# -- output --------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def print_table(results: dict[str, Any]) -> None:
    print(
        f"\nProfiler estimate vs lever applied: {results['traces']} SWE-agent trajectories, {results['calls']} calls"
    )
    head = f"{'lever':<16}{'unit':<8}{'estimated':>11}{'applied':>11}{'abs err':>10}{'rel err':>10}  within 10%  traces ok"
    print(head)
    print("-" * len(head))
    for name, r in results["levers"].items():
        ok = "yes" if r["within_10pct"] else "NO"
        print(
            f"{name:<16}{r['unit']:<8}{_pct(r['estimated']):>11}{_pct(r['applied']):>11}"
            f"{_pct(r['abs_error']):>10}{_pct(r['rel_error']):>10}  {ok:<10}  "
            f"{r['traces_within_10pct']}/{len(r['per_trace'])}"
        )
    c = results["levers"]["compaction"]
    print(
        f"\ncompaction as cost share: estimated {_pct(c['cost']['estimated'])}, applied {_pct(c['cost']['applied'])}"
        f" (rel err {_pct(c['cost']['rel_error'])}); applied with OpenAI caching on: "
        f"{_pct(c['applied_under_openai_caching']['input_cost_share_saved'])} of input cost"
    )
    print(
        "compaction estimate by sample size (calls compacted per task): "
        + ", ".join(
            f"{k}: {_pct(r['estimated'])} (rel err {_pct(r['rel_error'])})"
            for k, r in c["by_sample_size"].items()
        )
    )
    s = results["levers"]["semantic-cache"]
    print(
        f"semantic cache: {s['hits']} hits ({s['verified_hits']} serve the recorded answer), "
        f"{s['exact_repeats']} exact repeats"
        + (
            f"; one cache over all sessions: {s['merged_stream']['hits_applied']} hits, "
            f"estimated {_pct(s['merged_stream']['estimated'])}, applied {_pct(s['merged_stream']['applied'])}"
            if "merged_stream" in s
            else ""
        )
    )
    for name, reason in results["not_applicable"].items():
        e = results["not_applicable_estimates"][name]
        print(
            f"{name}: not applicable offline (estimate {_pct(e['estimated'])} of cost): {reason.split(';')[0]}"
        )
    print(f"\nper trace ({', '.join(results['levers'])}: estimated/applied):")
    rows = zip(*(r["per_trace"] for r in results["levers"].values()), strict=True)
    for trio in rows:
        cells = "  ".join(f"{_pct(r['estimated']):>7}/{_pct(r['applied']):<7}" for r in trio)
        print(f"  {trio[0]['trace'][:52]:<52} {trio[0]['half']:<5} {cells}")
    print(f"\nseconds: {results['seconds']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="datasets folder (default ../shared/datasets)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    ap.add_argument(
        "--quick", action="store_true", help=f"the {QUICK_TRACES} smallest trajectories (for tests)"
    )
    args = ap.parse_args(argv)
    if not cs.traces_found(args.data):
        return 2
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # no embeddings extra: the semantic cache is exact-tier only, and says so
        pass
    t0 = time.perf_counter()
    results = run(args.data, args.quick)
    results["seconds"]["total"] = round(time.perf_counter() - t0, 2)
    print_table(results)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
