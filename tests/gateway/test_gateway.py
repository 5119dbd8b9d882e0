"""The gateway's protocol edges, faults, keys and levers, against the scripted stub upstream.

The stub answers "echo: <last user text>" in about a millisecond and can be told to fail (429 with
retry-after, 5xx, a stream cut mid-way, a slow first token), so every branch of the gateway is
driven deterministically through real sockets with the official ``openai`` SDK and httpx.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tokenlean.errors import ConfigError
from tokenlean.gateway import create_app, hash_key, load_config
from tokenlean.gateway.serving import AppServer
from tokenlean.gateway.stub import Cut, SlowFirstToken, Status, StubServer
from tokenlean.types import Request

SECRET = "sk-provider-secret-do-not-leak"


@pytest.fixture(scope="module")
def stubs() -> Iterator[tuple[StubServer, StubServer, StubServer]]:
    with StubServer() as a, StubServer() as a2, StubServer() as b:
        yield a, a2, b


@pytest.fixture(autouse=True)
def _reset(stubs: tuple[StubServer, ...]) -> None:
    for s in stubs:
        s.stub.reset()


def serve(upstreams: dict[str, Any], routes: list[dict[str, Any]], **extra: Any) -> AppServer:
    return AppServer(
        create_app(load_config(None, upstreams=upstreams, routes=routes, **extra)), lifespan="on"
    )


@pytest.fixture(scope="module")
def gw(stubs: tuple[StubServer, StubServer, StubServer]) -> Iterator[AppServer]:
    """Target ``a`` (two replicas) with fallback ``b``; cache on; compaction on route ``long*``."""
    a, a2, b = stubs
    upstreams = {
        "a": {"base_urls": [a.base_url, a2.base_url], "first_token_timeout": 0.5, "timeout": 2.0},
        "b": {"base_urls": [b.base_url], "model": "model-b"},
    }
    routes = [
        {
            "match": "long*",
            "targets": ["a"],
            "compaction": {"ratio": 0.5, "min_tokens": 8, "keep_last_turns": 1},
        },
        {
            "match": "ruled",
            "targets": ["a", "b"],
            "rules": [{"target": "b", "max_tokens": 20, "name": "short"}],
        },
        {"match": "*", "targets": ["a"], "fallbacks": ["b"]},
    ]
    with serve(upstreams, routes) as server:
        yield server


def client(server: AppServer, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def ask(text: str, **kw: Any) -> dict[str, Any]:
    return {"model": kw.pop("model", "m"), "messages": [{"role": "user", "content": text}], **kw}


def ledger(server: AppServer) -> Any:
    return server.app.state.gateway.levers.meter.ledger


# -- pass-through ----------------------------------------------------------------------------------
def test_unknown_fields_pass_through_both_ways(gw: AppServer, stubs: tuple[StubServer, ...]) -> None:
    a, a2, _ = stubs
    answer = {
        "id": "x1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", "vendor_note": 1},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        "vendor_field": {"nested": [1, 2]},
    }
    a.stub.push(Status(200, body=answer))
    a2.stub.push(Status(200, body=answer))
    body = ask("hello", temperature=0.7, vendor_option={"k": "v"}, seed=3)
    r = httpx.post(f"{gw.base_url}/chat/completions", json=body)
    assert r.status_code == 200
    assert r.json() == answer  # relayed as the upstream sent it
    sent = (a.stub.requests + a2.stub.requests)[-1]["body"]
    assert sent == body  # the request went upstream as the client sent it
    assert r.headers["x-tokenlean-cache"] == "bypass"  # sampled: the cache is not consulted
    assert r.headers["x-tokenlean-route"] == "a"


def test_model_name_rewritten_only_where_configured(gw: AppServer, stubs: tuple[StubServer, ...]) -> None:
    a, a2, b = stubs
    a.stub.push(Status(503))
    a2.stub.push(Status(503))
    r = client(gw).chat.completions.with_raw_response.create(**ask("to b please"))
    assert b.stub.requests[-1]["body"]["model"] == "model-b"
    assert r.headers["x-tokenlean-replica"] == b.base_url
    assert r.parse().choices[0].message.content == "echo: to b please"


# -- cache -------------------------------------------------------------------------------------------
def test_repeated_deterministic_question_is_a_hit_json_and_stream(
    gw: AppServer, stubs: tuple[StubServer, ...]
) -> None:
    c = client(gw)
    upstream_calls = lambda: sum(len(s.stub.requests) for s in stubs)  # noqa: E731
    first = c.chat.completions.with_raw_response.create(**ask("what is verbatim compaction", temperature=0))
    assert first.headers["x-tokenlean-cache"] == "miss"
    n = upstream_calls()
    second = c.chat.completions.with_raw_response.create(
        **ask("what is verbatim compaction", temperature=0), extra_headers={"x-tokenlean-task": "t-cache"}
    )
    assert second.headers["x-tokenlean-cache"] == "hit" and second.headers["x-tokenlean-route"] == "cache"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert second.parse().usage.total_tokens == 0  # nothing billed
    assert int(second.headers["x-tokenlean-tokens-saved"]) == first.parse().usage.total_tokens
    assert upstream_calls() == n
    stream = c.chat.completions.create(
        **ask("what is verbatim compaction", temperature=0),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        == "echo: what is verbatim compaction"
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 0
    assert upstream_calls() == n
    hits = [r for r in ledger(gw).records("t-cache")]
    assert len(hits) == 1 and hits[0].cache_hit and hits[0].cost == 0


def test_streamed_answer_is_cached_and_bypass_skips_everything(
    gw: AppServer, stubs: tuple[StubServer, ...]
) -> None:
    c = client(gw)
    text = "".join(
        ch.choices[0].delta.content or ""
        for ch in c.chat.completions.create(**ask("stream then cache", temperature=0), stream=True)
        if ch.choices
    )
    assert text == "echo: stream then cache"
    cache = gw.app.state.gateway.levers.cache
    deadline = time.monotonic() + 5  # a stream is stored when its relay ends, maybe just after [DONE]
    while cache.lookup(Request.from_openai(ask("stream then cache", temperature=0))).hit is False:
        assert time.monotonic() < deadline, "the streamed answer was never stored"
        time.sleep(0.02)
    hit = c.chat.completions.with_raw_response.create(**ask("stream then cache", temperature=0))
    assert hit.headers["x-tokenlean-cache"] == "hit" and hit.parse().choices[0].message.content == text
    n = sum(len(s.stub.requests) for s in stubs)
    bypass = c.chat.completions.with_raw_response.create(
        **ask("stream then cache", temperature=0), extra_headers={"x-tokenlean-bypass": "1"}
    )
    assert bypass.headers["x-tokenlean-cache"] == "bypass"
    assert sum(len(s.stub.requests) for s in stubs) == n + 1


def test_tool_call_answers_are_not_cached(gw: AppServer) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    c = client(gw)
    for expected in ("miss", "miss"):
        r = c.chat.completions.with_raw_response.create(**ask("call tool now", temperature=0), tools=tools)
        assert r.headers["x-tokenlean-cache"] == expected
        assert r.parse().choices[0].message.tool_calls[0].function.name == "lookup"


def test_tenants_never_share_answers(stubs: tuple[StubServer, ...]) -> None:
    a, _, _ = stubs
    keys = [
        {"name": "k1", "hash": hash_key("key-one"), "tenant": "acme"},
        {"name": "k2", "hash": hash_key("key-two"), "tenant": "globex"},
    ]
    with serve({"a": {"base_urls": [a.base_url]}}, [{"match": "*", "targets": ["a"]}], keys=keys) as server:
        one, two = client(server, api_key="key-one"), client(server, api_key="key-two")
        q = ask("tenant question", temperature=0)
        assert one.chat.completions.with_raw_response.create(**q).headers["x-tokenlean-cache"] == "miss"
        assert one.chat.completions.with_raw_response.create(**q).headers["x-tokenlean-cache"] == "hit"
        assert two.chat.completions.with_raw_response.create(**q).headers["x-tokenlean-cache"] == "miss"
        usage = httpx.get(f"{server.base_url}/usage", headers={"authorization": "Bearer key-two"}).json()
        assert set(usage["keys"]) == {"k2"}  # a key sees its own calls only
        assert usage["keys"]["k2"]["calls"] == 1


# -- keys, budgets, limits -----------------------------------------------------------------------
def test_keys_budgets_and_provider_key_never_leaks(
    stubs: tuple[StubServer, ...], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    a, _, _ = stubs
    monkeypatch.setenv("TL_TEST_PROVIDER_KEY", SECRET)
    keys = [
        {"name": "small", "hash": hash_key("k-small"), "budget": {"requests_per_day": 2}},
        {"name": "narrow", "hash": hash_key("k-narrow"), "routes": ["other*"]},
    ]
    up = {"a": {"base_urls": [a.base_url], "api_key_env": "TL_TEST_PROVIDER_KEY"}}
    caplog.set_level(logging.DEBUG)
    with serve(up, [{"match": "*", "targets": ["a"]}], keys=keys) as server:
        url = f"{server.base_url}/chat/completions"
        assert httpx.post(url, json=ask("x")).status_code == 401
        bad = httpx.post(url, json=ask("x"), headers={"authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
        narrow = httpx.post(url, json=ask("x"), headers={"authorization": "Bearer k-narrow"})
        assert narrow.status_code == 403 and narrow.json()["error"]["code"] == "route_not_allowed"
        small = {"authorization": "Bearer k-small"}
        assert [httpx.post(url, json=ask(f"q{i}"), headers=small).status_code for i in range(3)] == [
            200,
            200,
            429,
        ]
        refused = httpx.post(url, json=ask("q"), headers=small)
        assert refused.json()["error"]["code"] == "budget_exceeded"
        # the upstream got the provider key, never the client's virtual key
        assert {r["headers"]["authorization"] for r in a.stub.requests} == {f"Bearer {SECRET}"}
        a.stub.push(Status(401, body={"error": {"message": "bad provider key"}}))
        err = httpx.post(url, json=ask("q"), headers={"authorization": "Bearer k-narrow"})
        assert SECRET not in err.text
        assert (
            httpx.get(f"{server.base_url}/usage", headers=small).json()["keys"]["small"]["today"]["requests"]
            == 2
        )
    assert SECRET not in caplog.text


def test_request_limits_and_bad_input(stubs: tuple[StubServer, ...]) -> None:
    a, _, _ = stubs
    server_cfg = {"max_body_bytes": 2048}
    with serve(
        {"a": {"base_urls": [a.base_url]}}, [{"match": "m*", "targets": ["a"]}], server=server_cfg
    ) as server:
        url = f"{server.base_url}/chat/completions"
        assert httpx.post(url, json=ask("x" * 5000)).status_code == 413
        assert httpx.post(url, content=b"{not json").status_code == 400
        assert httpx.post(url, json={"model": "m"}).status_code == 400
        assert httpx.post(url, json={"messages": [{"role": "user", "content": "x"}]}).status_code == 400
        unknown = httpx.post(url, json=ask("x", model="zzz"))
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
        assert len(a.stub.requests) == 0


# -- faults -----------------------------------------------------------------------------------------
def test_429_and_5xx_fail_over_and_retry_after_reaches_the_client(
    gw: AppServer, stubs: tuple[StubServer, ...]
) -> None:
    a, a2, b = stubs
    a.stub.push(Status(429, {"retry-after": "1"}))
    a2.stub.push(Status(500))
    r = client(gw).chat.completions.with_raw_response.create(**ask("survive"))
    assert r.parse().choices[0].message.content == "echo: survive"
    assert r.headers["x-tokenlean-replica"] == b.base_url
    # every candidate rate-limited: the client gets the 429 and its retry-after
    with serve({"a": {"base_urls": [a.base_url]}}, [{"match": "*", "targets": ["a"]}]) as server:
        a.stub.push(Status(429, {"retry-after": "7"}))
        limited = httpx.post(f"{server.base_url}/chat/completions", json=ask("x"))
        assert limited.status_code == 429 and limited.headers["retry-after"] == "7"


def test_stream_fails_over_before_first_token(gw: AppServer, stubs: tuple[StubServer, ...]) -> None:
    a, a2, b = stubs
    for s in (a, a2):
        s.stub.push(Status(502))
    chunks = list(client(gw).chat.completions.create(**ask("stream failover one"), stream=True))
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        == "echo: stream failover one"
    )
    assert len(b.stub.requests) == 1
    # a slow first token counts as a failure before the first token
    a.stub.push(SlowFirstToken(2.0))
    a2.stub.push(SlowFirstToken(2.0))
    chunks = list(client(gw).chat.completions.create(**ask("slow first token"), stream=True))
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "echo: slow first token"
    )


def test_stream_cut_after_first_token_is_an_explicit_error(
    gw: AppServer, stubs: tuple[StubServer, ...]
) -> None:
    a, a2, b = stubs
    a.stub.push(Cut(2))
    a2.stub.push(Cut(2))
    received: list[str] = []
    with pytest.raises(openai.APIError, match="incomplete"):
        for ch in client(gw).chat.completions.create(**ask("cut one two three four five"), stream=True):
            if ch.choices:
                received.append(ch.choices[0].delta.content or "")
    assert "".join(received) and "".join(received) != "echo: cut one two three four five"
    assert len(b.stub.requests) == 0  # never replayed elsewhere after a token was sent
    deadline = time.monotonic() + 5  # the relay records the call once the stream has ended
    while not [r for r in ledger(gw).records() if "error" in r.extra] and time.monotonic() < deadline:
        time.sleep(0.02)
    (rec,) = [r for r in ledger(gw).records() if "error" in r.extra]
    assert "incomplete" in rec.extra["error"]


def test_non_stream_timeout_fails_over(stubs: tuple[StubServer, ...]) -> None:
    a, _, b = stubs
    up = {"a": {"base_urls": [a.base_url], "timeout": 0.3}, "b": {"base_urls": [b.base_url]}}
    with serve(up, [{"match": "*", "targets": ["a"], "fallbacks": ["b"]}]) as server:
        a.stub.push(SlowFirstToken(1.5))
        r = client(server).chat.completions.with_raw_response.create(**ask("slow"))
        assert r.headers["x-tokenlean-replica"] == b.base_url


# -- routing, sessions, compaction ---------------------------------------------------------------
def test_sticky_sessions_keep_their_replica(gw: AppServer, stubs: tuple[StubServer, ...]) -> None:
    a, a2, _ = stubs
    c = client(gw)
    seen: dict[str, set[str]] = {"s1": set(), "s2": set()}
    for i in range(4):
        for session in seen:
            r = c.chat.completions.with_raw_response.create(
                **ask(f"turn {i}"), extra_headers={"x-tokenlean-session": session}
            )
            seen[session].add(r.headers["x-tokenlean-replica"])
    assert all(len(v) == 1 for v in seen.values())
    assert {a.base_url, a2.base_url} == seen["s1"] | seen["s2"]  # the two sessions were spread


def test_rules_route_short_questions(gw: AppServer, stubs: tuple[StubServer, ...]) -> None:
    c = client(gw)
    short = c.chat.completions.with_raw_response.create(**ask("hi", model="ruled"))
    long = c.chat.completions.with_raw_response.create(**ask("word " * 60, model="ruled"))
    assert short.headers["x-tokenlean-route"] == "b" and long.headers["x-tokenlean-route"] == "a"


def test_compaction_saves_tokens_and_omissions_are_recoverable(
    gw: AppServer, stubs: tuple[StubServer, ...]
) -> None:
    a, a2, _ = stubs
    old = "\n".join(
        f"Line {i}: the deployment log reports status code {i * 7} for service node-{i}." for i in range(60)
    )
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Here is the log:\n" + old},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Which node reported status 133?"},
    ]
    r = client(gw).chat.completions.with_raw_response.create(
        model="long-ctx", messages=messages, extra_headers={"x-tokenlean-session": "compact-1"}
    )
    saved = int(r.headers["x-tokenlean-tokens-saved"])
    assert saved > 0
    sent = (a.stub.requests + a2.stub.requests)[-1]["body"]["messages"]
    assert sent[0] == messages[0] and sent[-1] == messages[-1]  # system and the question untouched
    shortened = sent[1]["content"]
    assert len(shortened) < len(messages[1]["content"])
    handles = re.findall(r"om-[0-9a-f]{10,32}", shortened)
    assert handles
    texts = [httpx.get(f"{gw.base_url}/tokenlean/omissions/{h}").json()["text"] for h in handles]
    assert all(t and t in messages[1]["content"] for t in texts)  # every omission comes back verbatim
    assert httpx.get(f"{gw.base_url}/tokenlean/omissions/om-0000000000").status_code == 404
    rec = ledger(gw).records()[-1]
    assert rec.extra["tokens_saved"] == saved


# -- the other endpoints, config -----------------------------------------------------------------
def test_models_health_metrics(gw: AppServer) -> None:
    client(gw).chat.completions.create(**ask("for the metrics"))
    models = httpx.get(f"{gw.base_url}/models").json()
    assert {m["id"] for m in models["data"]} >= {"ruled", "model-b"}
    assert httpx.get(f"{gw.url}/health").json()["status"] == "ok"
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert re.search(r'tokenlean_llm_calls_total\{model="m"\} \d+', metrics)


def test_config_errors_are_typed_and_env_overrides_the_file(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenlean.gateway.config import EXAMPLE_CONFIG

    # the docs print the same file
    assert (Path(__file__).parents[2] / "docs/snippets/gateway-example.toml").read_text() == EXAMPLE_CONFIG
    path = tmp_path / "tokenlean.toml"
    path.write_text(EXAMPLE_CONFIG)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("TOKENLEAN_SERVER__PORT", "9911")
    cfg = load_config(path)
    assert cfg.server.port == 9911 and [r.match for r in cfg.routes] == ["gpt-4o*", "*"]
    with pytest.raises(ConfigError, match="names upstream 'nope'"):
        load_config(None, routes=[{"match": "*", "targets": ["nope"]}])
    with pytest.raises(ConfigError, match="hash"):
        load_config(None, keys=[{"name": "k", "hash": "plain-text-key"}])
    with pytest.raises(ConfigError, match="not valid TOML"):
        (tmp_path / "bad.toml").write_text("[server\n")
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_cli_prints_example_config_and_new_keys(capsys: pytest.CaptureFixture[str]) -> None:
    from tokenlean.cli import main

    assert main(["serve", "--example-config"]) == 0
    assert "[[routes]]" in capsys.readouterr().out
    assert main(["serve", "--new-key"]) == 0
    out = capsys.readouterr().out
    key = re.search(r"key:\s+(\S+)", out)
    digest = re.search(r"hash:\s+(sha256:[0-9a-f]{64})", out)
    assert key and digest and hash_key(key.group(1)) == digest.group(1)


def test_otel_spans_join_the_clients_trace(stubs: tuple[StubServer, ...]) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from tokenlean.gateway.pipeline import Levers
    from tokenlean.metering import Meter
    from tokenlean.metering.testing import InMemoryOtel

    a, _, _ = stubs
    cfg = load_config(
        None,
        upstreams={"a": {"base_urls": [a.base_url]}},
        routes=[{"match": "*", "targets": ["a"]}],
        server={"otel": True},
    )
    meter = Meter()
    otel = InMemoryOtel(meter)  # the gateway's own enable_otel then reuses this exporter
    try:
        with AppServer(create_app(cfg, levers=Levers(cfg, meter=meter)), lifespan="on") as server:
            trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
            headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
            c = client(server)
            miss = c.chat.completions.with_raw_response.create(
                **ask("traced call", temperature=0), extra_headers=headers
            )
            hit = c.chat.completions.with_raw_response.create(
                **ask("traced call", temperature=0), extra_headers=headers
            )
            assert (miss.headers["x-tokenlean-cache"], hit.headers["x-tokenlean-cache"]) == ("miss", "hit")
            spans = otel.spans.get_finished_spans()
            assert len(spans) == 2
            for span in spans:
                assert f"{span.context.trace_id:032x}" == trace_id
                assert span.parent is not None and f"{span.parent.span_id:016x}" == parent
            first, second = sorted(spans, key=lambda s: s.start_time or 0)
            usage = miss.parse().usage
            assert first.attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
            assert first.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
            assert second.attributes["tokenlean.cache.hit"] is True
            assert second.attributes["gen_ai.usage.input_tokens"] == 0  # a hit bills nothing
    finally:
        otel.close()
