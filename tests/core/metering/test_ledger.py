"""UsageRecord, Ledger and Meter: per-task aggregation, concurrency safety, bad input."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tokenlean.errors import MeteringError, TextEncodingError, UsageFormatError
from tokenlean.metering import (
    UNTRACKED,
    Ledger,
    Meter,
    PriceTable,
    UsageRecord,
    current_task_id,
    percentile,
    task_scope,
)
from tokenlean.types import Usage


def test_record_derives_ttft_duration_and_speed() -> None:
    rec = UsageRecord(
        model="gpt-4o", usage=Usage(100, 40), started_at=10.0, first_token_at=10.5, ended_at=12.5
    )
    assert rec.ttft_s == pytest.approx(0.5)
    assert rec.duration_s == pytest.approx(2.5)
    assert rec.output_tokens_per_s == pytest.approx(20.0)  # 40 tokens after the first, in 2 s
    hit = UsageRecord(model="gpt-4o", usage=Usage(100, 40), started_at=1, ended_at=1.001, cache_hit=True)
    assert hit.output_tokens_per_s is None and hit.ttft_s is None


def test_record_round_trips_through_json() -> None:
    rec = UsageRecord(
        model="claude-sonnet-4-5",
        usage=Usage(1000, 50, 600, 100, 10),
        endpoint="https://api.anthropic.com",
        task_id="t-1",
        tags={"tenant": "acme"},
        cost=Decimal("0.0012345"),
        started_at=1.0,
        first_token_at=1.2,
        ended_at=2.0,
        extra={"run_id": "r"},
    )
    back = UsageRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back == rec
    assert isinstance(back.cost, Decimal)


def test_non_utf8_bytes_are_a_clear_error() -> None:
    with pytest.raises(TextEncodingError, match="model"):
        UsageRecord(model=b"gpt-\xff", usage=Usage())
    assert UsageRecord(model=b"gpt-4o", usage=Usage()).model == "gpt-4o"


def test_percentile_interpolates() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert percentile(list(map(float, range(101))), 0.95) == pytest.approx(95.0)


def test_meter_groups_calls_per_task_and_prices_them() -> None:
    meter = Meter()
    with meter.task("summarise") as task:
        for i in range(4):
            meter.record(
                model="gpt-4o-mini-2024-07-18",
                usage={
                    "prompt_tokens": 1000,
                    "completion_tokens": 100,
                    "prompt_tokens_details": {"cached_tokens": 500},
                },
                started_at=100.0 + i,
                first_token_at=100.0 + i + 0.1 * (i + 1),
                ended_at=101.0 + i,
            )
    meter.record(model="gpt-4o", usage={"input_tokens": 10, "output_tokens": 1})  # outside any task
    tasks = meter.ledger.tasks()
    assert list(tasks) == ["summarise", UNTRACKED]
    s = task.summary()
    assert s == tasks["summarise"]
    assert (s.calls, s.input_tokens, s.cached_input_tokens, s.output_tokens) == (4, 4000, 2000, 400)
    # 500 uncached * 0.15 + 500 cached * 0.075 + 100 out * 0.60, per million, four times
    assert s.cost == 4 * (
        Decimal(500) * Decimal("0.15") + Decimal(500) * Decimal("0.075") + Decimal(100) * Decimal("0.60")
    ) / Decimal(1_000_000)
    assert s.cached_share == pytest.approx(0.5)
    assert s.ttft_p50_s == pytest.approx(0.25)
    assert s.ttft_p95_s == pytest.approx(percentile([0.1, 0.2, 0.3, 0.4], 0.95))
    total = meter.ledger.summary()
    assert total.calls == 5 and total.input_tokens == 4010


def test_cache_hits_cost_nothing_and_unknown_models_stay_unpriced() -> None:
    meter = Meter()
    with meter.task("t"):
        meter.record(model="gpt-4o", usage=Usage(1000, 100))
        meter.record(model="gpt-4o", usage=Usage(1000, 100), cache_hit=True)
        meter.record(model="my-local-model", usage=Usage(10, 10))
    s = meter.ledger.task("t")
    assert s.calls == 3 and s.cache_hits == 1 and s.unpriced_calls == 1
    assert s.cost == PriceTable.default().cost("gpt-4o", Usage(1000, 100))
    assert meter.ledger.records("t")[2].cost is None


def test_only_unpriced_calls_give_no_cost() -> None:
    meter = Meter()
    meter.record(model="nobody-knows", usage=Usage(1, 1))
    assert meter.ledger.summary().cost is None


def test_malformed_usage_raises_usage_format_error() -> None:
    meter = Meter()
    for bad in ({"prompt_tokens": -3}, {"prompt_tokens": "many"}, {"weird": 1}, None, 42):
        with pytest.raises(UsageFormatError):
            meter.record(model="gpt-4o", usage=bad)
    assert len(meter.ledger) == 0


def test_records_with_the_same_id_are_counted_once() -> None:
    ledger = Ledger()
    rec = UsageRecord(model="gpt-4o", usage=Usage(5, 5), id="run-1")
    ledger.record(rec)
    ledger.record(UsageRecord(model="gpt-4o", usage=Usage(5, 5), id="run-1"))
    assert len(ledger) == 1


def test_a_failing_sink_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(_rec: UsageRecord) -> None:
        raise OSError("disk full")

    ledger = Ledger(sink=broken)
    with caplog.at_level(logging.ERROR, logger="tokenlean.metering.ledger"):
        ledger.record(UsageRecord(model="gpt-4o", usage=Usage(1, 1)))
    assert len(ledger) == 1
    assert "sink" in caplog.text


def test_ledger_record_rejects_non_records() -> None:
    with pytest.raises(MeteringError):
        Ledger().record({"model": "gpt-4o"})  # type: ignore[arg-type]


def test_threads_record_concurrently_without_loss() -> None:
    meter = Meter()
    n_threads, per_thread = 8, 250

    def work(i: int) -> None:
        with meter.task(f"task-{i % 2}"):
            for _ in range(per_thread):
                meter.record(model="gpt-4o", usage=Usage(3, 2))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tasks = meter.ledger.tasks()
    assert {k: v.calls for k, v in tasks.items()} == {"task-0": 1000, "task-1": 1000}
    assert meter.ledger.summary().input_tokens == 3 * n_threads * per_thread


async def test_asyncio_tasks_keep_their_own_task_id() -> None:
    meter = Meter()

    async def agent(name: str, calls: int) -> None:
        with meter.task(name):
            for _ in range(calls):
                await asyncio.sleep(0)  # interleave with the other agents
                meter.record(model="gpt-4o", usage=Usage(10, 1))

    await asyncio.gather(agent("a", 5), agent("b", 7), agent("c", 3))
    assert {k: v.calls for k, v in meter.ledger.tasks().items()} == {"a": 5, "b": 7, "c": 3}
    assert current_task_id() is None


def test_task_scope_nests_and_restores_on_error() -> None:
    with task_scope("outer"):
        with pytest.raises(RuntimeError), task_scope("inner"):
            assert current_task_id() == "inner"
            raise RuntimeError
        assert current_task_id() == "outer"
        # a thread started with a copied context sees the task
        seen: list[str | None] = []
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(lambda: seen.append(current_task_id()),))
        t.start()
        t.join()
        assert seen == ["outer"]
    assert current_task_id() is None


# -- deferred recording (Meter.record_later, the adapters' hot path) ---------------------------


def _later(meter: Meter, rid: object, *, model: str = "gpt-4o-mini", out: int = 5) -> UsageRecord | None:
    return meter.record_later(model=model, usage=Usage(100, out), ended_at=2.0, started_at=1.0, record_id=rid)


def test_record_later_is_built_at_the_next_read_in_call_order() -> None:
    meter = Meter()
    assert _later(meter, "a") is None  # queued, not built
    assert len(meter.ledger._deferred) == 1
    meter.record(model="gpt-4o-mini", usage=Usage(1, 1), record_id="b")  # a direct record keeps order
    _later(meter, uuid.UUID(int=7))
    recs = meter.ledger.records()
    assert [r.id for r in recs] == ["a", "b", str(uuid.UUID(int=7))]
    assert recs[0].cost == meter.prices.cost("gpt-4o-mini", Usage(100, 5)) and recs[0].duration_s == 1.0
    assert not meter.ledger._deferred


def test_record_later_resolves_the_task_at_the_call_and_dedupes_ids() -> None:
    meter = Meter()
    with meter.task("t1"):
        _later(meter, "same")
        _later(meter, "same")  # a second handler on the same run: counted once
    assert meter.ledger.task("t1").calls == 1
    assert meter.ledger.records()[0].task_id == "t1"


def test_record_later_stores_at_once_for_sinks_and_record_overrides(tmp_path: Path) -> None:
    seen: list[UsageRecord] = []
    meter = Meter(Ledger(seen.append))
    rec = _later(meter, "x")
    assert rec is not None and seen == [rec]  # a sink (e.g. the crash-safe JSONL log) gets it now

    class Counting(Meter):
        calls = 0

        def record(self, **kwargs: Any) -> UsageRecord:
            Counting.calls += 1
            return super().record(**kwargs)

    counting = Counting()
    assert _later(counting, "y") is not None and Counting.calls == 1

    class Audited(Ledger):
        def record(self, rec: UsageRecord) -> UsageRecord:
            seen.append(rec)
            return super().record(rec)

    assert _later(Meter(Audited()), "z") is not None and seen[-1].id == "z"


def test_a_queued_record_that_cannot_be_built_is_logged_and_the_rest_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BadPrices(PriceTable):
        def cost(self, model: str, usage: Usage) -> Decimal | None:
            if model == "boom":
                raise RuntimeError("price lookup exploded")
            return super().cost(model, usage)

    default = PriceTable.default()
    meter = Meter(prices=BadPrices(dict(default.prices), dict(default.aliases)))
    _later(meter, "1")
    _later(meter, "2", model="boom")
    _later(meter, "3")
    with caplog.at_level(logging.ERROR, logger="tokenlean.metering.ledger"):
        assert [r.id for r in meter.ledger.records()] == ["1", "3"]
    assert "price lookup exploded" in caplog.text


def test_record_later_from_many_threads_while_reading_loses_nothing() -> None:
    meter = Meter()
    per_thread, threads = 500, 4
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            meter.ledger.summary()

    def writer(t: int) -> None:
        for i in range(per_thread):
            _later(meter, f"{t}-{i}")

    r = threading.Thread(target=reader)
    r.start()
    ws = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    stop.set()
    r.join()
    recs = meter.ledger.records()
    assert len(recs) == per_thread * threads == len({r.id for r in recs})
    for t in range(threads):  # each thread's calls stay in its own call order
        mine = [int(r.id.split("-")[1]) for r in recs if r.id.startswith(f"{t}-")]
        assert mine == sorted(mine)


def test_clear_drops_queued_records() -> None:
    meter = Meter()
    _later(meter, "q")
    meter.ledger.clear()
    assert len(meter.ledger) == 0
