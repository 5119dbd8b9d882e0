"""The Router end to end: decisions, metering, model fallback and cascades on real replicas."""

from __future__ import annotations

import pytest

from tokenlean.errors import ConfigError, NoRouteError
from tokenlean.metering import Ledger, Meter
from tokenlean.routing import (
    ROUTING_KEY,
    Cascade,
    Consistency,
    LearnedVerifier,
    MeanLogprob,
    OpenAICompatibleEndpoint,
    OutputControl,
    Router,
    Rule,
    RulesPolicy,
    SelfCheck,
    Validate,
    arithmetic_validator,
    json_schema_validator,
    regex_validator,
)
from tokenlean.routing.cascade import agreement, arithmetic_errors
from tokenlean.types import Message, Request, Response


def _req(text: str = "Name a colour.", **md: object) -> Request:
    return Request([Message("user", text)], params={"max_tokens": 12, "temperature": 0}, metadata=md)


@pytest.fixture
def pair_router(local_llm_pair):
    a, b = local_llm_pair
    meter = Meter(Ledger())
    router = Router(
        {
            "weak": OpenAICompatibleEndpoint(a.base_url, a.model, name="weak-a"),
            "strong": OpenAICompatibleEndpoint(b.base_url, b.model, name="strong-b"),
        },
        policies=[RulesPolicy([Rule("strong", tags=("hard",), output=OutputControl(max_tokens=5))])],
        default="weak",
        meter=meter,
    )
    yield router, meter
    router.close()


@pytest.mark.integration
def test_route_complete_and_meter(pair_router) -> None:
    router, meter = pair_router
    d = router.route(_req(tags=["hard"]))
    assert d.target == "strong" and d.policy == "rules" and d.latency_ms is not None
    resp, dec = router.complete_with_decision(_req(tags=["hard"], task_id="t1"))
    assert dec.replica == "strong-b" and resp.extra[ROUTING_KEY]["target"] == "strong"
    assert resp.usage is not None and resp.usage.output_tokens <= 5  # output control reached the server
    resp = router.complete(_req(task_id="t1"))
    assert resp.extra[ROUTING_KEY]["policy"] == "default"
    recs = meter.ledger.records("t1")
    assert [r.tags["route"] for r in recs] == ["strong", "weak"]
    assert recs[0].tags["policy"] == "rules" and recs[0].endpoint == "strong-b"
    assert meter.ledger.task("t1").calls == 2


@pytest.mark.integration
def test_stream_is_metered_with_estimated_usage(pair_router) -> None:
    router, meter = pair_router
    chunks = list(router.stream(_req(task_id="s")))
    final = chunks[-1].response
    assert final is not None and final.extra[ROUTING_KEY]["target"] == "weak"
    assert "".join(c.text for c in chunks[:-1]) == final.text
    (rec,) = meter.ledger.records("s")
    assert rec.usage.output_tokens > 0 and rec.first_token_at is not None
    assert rec.extra["usage_estimated"] is True  # llama.cpp sends no usage in streams


@pytest.mark.integration
async def test_async_complete_and_stream(pair_router) -> None:
    router, meter = pair_router
    resp = await router.acomplete(_req(tags=["hard"], task_id="a"))
    assert resp.extra[ROUTING_KEY]["target"] == "strong"
    chunks = [c async for c in router.astream(_req(task_id="a"))]
    assert chunks[-1].response is not None
    assert len(meter.ledger.records("a")) == 2


@pytest.mark.integration
def test_model_fallback_when_every_replica_fails(local_llm, dead_url, stub) -> None:
    router = Router(
        {
            "strong": [
                OpenAICompatibleEndpoint(dead_url, "big", max_retries=0),
                OpenAICompatibleEndpoint(stub.url("fail503"), "big", max_retries=0),
            ],
            "local": OpenAICompatibleEndpoint(local_llm.base_url, local_llm.model),
        },
        default="strong",
        fallbacks={"strong": ["local"]},
        meter=False,
    )
    resp, dec = router.complete_with_decision(_req())
    assert dec.target == "local" and dec.fallback_from == ("strong",) and resp.text.strip()
    chunks = list(router.stream(_req()))
    assert chunks[-1].response is not None and chunks[-1].response.extra[ROUTING_KEY]["fallback_from"] == [
        "strong"
    ]
    no_fallback = Router({"strong": OpenAICompatibleEndpoint(dead_url, "big", max_retries=0)}, meter=False)
    with pytest.raises(NoRouteError):
        no_fallback.complete(_req())


def test_unknown_targets_are_rejected(stub) -> None:
    ep = OpenAICompatibleEndpoint(stub.url("ok"), "m")
    with pytest.raises(NoRouteError):
        Router({"a": ep}, default="b")
    router = Router({"a": ep}, policies=[RulesPolicy([Rule("nowhere")])], meter=False)
    with pytest.raises(NoRouteError):
        router.route(_req())


