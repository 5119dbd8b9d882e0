"""Replica choice: load, affinity with its guard, ejection and failover — on real llama.cpp replicas."""

from __future__ import annotations

import pytest

from tokenlean.errors import (
    ConfigError,
    EndpointProtocolError,
    EndpointUnavailable,
    NoRouteError,
    StreamInterrupted,
)
from tokenlean.routing import OpenAICompatibleEndpoint, ReplicaGroup, VLLMEndpoint, stable_prefix_key
from tokenlean.types import Message, Request


def _req(system: str = "You are terse.", user: str = "Say hi.") -> Request:
    return Request(
        [Message("system", system), Message("user", user)], params={"max_tokens": 6, "temperature": 0}
    )


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_stable_prefix_ignores_later_turns() -> None:
    a = _req()
    b = Request([*a.messages, Message("assistant", "hi"), Message("user", "and again?")])
    assert stable_prefix_key(a) == stable_prefix_key(b)
    assert stable_prefix_key(a) != stable_prefix_key(_req(system="You are verbose."))


def test_config_errors(stub) -> None:
    with pytest.raises(ConfigError):
        ReplicaGroup([])
    e = OpenAICompatibleEndpoint(stub.url("ok"), "m", name="same")
    with pytest.raises(ConfigError):
        ReplicaGroup([e, OpenAICompatibleEndpoint(stub.url("ok"), "m", name="same")])
    with pytest.raises(ConfigError):
        ReplicaGroup([e], strategy="fastest")


def test_least_outstanding_uses_local_in_flight_and_live_metrics(stub) -> None:
    a = VLLMEndpoint(stub.url("vllm"), "stub-model", name="a")
    b = OpenAICompatibleEndpoint(stub.url("ok"), "stub-model", name="b")
    g = ReplicaGroup([a, b], prefix_affinity=False)
    g.replicas[1].in_flight = 2
    assert g.choose(_req()).name == "a"
    stub.state.running, stub.state.waiting = 5, 3  # a is busy with other clients' work
    g.refresh_metrics()
    assert g.load(g.replicas[0]) == 8
    assert g.choose(_req()).name == "b"


def test_expected_latency_learns_base_and_per_call_cost(stub) -> None:
    """A replica with a fixed extra delay loses traffic even when idle; a batching one takes more."""
    eps = [OpenAICompatibleEndpoint(stub.url("ok"), "m", name=n) for n in ("near", "far")]
    g = ReplicaGroup(eps, prefix_affinity=False)
    near, far = g.replicas
    # near: a serial server, 0.3 s per call; far: the same server behind a +1.5 s delay
    g._mark_success(near, 0.3, ahead=0)
    g._mark_success(near, 0.9, ahead=2)  # waited for two calls: per call 0.3 s
    g._mark_success(far, 1.8, ahead=0)
    assert near.ewma_latency_s == pytest.approx(0.3) and near.ewma_per_call_s == pytest.approx(0.3)
    assert g.expected_latency(far) == pytest.approx(1.8 + 0 * 1.8)
    # three calls already queued on near (1.2 s expected) still beat an idle far (1.8 s)
    near.in_flight = 3
    assert g.choose(_req()).name == "near"
    near.in_flight = 6  # 0.3 + 6 x 0.3 = 2.1 s: now the idle far replica (1.8 s) is quicker
    assert g.choose(_req()).name == "far"
    # a batching server: queued calls barely slow it down, so it keeps taking them
    g2 = ReplicaGroup([OpenAICompatibleEndpoint(stub.url("ok"), "m", name=n) for n in ("batch", "serial")])
    batch, serial = g2.replicas
    g2._mark_success(batch, 0.5, ahead=0)
    g2._mark_success(batch, 0.6, ahead=4)
    g2._mark_success(serial, 0.4, ahead=0)
    batch.in_flight, serial.in_flight = 4, 1
    assert batch.ewma_per_call_s == pytest.approx(0.025)
    assert g2.expected_latency(batch) < g2.expected_latency(serial)  # 0.6 s vs 0.8 s
    g2.prefix_affinity = False
    assert g2.choose(_req()).name == "batch"


