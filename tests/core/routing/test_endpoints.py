"""Endpoints: real llama.cpp answers, and typed errors for every fault the stub plays."""

from __future__ import annotations

import random

import pytest

from tokenlean.errors import EndpointError, EndpointProtocolError, EndpointTimeout, EndpointUnavailable
from tokenlean.routing import OpenAICompatibleEndpoint, VLLMEndpoint, parse_prometheus
from tokenlean.routing.endpoints import backoff_delay
from tokenlean.routing.vllm import metrics_from_prometheus
from tokenlean.routing.wire import mean_logprob
from tokenlean.types import Message, Request

Q = Request([Message("user", "Say hello in one word.")], params={"max_tokens": 8, "temperature": 0})


@pytest.mark.integration
def test_real_server_complete_stream_and_async(local_llm) -> None:
    ep = OpenAICompatibleEndpoint(local_llm.base_url, local_llm.model)
    resp = ep.complete(Q)
    assert resp.text.strip()
    assert resp.usage is not None and resp.usage.input_tokens > 0 and resp.usage.output_tokens > 0
    chunks = list(ep.stream(Q))
    assert chunks[-1].response is not None
    assert "".join(c.text for c in chunks) == chunks[-1].response.text
    assert any(c.has_token for c in chunks)
    assert ep.list_models() == [local_llm.model]
    assert ep.health()


@pytest.mark.integration
async def test_real_server_async(local_llm) -> None:
    ep = OpenAICompatibleEndpoint(local_llm.base_url, local_llm.model)
    resp = await ep.acomplete(Q)
    assert resp.text.strip()
    texts = [c.text async for c in ep.astream(Q)]
    assert "".join(texts).strip()
    await ep.aclose()


def test_503_is_retried_then_unavailable(stub) -> None:
    ep = OpenAICompatibleEndpoint(stub.url("fail503"), "m", max_retries=2, backoff_base=0.01)
    with pytest.raises(EndpointUnavailable) as info:
        ep.complete(Q)
    assert info.value.status == 503 and info.value.retryable
    assert stub.state.hits["fail503"] == 3  # first try + 2 retries


def test_flaky_recovers_on_retry(stub) -> None:
    ep = OpenAICompatibleEndpoint(stub.url("flaky"), "m", max_retries=2, backoff_base=0.01)
    assert ep.complete(Q).text == "stub answer 42"
    assert stub.state.hits["flaky"] == 2


async def test_async_503_and_broken_json(stub) -> None:
    ep = OpenAICompatibleEndpoint(stub.url("fail503"), "m", max_retries=1, backoff_base=0.01)
    with pytest.raises(EndpointUnavailable):
        await ep.acomplete(Q)
    broken = OpenAICompatibleEndpoint(stub.url("broken"), "m", max_retries=3)
    with pytest.raises(EndpointProtocolError):
        await broken.acomplete(Q)
    assert stub.state.hits["broken"] == 1  # protocol errors are not retried


def test_hang_times_out(stub) -> None:
    ep = OpenAICompatibleEndpoint(stub.url("hang"), "m", timeout=0.4, max_retries=0)
    with pytest.raises(EndpointTimeout) as info:
        ep.complete(Q)
    assert isinstance(info.value, TimeoutError)


def test_broken_json_and_4xx_are_protocol_errors(stub) -> None:
    with pytest.raises(EndpointProtocolError):
        OpenAICompatibleEndpoint(stub.url("broken"), "m").complete(Q)
    with pytest.raises(EndpointProtocolError) as info:
        OpenAICompatibleEndpoint(stub.url("bad400"), "m", max_retries=3).complete(Q)
    assert info.value.status == 400 and not info.value.retryable
    assert stub.state.hits["bad400"] == 1


def test_connection_refused(dead_url) -> None:
    ep = OpenAICompatibleEndpoint(dead_url, "m", max_retries=0)
    with pytest.raises(EndpointUnavailable):
        ep.complete(Q)
    assert not ep.health()


