"""What the demo measures: per-task tokens, cost, TTFT and tokens/s of each run, and the comparison.

The numbers come from the runs' own ledgers (``tokenlean.metering``) and the records of what the
application saw; ``trace_of`` turns the baseline run into a profiler ``Trace`` so that the
profiler's estimate can be set beside what was measured.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokenlean.demo.traffic import RunRecord, norm_answer

__all__ = ["comparison_rows", "same_answers", "summarise_tasks", "totals_of", "trace_of", "write_trace_jsonl"]


def summarise_tasks(ledger: Any, records: list[RunRecord]) -> dict[str, dict[str, Any]]:
    """Per task: tokens sent to models, cost, TTFT p50, tokens/s, hits, routing mix."""
    from tokenlean.metering import percentile

    out: dict[str, dict[str, Any]] = {}
    by_task: dict[str, list[Any]] = {}
    for rec in ledger.records():
        by_task.setdefault(rec.task_id or "(none)", []).append(rec)
    for task, recs in by_task.items():
        model_recs = [r for r in recs if not r.cache_hit]
        tokens = sum(r.usage.total_tokens for r in model_recs)
        cost = sum((r.cost or Decimal(0) for r in model_recs), Decimal(0))
        runs = [r for r in records if r.task_id == task]
        ttfts = [r.first_token_at - r.started_at for r in runs if r.first_token_at is not None]
        gen_s = sum(r.generation_s or 0.0 for r in model_recs)
        out_tokens = sum(r.usage.output_tokens for r in model_recs)
        routes = Counter(r.route or "-" for r in runs)
        out[task] = {
            "calls": len(runs),
            "model_calls": len(model_recs),
            "tokens": tokens,
            "input_tokens": sum(r.usage.input_tokens for r in model_recs),
            "output_tokens": out_tokens,
            "cost": cost,
            "ttft_p50_s": percentile(ttfts, 0.5),
            "tokens_per_s": (out_tokens / gen_s) if gen_s > 0 else None,
            "cache_hits": sum(1 for r in runs if r.cache),
            "routes": dict(routes),
            "escalations": sum(1 for r in runs if r.escalated),
        }
    return out


def same_answers(base: list[RunRecord], lean: list[RunRecord]) -> dict[str, tuple[int, int]]:
    """Per task: (answers worded exactly as the baseline answer to the same step, answers).

    This says how often the wording survived the levers, not whether answers were right:
    ``tokenlean.demo.grade`` grades both runs against the bundled references for that.
    """
    same: dict[str, tuple[int, int]] = {}
    for b, a in zip(base, lean, strict=True):
        ok, n = same.get(b.task_id, (0, 0))
        same[b.task_id] = (ok + int(norm_answer(b.text) == norm_answer(a.text)), n + 1)
    return same


def comparison_rows(
    base: dict[str, dict[str, Any]],
    lean: dict[str, dict[str, Any]],
    same: dict[str, tuple[int, int]],
    correct_before: dict[str, tuple[int, int]] | None = None,
    correct_after: dict[str, tuple[int, int]] | None = None,
) -> list[dict[str, Any]]:
    """Per task: tokens, cost, TTFT, tokens/s, hits, routing, and answers graded correct before/after.

    ``same_answers`` counts answers worded exactly as the baseline's (not a correctness measure);
    ``correct_before`` / ``correct_after`` count answers the reference grader accepts.
    """
    correct_before, correct_after = correct_before or {}, correct_after or {}
    rows = []
    for task in base:
        b, a = base[task], lean.get(task, {})
        rows.append(
            {
                "task": task,
                "tokens_before": b["tokens"],
                "tokens_after": a.get("tokens", 0),
                "cost_before": str(b["cost"]),
                "cost_after": str(a.get("cost", Decimal(0))),
                "ttft_p50_before_s": b["ttft_p50_s"],
                "ttft_p50_after_s": a.get("ttft_p50_s"),
                "tokens_per_s_before": b["tokens_per_s"],
                "tokens_per_s_after": a.get("tokens_per_s"),
                "cache_hits": a.get("cache_hits", 0),
                "calls": b["calls"],
                "routes_after": a.get("routes", {}),
                "escalations": a.get("escalations", 0),
                "correct_before": correct_before.get(task, (0, 0))[0],
                "correct_after": correct_after.get(task, (0, 0))[0],
                "same_answers": same.get(task, (0, 0))[0],
                "answers": same.get(task, (0, 0))[1],
            }
        )
    return rows


def totals_of(rows: list[dict[str, Any]], base: list[RunRecord], lean: list[RunRecord]) -> dict[str, Any]:
    from tokenlean.metering import percentile

    def ttft(records: list[RunRecord]) -> float | None:
        return percentile(
            [r.first_token_at - r.started_at for r in records if r.first_token_at is not None], 0.5
        )

    routes: Counter[str] = Counter()
    for r in rows:
        routes.update(r["routes_after"])
    tps_b = [r["tokens_per_s_before"] for r in rows if r["tokens_per_s_before"]]
    tps_a = [r["tokens_per_s_after"] for r in rows if r["tokens_per_s_after"]]
    return {
        "task": "all tasks",
        "tokens_before": sum(r["tokens_before"] for r in rows),
        "tokens_after": sum(r["tokens_after"] for r in rows),
        "cost_before": str(sum((Decimal(r["cost_before"]) for r in rows), Decimal(0))),
        "cost_after": str(sum((Decimal(r["cost_after"]) for r in rows), Decimal(0))),
        "ttft_p50_before_s": ttft(base),
        "ttft_p50_after_s": ttft(lean),
        "tokens_per_s_before": sum(tps_b) / len(tps_b) if tps_b else None,
        "tokens_per_s_after": sum(tps_a) / len(tps_a) if tps_a else None,
        "cache_hits": sum(r["cache_hits"] for r in rows),
        "calls": sum(r["calls"] for r in rows),
        "routes_after": dict(routes),
        "escalations": sum(r["escalations"] for r in rows),
        "correct_before": sum(r["correct_before"] for r in rows),
        "correct_after": sum(r["correct_after"] for r in rows),
        "same_answers": sum(r["same_answers"] for r in rows),
        "answers": sum(r["answers"] for r in rows),
        "hit_rate": sum(r["cache_hits"] for r in rows) / max(1, sum(r["calls"] for r in rows)),
    }


def trace_of(records: list[RunRecord], model: str) -> Any:
    """The baseline run as a profiler ``Trace`` (requests, answers, usage and timings)."""
    from tokenlean.profile.trace import Call, Trace
    from tokenlean.tokens import count_messages, count_tokens
    from tokenlean.types import Usage

    calls = []
    per_task: dict[str, int] = {}
    for r in records:
        usage = r.response.usage if r.response is not None and r.response.usage is not None else None
        counted = usage is None
        if usage is None:
            usage = Usage(count_messages(r.request.messages, None, r.request.tools), count_tokens(r.text))
        idx = per_task.get(r.task_id, 0)
        per_task[r.task_id] = idx + 1
        calls.append(
            Call(
                task_id=r.task_id,
                index=idx,
                usage=usage,
                request=r.request,
                response=r.response,
                model=model,
                started_at=r.started_at,
                first_token_at=r.first_token_at,
                ended_at=r.ended_at,
                usage_counted=counted,
                source="demo baseline",
            )
        )
    return Trace(tuple(calls), ("tokenlean demo baseline",), ("openai",))


def write_trace_jsonl(records: list[RunRecord], path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            row = {
                "task_id": r.task_id,
                "request": r.request.to_openai(),
                "response": r.response.to_openai() if r.response is not None else None,
                "started_at": r.started_at,
                "first_token_at": r.first_token_at,
                "ended_at": r.ended_at,
            }
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
