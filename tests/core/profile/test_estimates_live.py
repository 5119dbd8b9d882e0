"""Profiler estimates vs the lever really applied to live traffic on a local model.

One baseline run of a support workload is recorded as a trace and profiled; then the same
requests are sent again with each lever on (a semantic cache in front of the model, a
``max_tokens`` cap, a router over two endpoints) and the saving is measured from what the
servers report. Each estimate must be within 10% of the measured saving.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from tokenlean.metering import PriceTable
from tokenlean.profile import Profiler
from tokenlean.profile.trace import Call, Trace
from tokenlean.types import Message, Request, Usage

pytestmark = pytest.mark.integration

QUESTIONS = [
    "How do I reset my password?",
    "What does the Pro plan cost per month?",
    "how do i reset my password",
    "Can I get a refund within 14 days of purchase?",
    "How much is the Pro plan per month?",
    "Can I get a refund within 30 days of purchase?",
    "Explain, step by step and in detail, how to migrate a database of 2 TB from another cloud to Acme Cloud "
    "with minimal downtime, including replication, cut-over and rollback.",
    "How do I reset my password?",
]
SYSTEM = "You are the support assistant of Acme Cloud. Answer briefly."
# Room for most answers to finish: the cache (and so its estimate) never stores a cut-off answer.
MAX_TOKENS = 128


def _request(q: str, max_tokens: int) -> Request:
    return Request(
        messages=(Message("system", SYSTEM), Message("user", q)),
        params={"max_tokens": max_tokens, "temperature": 0},
        metadata={"task_id": "support"},
    )


def _endpoint(server: Any) -> Any:
    from tokenlean.routing import OpenAICompatibleEndpoint

    return OpenAICompatibleEndpoint(server.base_url, server.model, timeout=120)


@pytest.fixture(scope="module")
def baseline(local_llm_pair: Any) -> tuple[Trace, Any, Any]:
    strong, weak = (_endpoint(s) for s in local_llm_pair)
    calls = []
    for i, q in enumerate(QUESTIONS):
        req = _request(q, MAX_TOKENS)
        t0 = time.time()
        resp = strong.complete(req)
        calls.append(
            Call(
                task_id="support",
                index=i,
                usage=resp.usage,
                request=req,
                response=resp,
                model="gpt-4o",
                started_at=t0,
                ended_at=time.time(),
            )
        )
    return Trace(tuple(calls)), strong, weak


def _within(estimate: float, measured: float, tol: float = 0.10) -> None:
    assert measured > 0, "the lever must save something for the check to mean anything"
    assert abs(estimate - measured) <= tol * measured, f"estimate {estimate} vs measured {measured}"


def test_semantic_cache_estimate_vs_cache_in_front_of_the_model(
    baseline: tuple[Trace, Any, Any], embedder: Any
) -> None:
    from tokenlean.cache import SemanticCache

    trace, strong, _ = baseline
    est = (
        Profiler(levers=("semantic-cache",), cache=SemanticCache(embedder=embedder))
        .profile(trace)
        .estimate("semantic-cache")
    )
    cache = SemanticCache(embedder=embedder)
    used = Usage()
    for q in QUESTIONS:
        req = _request(q, MAX_TOKENS)
        if cache.lookup(req).hit:
            continue
        resp = strong.complete(req)
        used = used + resp.usage
        cache.store(req, resp)
    measured = trace.total_usage().total_tokens - used.total_tokens
    _within(est.tokens_saved, measured)
    assert est.metrics["exact_hits"] >= 1
    assert est.metrics["hit_rate"] < 1.0  # the refund near-miss (14 vs 30 days) is not a hit


def test_generate_less_estimate_vs_max_tokens_on_the_model(baseline: tuple[Trace, Any, Any]) -> None:
    trace, strong, _ = baseline
    cap = 8
    est = Profiler(levers=("generate-less",), output_cap=cap).profile(trace).estimate("generate-less")
    capped_out = sum(strong.complete(_request(q, cap)).usage.output_tokens for q in QUESTIONS)
    measured = trace.total_usage().output_tokens - capped_out
    _within(est.output_tokens_saved, measured)


def test_routing_estimate_vs_router_over_two_endpoints(baseline: tuple[Trace, Any, Any]) -> None:
    from tokenlean.metering import Ledger, Meter
    from tokenlean.routing import Router
    from tokenlean.routing.rules import Rule, RulesPolicy

    trace, strong, weak = baseline
    policy = RulesPolicy([Rule(target="weak", max_tokens=60, name="short question")])
    est = (
        Profiler(levers=("routing",), policy=policy, targets={"weak": "gpt-4o-mini"})
        .profile(trace)
        .estimate("routing")
    )
    ledger = Ledger()
    router = Router(
        {"strong": strong, "weak": weak}, policies=[policy], default="strong", meter=Meter(ledger)
    )
    for q in QUESTIONS:
        router.complete(_request(q, MAX_TOKENS))
    prices = PriceTable.default()
    priced_as = {"strong": "gpt-4o", "weak": "gpt-4o-mini"}
    routed_cost = sum(
        (prices.cost(priced_as[r.tags["route"]], r.usage) or Decimal(0) for r in ledger.records()), Decimal(0)
    )
    baseline_cost = sum((prices.cost("gpt-4o", c.usage) or Decimal(0) for c in trace), Decimal(0))
    measured = baseline_cost - routed_cost
    _within(float(est.cost_saved), float(measured))
    assert 0 < est.metrics["routed_share"] < 1


def test_prompt_cache_estimate_vs_llamacpp_prefix_reuse(local_llm: Any) -> None:
    """The layout's fix, sent to a real llama.cpp server: its KV-cache reuse is the realised saving.

    llama.cpp keeps one sequence and reuses any common token prefix with the previous prompt,
    so the profiler is asked for exactly that rule (window 1, no minimum, no blocks).
    """
    from tokenlean.layout import PromptLayout, read_llamacpp_prefix_reuse

    log = getattr(local_llm, "log_file", None)
    if log is None:
        pytest.skip("the local server was started without a log file")
    policy = " ".join(f"Rule {i}: refunds over {i * 10} EUR need a ticket." for i in range(40))
    requests = [
        Request(
            messages=(
                Message(
                    "system", f"Current time: 2026-01-15 09:{10 + i}:00 UTC\nYou are a support bot.\n{policy}"
                ),
                Message("user", f"Question {i}: can I return item {i}?"),
            ),
            params={"max_tokens": 1, "temperature": 0},
            metadata={"task_id": "support"},
        )
        for i in range(5)
    ]
    layout = PromptLayout.fit(requests)
    endpoint = _endpoint(local_llm)
    endpoint.complete(
        Request(messages=(Message("user", "warm-up: an unrelated prompt"),), params={"max_tokens": 1})
    )
    offset = log.stat().st_size
    calls = []
    for i, req in enumerate(requests):
        resp = endpoint.complete(layout.apply(req).request)
        calls.append(
            Call(task_id="support", index=i, usage=resp.usage, request=req, response=resp, model="gpt-4o")
        )
    reuse, _ = read_llamacpp_prefix_reuse(log, offset=offset)
    assert len(reuse) == len(calls)
    prompt = sum(c.usage.input_tokens for c in calls)
    measured_share = (
        sum(r.cached_of(c.usage.input_tokens) for r, c in zip(reuse, calls, strict=True)) / prompt
    )

    rules = {"min_tokens": 0, "block": 1, "window": 1}
    est = (
        Profiler(levers=("prompt-cache",), layout=layout, prompt_cache_rules=rules)
        .profile(Trace(tuple(calls)))
        .estimate("prompt-cache")
    )
    _within(est.metrics["ideal_reuse_share_after_layout"], measured_share)
    assert est.metrics["ideal_reuse_share_as_sent"] < 0.1  # the timestamp busts it as sent