def test_stream_usage_cached_tokens_and_broken_midstream(stub) -> None:
    ep = OpenAICompatibleEndpoint(stub.url("ok"), "m")
    chunks = list(ep.stream(Q))
    final = chunks[-1].response
    assert final is not None and final.text == "stub answer 42"
    assert final.usage is not None and final.usage.cached_input_tokens == 8 and final.usage.input_tokens == 12
    assert stub.state.bodies[-1]["stream_options"] == {"include_usage": True}
    seen: list[str] = []
    with pytest.raises(EndpointProtocolError):
        for c in OpenAICompatibleEndpoint(stub.url("midstream"), "m", max_retries=2).stream(Q):
            seen.append(c.text)
    assert seen == ["partial"]  # text already shown is never replayed by a retry
    assert stub.state.hits["midstream"] == 1


def test_cached_tokens_and_logprobs_non_streaming(stub) -> None:
    ep = OpenAICompatibleEndpoint(stub.url("ok"), "m")
    resp = ep.complete(Request(Q.messages, params={"logprobs": True}))
    assert resp.usage is not None and resp.usage.cached_input_tokens == 8
    assert mean_logprob(resp) == pytest.approx(-0.15)
    assert stub.state.bodies[-1]["model"] == "m"


def test_vllm_metrics_health_discovery_and_cache_salt(stub) -> None:
    stub.state.running, stub.state.waiting = 3, 2
    ep = VLLMEndpoint(stub.url("vllm"))
    assert ep.discover() == "stub-model"
    m = ep.metrics()
    assert m is not None
    assert (m.running, m.waiting, m.outstanding) == (3, 2, 5)
    assert m.kv_cache_usage == 0.25 and m.prefix_cache_hit_rate == pytest.approx(0.4)
    assert ep.health()
    assert not VLLMEndpoint(stub.url("down"), "stub-model").health()
    ep.complete(Request(Q.messages, metadata={"tenant": "acme"}))
    salt_a = stub.state.bodies[-1]["cache_salt"]
    assert "acme" not in salt_a
    ep.complete(Request(Q.messages, metadata={"tenant": "other"}))
    assert stub.state.bodies[-1]["cache_salt"] != salt_a
    ep.complete(Request(Q.messages, metadata={"cache_salt": "explicit"}))
    assert stub.state.bodies[-1]["cache_salt"] == "explicit"
    ep.complete(Q)
    assert "cache_salt" not in stub.state.bodies[-1]


def test_old_vllm_metric_names(stub) -> None:
    m = VLLMEndpoint(stub.url("oldvllm"), "stub-model").metrics()
    assert m is not None and m.kv_cache_usage == 0.5 and m.running == 1.0 and m.waiting is None


def test_prometheus_parser_labels_and_model_filter() -> None:
    text = 'a{x="1",y="a,b"} 2\na{x="2"} 3.5\n# comment\nb 7 1700000000\nvllm:num_requests_running{model_name="m1"} 1\nvllm:num_requests_running{model_name="m2"} 4\n'
    p = parse_prometheus(text)
    assert p["a"] == [({"x": "1", "y": "a,b"}, 2.0), ({"x": "2"}, 3.5)]
    assert p["b"] == [({}, 7.0)]
    assert metrics_from_prometheus(text, "m2").running == 4
    assert metrics_from_prometheus(text).running == 5


def test_backoff_has_full_jitter_and_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.1, 1.0, rng) for n in range(10) for _ in range(50)]
    assert all(0.0 <= d <= 1.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # jittered, not lockstep
    assert max(backoff_delay(0, 0.1, 1.0, rng) for _ in range(100)) <= 0.1


def test_errors_are_typed() -> None:
    assert issubclass(EndpointTimeout, EndpointError) and issubclass(EndpointUnavailable, EndpointError)