def test_prefix_affinity_is_sticky_until_the_load_guard_trips(stub) -> None:
    eps = [OpenAICompatibleEndpoint(stub.url("ok"), "m", name=f"r{i}") for i in range(3)]
    g = ReplicaGroup(eps, affinity_abs_threshold=2, affinity_rel_threshold=1.5)
    base = _req()
    turns = [
        Request([*base.messages, Message("assistant", "ok"), Message("user", f"follow-up {i}")])
        for i in range(5)
    ]
    picks = {g.choose(t).name for t in turns}
    assert len(picks) == 1  # same system prompt and first turn → same replica, whatever came later
    pref = next(r for r in g.replicas if r.name in picks)
    pref.in_flight = 2  # within the guard: stay
    assert g.choose(_req()).name == pref.name
    pref.in_flight = 5  # far busier than the others: balance instead
    assert g.choose(_req()).name != pref.name
    # different prefixes spread over replicas
    spread = {g.choose(_req(system=f"persona {i}")).name for i in range(30)}
    assert len(spread) >= 2


def test_round_robin_baseline_alternates(stub) -> None:
    eps = [OpenAICompatibleEndpoint(stub.url("ok"), "m", name=f"r{i}") for i in range(2)]
    g = ReplicaGroup(eps, strategy="round_robin")
    assert [g.choose().name for _ in range(4)] == ["r0", "r1", "r0", "r1"]


def test_ejection_cooldown_and_half_open(stub, dead_url) -> None:
    clock = Clock()
    dead = OpenAICompatibleEndpoint(dead_url, "m", name="dead", max_retries=0)
    ok = OpenAICompatibleEndpoint(stub.url("ok"), "m", name="ok")
    g = ReplicaGroup([dead, ok], prefix_affinity=False, cooldown_s=5, clock=clock)
    g.replicas[1].in_flight = 1  # make "dead" the first pick
    assert g.complete(_req()).text == "stub answer 42"
    assert not g.replicas[0].healthy(clock())
    g.replicas[1].in_flight = 0
    assert [r.name for r in g.order(_req())] == ["ok", "dead"]
    clock.t += 6  # cooldown over: half-open, tried again
    g.replicas[1].in_flight = 1
    assert g.order(_req())[0].name == "dead"
    g.complete(_req())  # fails again → longer cooldown
    assert g.replicas[0].ejected_until - clock() == pytest.approx(10)


def test_calls_failing_together_are_one_ejection(dead_url) -> None:
    """Calls queued on a server that dies all fail at once: one incident, not one per call."""
    clock = Clock()
    dead = OpenAICompatibleEndpoint(dead_url, "m", name="dead", max_retries=0)
    g = ReplicaGroup([dead], cooldown_s=5, clock=clock)
    for _ in range(4):  # the failures of four calls that were in flight together
        g._mark_failure(g.replicas[0], EndpointUnavailable("connection reset", endpoint="dead"))
    assert g.replicas[0].ejections == 1 and g.replicas[0].ejected_until - clock() == pytest.approx(5)
    clock.t += 6  # cool-down over; the next try fails too: that is a second incident
    g._mark_failure(g.replicas[0], EndpointUnavailable("connection refused", endpoint="dead"))
    assert g.replicas[0].ejected_until - clock() == pytest.approx(10)


def test_all_replicas_down_raises_no_route(dead_url, stub) -> None:
    g = ReplicaGroup(
        [
            OpenAICompatibleEndpoint(dead_url, "m", max_retries=0),
            OpenAICompatibleEndpoint(stub.url("fail503"), "m", max_retries=0),
        ]
    )
    with pytest.raises(NoRouteError):
        g.complete(_req())


def test_protocol_errors_do_not_fail_over(stub) -> None:
    g = ReplicaGroup(
        [
            OpenAICompatibleEndpoint(stub.url("bad400"), "m", name="bad"),
            OpenAICompatibleEndpoint(stub.url("ok"), "m", name="ok"),
        ],
        prefix_affinity=False,
    )
    g.replicas[1].in_flight = 1
    with pytest.raises(EndpointProtocolError):
        g.complete(_req())
    assert g.replicas[0].healthy(g.clock())  # a bad request says nothing about the replica's health


