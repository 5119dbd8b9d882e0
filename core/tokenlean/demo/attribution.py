"""The profiler's estimate on the baseline trace beside what the applied levers saved.

The demo applies every lever at once, so a lever's own saving is only measurable where the run
itself says which calls it changed:

* **semantic cache** — the calls answered from the cache: their cost in the baseline run;
* **routing** — the calls the router sent to the weak endpoint: their measured cost priced at the
  strong endpoint, minus what they cost (a cascade's weak attempt and escalation both count);
* **compaction** (with layout, which only reorders) — the prompt tokens no longer sent on the
  calls a model answered, priced at the model that answered each call.

These attributions are taken after the other levers (routing saves on already compacted
prompts), while each estimate is the lever alone on the baseline trace, so the per-lever
differences include that overlap. Only the totals are the same quantity on both sides: the sum
of the three estimates against the measured saving of the run with all levers. ``generate-less``
and ``prompt-cache`` are estimated but not applied (local llama.cpp has no cached-token price).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

__all__ = ["APPLIED_LEVERS", "profile_vs_applied", "step_usage"]

APPLIED_LEVERS = ("semantic-cache", "routing", "compaction")
_NOT_APPLIED = {
    "generate-less": "not applied in the demo (no max_tokens cut)",
    "prompt-cache": "not priced here: local llama.cpp bills no cached tokens (prefix reuse is measured above)",
}
_BASIS = {
    "semantic-cache": "baseline cost of the calls the cache answered",
    "routing": "calls sent weak: their cost at the strong price minus what they cost",
    "compaction": "prompt tokens no longer sent (with layout), priced at the model that answered",
}
_ZERO, _MILLION = Decimal(0), Decimal(1_000_000)


def step_usage(ledger: Any, records: Sequence[Any]) -> list[dict[str, Any]]:
    """Per step of a run: the ledger's cost and tokens of its model calls (a cascade has two).

    Each model call in the ledger belongs to the last step of its task that had started by then.
    """
    calls: list[list[Any]] = [[] for _ in records]
    for c in ledger.records():
        if c.cache_hit or c.started_at is None:
            continue
        owner = None
        for i, r in enumerate(records):
            if r.task_id == (c.task_id or "(none)") and r.started_at <= c.started_at + 1e-3:
                owner = i
        if owner is not None:
            calls[owner].append(c)
    return [
        {
            "cost": sum((c.cost or _ZERO for c in cs), _ZERO),
            "input_tokens": sum(c.usage.input_tokens for c in cs),
            "output_tokens": sum(c.usage.output_tokens for c in cs),
            "calls": cs,
        }
        for cs in calls
    ]


def _applied(
    lever: str,
    base: list[dict[str, Any]],
    lean: list[dict[str, Any]],
    lean_records: Sequence[Any],
    prices: Any,
    strong_model: str,
) -> tuple[Decimal, int, int]:
    """(cost saved, tokens saved, calls) that the run with levers attributes to ``lever``."""
    cost, tokens, calls = _ZERO, 0, 0
    for b, a, rec in zip(base, lean, lean_records, strict=True):
        if lever == "semantic-cache" and rec.cache:
            cost += b["cost"]
            tokens += b["input_tokens"] + b["output_tokens"]
            calls += 1
        elif lever == "routing" and not rec.cache and any(c.model != strong_model for c in a["calls"]):
            at_strong = sum((prices.cost(strong_model, c.usage) or _ZERO for c in a["calls"]), _ZERO)
            cost += at_strong - a["cost"]
            calls += 1
        elif lever == "compaction" and not rec.cache and a["calls"]:
            cut = b["input_tokens"] - a["input_tokens"] // len(a["calls"])
            last = a["calls"][-1]
            per_million = prices.price(last.model).input if last.model in prices else _ZERO
            cost += cut * per_million / _MILLION
            tokens += cut
            calls += int(cut != 0)
    return cost, tokens, calls


def profile_vs_applied(
    report: Any,
    base: list[dict[str, Any]],
    lean: list[dict[str, Any]],
    lean_records: Sequence[Any],
    prices: Any,
    strong_model: str,
    measured_saving: Decimal,
) -> list[dict[str, Any]]:
    """One row per lever the profiler estimated, then the total of the applied ones.

    ``applied_cost_saved`` is ``None`` where the demo cannot attribute a saving to the lever;
    ``error`` is (estimate - applied) / applied where both exist and applied is not zero.
    """
    rows: list[dict[str, Any]] = []
    est_total = _ZERO
    for est in report.estimates:
        row: dict[str, Any] = {
            "lever": est.lever,
            "estimated_cost_saved": str(est.cost_saved),
            "estimated_tokens_saved": est.tokens_saved,
            "estimated_calls": est.calls_affected,
            "applied_cost_saved": None,
            "applied_tokens_saved": None,
            "applied_calls": None,
            "difference": None,
            "error": None,
            "basis": _NOT_APPLIED.get(est.lever, "not applied in the demo"),
        }
        if est.lever in APPLIED_LEVERS:
            est_total += est.cost_saved
            cost, tokens, calls = _applied(est.lever, base, lean, lean_records, prices, strong_model)
            row.update(applied_cost_saved=str(cost), applied_calls=calls, basis=_BASIS[est.lever])
            if est.lever != "routing":
                row["applied_tokens_saved"] = tokens
            row.update(_difference(est.cost_saved, cost))
        rows.append(row)
    total: dict[str, Any] = {
        "lever": "total (levers applied)",
        "estimated_cost_saved": str(est_total),
        "estimated_tokens_saved": None,
        "estimated_calls": None,
        "applied_cost_saved": str(measured_saving),
        "applied_tokens_saved": None,
        "applied_calls": None,
        "basis": "sum of the separate estimates vs the measured saving of the run with all levers",
    }
    total.update(_difference(est_total, measured_saving))
    return [*rows, total]


def _difference(estimate: Decimal, applied: Decimal) -> dict[str, Any]:
    return {
        "difference": str(estimate - applied),
        "error": float((estimate - applied) / applied) if applied else None,
    }