@pytest.mark.integration
def test_cascade_validator_escalates_or_keeps(local_llm_pair) -> None:
    a, b = local_llm_pair
    meter = Meter(Ledger())
    targets = {
        "cheap": OpenAICompatibleEndpoint(a.base_url, a.model, name="cheap"),
        "strong": OpenAICompatibleEndpoint(b.base_url, b.model, name="strong"),
    }
    never = Router(
        targets,
        policies=[Cascade("cheap", "strong", [Validate(regex_validator(r"^ZZZ-NEVER$"))])],
        meter=meter,
    )
    _, dec = never.complete_with_decision(_req(task_id="c1"))
    assert dec.escalated and dec.target == "strong" and "regex" in dec.reason and "failed" in dec.reason
    assert [r.tags["role"] for r in meter.ledger.records("c1")] == ["cascade-cheap", "cascade-strong"]
    always = Router(
        targets, policies=[Cascade("cheap", "strong", [Validate(lambda t: True, name="accept")])], meter=meter
    )
    _, dec = always.complete_with_decision(_req(task_id="c2"))
    assert not dec.escalated and dec.target == "cheap" and "kept cheap answer" in dec.reason
    assert len(meter.ledger.records("c2")) == 1


@pytest.mark.integration
def test_cascade_consistency_and_self_check_use_extra_cheap_calls(local_llm_pair) -> None:
    a, b = local_llm_pair
    meter = Meter(Ledger())
    targets = {
        "cheap": OpenAICompatibleEndpoint(a.base_url, a.model),
        "strong": OpenAICompatibleEndpoint(b.base_url, b.model),
    }
    router = Router(
        targets,
        policies=[Cascade("cheap", "strong", [Consistency(min_agreement=0.3), SelfCheck()])],
        meter=meter,
    )
    _, dec = router.complete_with_decision(_req("What is 3 + 4?", task_id="k"))
    signals = dec.extra["signals"]
    assert signals[0]["reason"].startswith("two samples agree")
    assert "self-check said" in signals[1]["reason"]
    roles = [r.tags["role"] for r in meter.ledger.records("k")]
    assert roles[:3] == ["cascade-cheap", "cascade-check", "cascade-check"]
    assert (roles[-1] == "cascade-strong") == dec.escalated


def test_mean_logprob_signal_with_server_logprobs(stub) -> None:
    cheap = OpenAICompatibleEndpoint(stub.url("ok"), "m", name="cheap")
    strong = OpenAICompatibleEndpoint(stub.url("ok"), "m", name="strong")
    router = Router(
        {"cheap": cheap, "strong": strong},
        policies=[Cascade("cheap", "strong", [MeanLogprob(-0.1)])],
        meter=False,
    )
    _, dec = router.complete_with_decision(_req())
    assert stub.state.bodies[0]["logprobs"] is True
    assert dec.escalated and "mean logprob -0.15 < -0.10" in dec.reason
    stub.state.logprobs = [-0.01, -0.03]
    _, dec = router.complete_with_decision(_req())
    assert not dec.escalated


def test_failed_check_call_skips_the_signal(stub) -> None:
    # the cheap answer succeeds, the self-check call (2nd request) gets a 503: the signal is
    # skipped and the user still gets the cheap answer rather than an error
    cheap = OpenAICompatibleEndpoint(stub.url("secondfails"), "m", name="cheap", max_retries=0)
    strong = OpenAICompatibleEndpoint(stub.url("ok"), "m", name="strong")
    router = Router(
        {"cheap": cheap, "strong": strong}, policies=[Cascade("cheap", "strong", [SelfCheck()])], meter=False
    )
    resp, dec = router.complete_with_decision(_req())
    assert resp.text == "stub answer 42" and not dec.escalated
    assert "signal skipped" in dec.extra["signals"][0]["reason"]
    assert stub.state.hits["secondfails"] == 2 and "ok" not in stub.state.hits


def test_validators_and_helpers() -> None:
    js = json_schema_validator(
        {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    )
    assert js('{"a": 1}') and js('```json\n{"a": 2}\n```')
    assert not js('{"a": "x"}') and not js("not json") and not js("{}")
    assert regex_validator(r"\d+")("answer: 42") and not regex_validator(r"\d+")("none")
    assert agreement("so the answer is 18", "#### 18") == 1.0
    assert agreement("it is 17", "it is 18") == 0.0
    assert agreement("blue sky", "blue sky") == 1.0
    assert arithmetic_errors("16 - 3 = 13 and <<13-4=9>>9, 9 * 2 = 19") == (1, 3)
    assert arithmetic_validator("2 + 2 = 4") and not arithmetic_validator("2 + 2 = 5")
    assert arithmetic_errors("<<__import__('os')=1>>") == (1, 1)  # never evaluated as Python
    v = Validate(lambda t: 1 / 0)
    assert v.judge(_req(), Response(Message("assistant", "x")), None).escalate
    with pytest.raises(ConfigError):
        Cascade("a", "b", [])


@pytest.mark.integration
def test_learned_verifier_signal(embedder) -> None:
    qs = ["Tom has 3 apples and buys 4 more. How many?"] * 20 + [
        "A train goes 60 km/h for 2 hours. How far?"
    ] * 20
    good = ["3 + 4 = 7. #### 7", "60 * 2 = 120. #### 120"]
    bad = ["3 + 4 = 8. However, maybe approximately 8. #### 8", "60 * 2 = 100, wait, actually #### 100.5"]
    answers = [good[i // 20] if i % 2 else bad[i // 20] for i in range(40)]
    ok = [float(i % 2) for i in range(40)]
    v = LearnedVerifier(embedder=embedder).fit(qs, answers, ok)
    p = v.score(qs[:2], answers[:2])
    assert p[0] > p[1]  # the bad answer (index 0) looks wrong
    v.calibrate(qs, answers, escalate_share=0.5)
    verdict = v.judge(_req(qs[0]), Response(Message("assistant", bad[0])), None)
    assert verdict.escalate and "P(wrong)" in verdict.reason