def test_health_check_ejects(stub) -> None:
    g = ReplicaGroup(
        [VLLMEndpoint(stub.url("down"), "m", name="down"), VLLMEndpoint(stub.url("up"), "m", name="up")]
    )
    assert g.check_health() == {"down": False, "up": True}
    assert g.order()[0].name == "up"


@pytest.mark.integration
def test_failover_to_real_replica_sync_async_and_stream(local_llm_pair, dead_url, stub) -> None:
    a, b = local_llm_pair
    dead = OpenAICompatibleEndpoint(dead_url, a.model, name="dead", max_retries=0)
    real = OpenAICompatibleEndpoint(b.base_url, b.model, name="real")
    g = ReplicaGroup([dead, real], prefix_affinity=False)
    g.replicas[1].in_flight = 1
    resp = g.complete(_req())
    assert resp.text.strip() and resp.extra["endpoint"] == "real"
    # a stream that fails before its first token moves to the next replica
    failing = OpenAICompatibleEndpoint(stub.url("fail503"), a.model, name="503", max_retries=0)
    g2 = ReplicaGroup(
        [failing, OpenAICompatibleEndpoint(a.base_url, a.model, name="real-a")], prefix_affinity=False
    )
    g2.replicas[1].in_flight = 1
    chunks = list(g2.stream(_req()))
    g2.replicas[1].in_flight = 0
    assert chunks[-1].response is not None and chunks[-1].response.extra["endpoint"] == "real-a"
    assert not g2.replicas[0].healthy(g2.clock())


@pytest.mark.integration
async def test_async_failover_real(local_llm_pair, dead_url) -> None:
    a, _ = local_llm_pair
    g = ReplicaGroup(
        [
            OpenAICompatibleEndpoint(dead_url, a.model, name="dead", max_retries=0),
            OpenAICompatibleEndpoint(a.base_url, a.model, name="real"),
        ],
        prefix_affinity=False,
    )
    g.replicas[1].in_flight = 1
    resp = await g.acomplete(_req())
    g.replicas[1].in_flight = 0
    assert resp.extra["endpoint"] == "real"
    chunks = [c async for c in g.astream(_req())]
    assert chunks[-1].response is not None and chunks[-1].response.text.strip()


def test_stream_failure_after_first_token_is_raised(stub) -> None:
    bad = OpenAICompatibleEndpoint(stub.url("midstream"), "m", name="mid", max_retries=0)
    ok = OpenAICompatibleEndpoint(stub.url("ok"), "m", name="ok")
    g = ReplicaGroup([bad, ok], prefix_affinity=False)
    g.replicas[1].in_flight = 1
    with pytest.raises(EndpointProtocolError):
        list(g.stream(_req()))


def test_a_stream_cut_short_is_an_explicit_error_never_a_short_answer(stub) -> None:
    """A stream that ends without a finish_reason was cut: retried before its first token,
    ``StreamInterrupted`` after it (the caller knows its partial text is not the answer)."""
    early = OpenAICompatibleEndpoint(stub.url("cutearly"), "m", name="early", max_retries=0)
    ok = OpenAICompatibleEndpoint(stub.url("ok"), "m", name="ok")
    g = ReplicaGroup([early, ok], strategy="round_robin", prefix_affinity=False)
    chunks = list(g.stream(_req()))
    final = chunks[-1].response
    assert final is not None and final.text == "stub answer 42" and final.finish_reason == "stop"
    assert stub.state.hits["cutearly"] == 1  # tried first, then failed over

    cut = OpenAICompatibleEndpoint(stub.url("cutstream"), "m", name="cut", max_retries=3)
    seen: list[str] = []
    with pytest.raises(StreamInterrupted, match="incomplete"):
        for c in ReplicaGroup([cut, ok], strategy="round_robin", prefix_affinity=False).stream(_req()):
            seen.append(c.text)
    assert "".join(seen) == "partial" and stub.state.hits["cutstream"] == 1  # never replayed
