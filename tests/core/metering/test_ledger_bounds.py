"""A long-running process: the ledger's memory is bounded and its summaries stay complete."""

from __future__ import annotations

import tracemalloc
from decimal import Decimal

import pytest

from tokenlean.errors import MeteringError
from tokenlean.metering import Ledger, UsageRecord, get_default_meter
from tokenlean.metering.ledger import ROLLED_UP, UNTRACKED
from tokenlean.metering.summary import summarize
from tokenlean.types import Usage


def _rec(i: int, task: str | None) -> UsageRecord:
    return UsageRecord(
        model=f"m{i % 3}",
        usage=Usage(100 + i % 7, 10 + i % 5, cached_input_tokens=i % 11),
        task_id=task,
        cost=Decimal("0.001") if i % 4 else None,
        started_at=1000.0 + i,
        first_token_at=1000.0 + i + 0.1 + (i % 10) / 100,
        ended_at=1000.0 + i + 0.5,
        cache_hit=i % 9 == 0,
    )


def test_old_records_roll_up_into_complete_aggregates() -> None:
    ledger = Ledger(max_records=500, max_tasks=40)
    recs = [_rec(i, f"task-{i // 100}" if i % 13 else None) for i in range(12_000)]
    for r in recs:
        ledger.record(r)
    assert len(ledger) == 500 and ledger.rolled_up == 11_500
    assert ledger.records() == recs[-500:]
    everything = summarize("*", recs)
    total = ledger.summary()
    assert (total.calls, total.input_tokens, total.output_tokens, total.cached_input_tokens, total.cost) == (
        everything.calls, everything.input_tokens, everything.output_tokens,
        everything.cached_input_tokens, everything.cost,
    )  # fmt: skip
    assert total.unpriced_calls == everything.unpriced_calls and total.cache_hits == everything.cache_hits
    tasks = ledger.tasks()
    assert len(tasks) == 40 and ROLLED_UP in tasks and UNTRACKED in tasks
    assert sum(t.calls for t in tasks.values()) == 12_000  # nothing silently dropped
    last = "task-119"
    assert ledger.task(last) == summarize(last, [r for r in recs if r.task_id == last])
    by_model = ledger.by_model()
    assert {k: v.calls for k, v in by_model.items()} == {"m0": 4000, "m1": 4000, "m2": 4000}


def test_percentiles_are_exact_while_small_and_close_when_sampled() -> None:
    recs = [_rec(i, "t") for i in range(5000)]
    ledger = Ledger(max_records=10)
    for r in recs:
        ledger.record(r)
    exact = summarize("t", recs[:1000])
    small = Ledger()
    small.extend(recs[:1000])
    assert small.task("t") == exact
    big = ledger.task("t")
    assert big.ttft_p50_s == pytest.approx(0.145, abs=0.01)  # ttft cycles 0.10 .. 0.19
    assert big.output_tokens_per_s == pytest.approx(summarize("t", recs).output_tokens_per_s)


def test_memory_stays_bounded() -> None:
    ledger = Ledger(max_records=1000, max_tasks=100)
    tracemalloc.start()
    try:
        for i in range(2000):
            ledger.record(_rec(i, f"t{i}"))
        first, _ = tracemalloc.get_traced_memory()
        for i in range(2000, 22_000):
            ledger.record(_rec(i, f"t{i}"))
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ledger) == 1000 and ledger.summary().calls == 22_000
    assert second - first < 1_000_000  # ten times the calls, (almost) no more memory


def test_the_default_meter_is_bounded_and_bad_bounds_are_typed() -> None:
    ledger = get_default_meter().ledger
    assert ledger.max_records is not None and ledger.max_tasks is not None
    for bad in (0, -1, 2.5):
        with pytest.raises(MeteringError):
            Ledger(max_records=bad)  # type: ignore[arg-type]
    unbounded = Ledger(max_records=None, max_tasks=None)
    unbounded.extend(_rec(i, f"t{i}") for i in range(3000))
    assert len(unbounded) == 3000 and ROLLED_UP not in unbounded.tasks()
