"""Each lever estimate against the lever actually applied to the same trace (offline levers).

The live levers (semantic cache, generate less, routing) are checked against a real local
model in ``test_estimates_live.py``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tokenlean.metering import PriceTable
from tokenlean.profile import Profiler, provider_cached_tokens, read_traces
from tokenlean.profile.estimates import LatencyModel
from tokenlean.profile.levers import default_compactor
from tokenlean.profile.trace import Call, Trace
from tokenlean.types import Message, Request, Response, Usage

SWE = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "agent_traces" / "swe-agent"


@pytest.fixture(scope="module")
def swe_trace() -> Trace:
    if not SWE.is_dir():
        pytest.skip(f"datasets not found at {SWE}")
    files = sorted(SWE.glob("*.traj"))[:8]
    return read_traces(files)


def _within(estimate: float, measured: float, tol: float = 0.10) -> None:
    assert measured > 0, "the lever must save something on this trace for the check to mean anything"
    assert abs(estimate - measured) <= tol * measured, f"estimate {estimate} vs measured {measured}"


def test_compaction_estimate_matches_the_compactor_on_every_call(swe_trace: Trace) -> None:
    prices = PriceTable.default()
    est = Profiler(levers=("compaction",), compaction_sample=5).profile(swe_trace).estimate("compaction")
    assert est.applicable and est.metrics["calls_compacted"] < len(swe_trace)
    # The lever applied: the same compactor on every call, each call's billed input reduced.
    compactor = default_compactor()
    saved_tokens = 0
    saved_cost = Decimal(0)
    for c in swe_trace:
        result = compactor.compact(c.request, session=c.task_id)
        cut = result.tokens_before - result.tokens_after
        saved_tokens += cut
        before = prices.cost("gpt-4o", c.usage)
        after = prices.cost("gpt-4o", Usage(c.usage.input_tokens - cut, c.usage.output_tokens))
        saved_cost += before - after
    _within(est.input_tokens_saved, saved_tokens)
    _within(float(est.cost_saved), float(saved_cost))
    assert est.metrics["context_growth_tokens_per_turn"] > 0
    assert 0 < est.metrics["stale_share"] < 1


def test_provider_caching_rules() -> None:
    assert provider_cached_tokens(1920, 2000) == 1920  # 15 blocks of 128
    assert provider_cached_tokens(1500, 2000) == 1408  # whole blocks only
    assert provider_cached_tokens(1000, 2000) == 0  # below the 1024-token minimum
    assert provider_cached_tokens(900, 900) == 0  # short prompts are never cached
    assert provider_cached_tokens(37, 50, min_tokens=0, block=1) == 37  # llama.cpp: any prefix


def test_prompt_cache_estimate_on_agent_traces(swe_trace: Trace) -> None:
    est = Profiler(levers=("prompt-cache",)).profile(swe_trace).estimate("prompt-cache")
    assert est.applicable and est.calls_affected > 0
    # Agent histories are append-only: most of each prompt is the previous prompt.
    assert est.metrics["ideal_reuse_share_as_sent"] > 0.5
    assert est.input_tokens_saved == est.metrics["cacheable_tokens_after_layout"]
    price = PriceTable.default().price("gpt-4o")
    expected = (price.input - price.cached_input) * est.input_tokens_saved / Decimal(1_000_000)
    assert est.cost_saved == expected
    assert est.ttft_saved_s > 0


def test_a_volatile_timestamp_breaks_the_prefix_and_layout_fixes_it() -> None:
    """The profiler sees a cache-busting system prompt and credits the layout for fixing it."""
    doc = " ".join(f"Rule {i}: answer politely and cite the policy section {i}." for i in range(150))
    calls = []
    for i in range(6):
        system = f"Current time: 2026-01-15 09:{10 + i}:00 UTC\nYou are a support bot.\n{doc}"
        req = Request(
            messages=(Message("system", system), Message("user", f"Question number {i}?")), model="gpt-4o"
        )
        resp = Response(message=Message("assistant", "Answer."), usage=Usage(1900, 2))
        calls.append(
            Call(task_id=f"t{i}", index=0, usage=Usage(1900, 2), request=req, response=resp, model="gpt-4o")
        )
    trace = Trace(tuple(calls))
    with_layout = Profiler(levers=("prompt-cache",)).profile(trace).estimate("prompt-cache")
    as_sent = Profiler(levers=("prompt-cache",), layout=None).profile(trace).estimate("prompt-cache")
    assert as_sent.metrics["cacheable_tokens_as_sent"] == 0
    assert with_layout.metrics["cacheable_tokens_after_layout"] > 5 * 1024
    assert with_layout.cost_saved > 0 and not as_sent.applicable


def test_generate_less_caps_only_free_text_answers() -> None:
    calls = []
    for i, out in enumerate([10, 20, 30, 400]):
        req = Request(messages=(Message("user", f"q{i}"),))
        resp = Response(message=Message("assistant", "x" * out), usage=Usage(100, out))
        calls.append(
            Call(task_id="t", index=i, usage=Usage(100, out), request=req, response=resp, model="gpt-4o")
        )
    est = Profiler(levers=("generate-less",)).profile(Trace(tuple(calls))).estimate("generate-less")
    assert est.metrics["cap"] == 30 and est.output_tokens_saved == 370
    assert est.metrics["truncated_calls"] == 1
    price = PriceTable.default().price("gpt-4o")
    assert est.cost_saved == price.output * 370 / Decimal(1_000_000)


def test_latency_model_fits_the_trace_timings() -> None:
    calls = []
    for i, n in enumerate([500, 1000, 2000, 4000]):
        t0 = 100.0 * i
        calls.append(
            Call(
                task_id="t",
                index=i,
                usage=Usage(n, 50),
                started_at=t0,
                first_token_at=t0 + 0.2 + n / 2000,
                ended_at=t0 + 0.2 + n / 2000 + 49 / 40,
            )
        )
    lm = LatencyModel.fit(calls)
    assert lm.fitted
    assert lm.prefill_s_per_token == pytest.approx(1 / 2000, rel=1e-6)
    assert lm.overhead_s == pytest.approx(0.2, abs=1e-6)
    assert lm.decode_tokens_per_s == pytest.approx(40, rel=1e-6)


def test_ledger_trace_reports_content_levers_as_not_applicable(tmp_path: Path) -> None:
    from tokenlean.metering import JsonlSink, Ledger, Meter

    path = tmp_path / "ledger.jsonl"
    meter = Meter(Ledger(JsonlSink(path, fsync=False)))
    for i in range(5):
        meter.record(
            model="gpt-4o",
            usage=Usage(1000 + 10 * i, 20 + 100 * i),
            task_id="a",
            started_at=float(i),
            ended_at=i + 1.0,
        )
    report = Profiler().profile(read_traces([path]))
    by = {e.lever: e for e in report.estimates}
    for lever in ("prompt-cache", "semantic-cache", "compaction", "routing"):
        assert not by[lever].applicable and "content" in by[lever].reason
    assert by["generate-less"].applicable
    assert report.best is by["generate-less"]
