"""Real clients through ``tokenlean serve`` in front of a real llama.cpp server.

One gateway (module scope, cache on for every model) sits in front of the session's ``local_llm``
(SmolLM2-135M). It is driven by the official ``openai`` SDK, LangChain's ``ChatOpenAI`` and
LlamaIndex's ``OpenAILike``, exactly as a user points them at it: by changing the base URL.

What the upstream really received is captured with an httpx request hook on the gateway's own
upstream client, and what it really answers is checked against direct calls to the same server
(temperature 0: the same request gives the same answer), so "relayed as the server sent it" is
checked against the wire, not against what the gateway says about itself.

Every test asks its own question: the cache is shared by the module, and a question asked by one
test must not turn another test's miss into a hit. Answers are kept short (16 tokens at most); a
cut answer (``finish_reason: length``) is never cached, so the questions whose second asking must
be a hit are ones the model answers in full within 16 tokens at temperature 0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

import httpx  # noqa: E402

pytestmark = pytest.mark.integration

MAX_TOKENS = 16
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city's name."}},
                "required": ["city"],
            },
        },
    }
]
# llama.cpp only calls a tool when the request names it (with "auto" it answers in prose).
FORCE_WEATHER = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def gw(llama_gateway: Any) -> Iterator[Any]:
    with llama_gateway("*") as g:
        yield g


@pytest.fixture
def sdk(gw: Any) -> Iterator[Any]:
    client = openai.OpenAI(
        base_url=gw.base_url,
        api_key="x",
        max_retries=0,
        http_client=httpx.Client(trust_env=False, timeout=60.0),
    )
    yield client
    client.close()


@pytest.fixture
def upstream(local_llm: Any) -> Iterator[httpx.Client]:
    """Direct calls to the llama.cpp server, bypassing the gateway (the reference answers)."""
    with httpx.Client(base_url=local_llm.base_url, trust_env=False, timeout=60.0) as client:
        yield client


def _ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def _sse(text: str) -> list[dict[str, Any]]:
    """The JSON events of a server-sent event stream (``[DONE]`` left out)."""
    out = []
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            out.append(json.loads(line[5:]))
    return out


def _metric(text: str, name: str, model: str) -> float:
    m = re.search(rf'^{name}\{{model="{re.escape(model)}"\}} (\S+)$', text, re.MULTILINE)
    assert m is not None, f"{name} for {model} not in /metrics:\n{text}"
    return float(m.group(1))


# -- the openai SDK --------------------------------------------------------------------------------
def test_sdk_chat_is_relayed_and_metered_as_the_server_reported(
    gw: Any, sdk: Any, upstream: httpx.Client
) -> None:
    messages = _ask("Name one colour.")
    raw = sdk.chat.completions.with_raw_response.create(
        model=gw.llm.model,
        messages=messages,
        temperature=0,
        max_tokens=MAX_TOKENS,
        extra_headers={"x-tokenlean-task": "sdk-plain"},
    )
    r = raw.parse()
    assert raw.headers["x-tokenlean-cache"] == "miss"
    assert raw.headers["x-tokenlean-route"] == "local"
    assert raw.headers["x-tokenlean-tokens-saved"] == "0"
    assert raw.headers["x-tokenlean-replica"] == gw.llm.base_url

    # the body went upstream as the client sent it
    sent = gw.last_sent()
    assert sent["messages"] == messages and sent["max_tokens"] == MAX_TOKENS and sent["temperature"] == 0
    # and the server's own answer came back: the same request sent directly gives the same answer
    direct = upstream.post("/chat/completions", json=sent).json()
    assert r.choices[0].message.content == direct["choices"][0]["message"]["content"]
    assert r.choices[0].message.content  # the tiny model does say something
    assert r.choices[0].finish_reason == direct["choices"][0]["finish_reason"]
    assert r.usage.model_dump(exclude_none=True) == direct["usage"]
    assert r.id.startswith("chatcmpl-") and not r.id.startswith("chatcmpl-tl-")  # the server's id

    (rec,) = gw.records("sdk-plain", 1)
    assert not rec.cache_hit
    assert (rec.usage.input_tokens, rec.usage.output_tokens) == (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
    )
    assert rec.usage.total_tokens == r.usage.total_tokens > 0
    assert rec.model == gw.llm.model and rec.endpoint == gw.llm.base_url
    assert rec.tags["key"] == "anonymous" and rec.tags["target"] == "local"


def test_acceptance_same_question_twice_is_a_cache_hit(gw: Any, sdk: Any) -> None:
    task = "acceptance"
    sent_before = len(gw.sent)

    def ask() -> Any:
        return sdk.chat.completions.with_raw_response.create(
            model=gw.llm.model,
            messages=[
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
            temperature=0,
            max_tokens=MAX_TOKENS,
            extra_headers={"x-tokenlean-task": task},
        )

    first_raw, second_raw = ask(), ask()
    first, second = first_raw.parse(), second_raw.parse()
    assert first_raw.headers["x-tokenlean-cache"] == "miss"
    assert second_raw.headers["x-tokenlean-cache"] == "hit"
    assert second_raw.headers["x-tokenlean-route"] == "cache"
    assert second_raw.headers["x-tokenlean-tokens-saved"] == str(first.usage.total_tokens)
    assert len(gw.sent) == sent_before + 1  # the hit never reached the server
    assert first.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"  # a complete answer: replayable
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.choices[0].finish_reason == first.choices[0].finish_reason
    # a hit bills nothing
    assert (second.usage.prompt_tokens, second.usage.completion_tokens, second.usage.total_tokens) == (
        0,
        0,
        0,
    )

    miss, hit = gw.records(task, 2)
    assert (miss.cache_hit, hit.cache_hit) == (False, True)
    assert (miss.usage.input_tokens, miss.usage.output_tokens) == (
        first.usage.prompt_tokens,
        first.usage.completion_tokens,
    )
    assert hit.usage == miss.usage  # the replayed call's tokens: what the hit saved
    assert hit.model == miss.model == gw.llm.model
    assert hit.endpoint is None and hit.tags["target"] == "cache"
    summary = gw.ledger.task(task)
    assert (summary.calls, summary.cache_hits) == (2, 1)

    with httpx.Client(base_url=gw.server.url, trust_env=False, timeout=10.0) as http:
        metrics = http.get("/metrics")
        usage = http.get("/v1/usage")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert _metric(metrics.text, "tokenlean_llm_calls_total", gw.llm.model) >= 2
    assert _metric(metrics.text, "tokenlean_llm_cache_hits_total", gw.llm.model) >= 1
    assert _metric(metrics.text, "tokenlean_input_tokens_total", gw.llm.model) >= first.usage.prompt_tokens
    assert "# TYPE tokenlean_llm_calls_total counter" in metrics.text

    body = usage.json()
    t = body["tasks"][task]
    assert (t["calls"], t["cache_hits"]) == (2, 1)
    assert (t["input_tokens"], t["output_tokens"]) == (
        2 * first.usage.prompt_tokens,
        2 * first.usage.completion_tokens,
    )
    assert gw.llm.model in t["models"]
    assert body["keys"]["anonymous"]["calls"] >= 2  # an open gateway: every call is "anonymous"


def _stream(sdk: Any, gw: Any, question: str, task: str, **kwargs: Any) -> tuple[Any, list[Any]]:
    with sdk.chat.completions.with_streaming_response.create(
        model=gw.llm.model,
        messages=_ask(question),
        temperature=0,
        max_tokens=MAX_TOKENS,
        stream=True,
        extra_headers={"x-tokenlean-task": task},
        **kwargs,
    ) as raw:
        chunks = list(raw.parse())
        return raw.headers, chunks


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_sdk_stream_with_usage_relays_the_server_stream_then_replays_with_usage(
    gw: Any, sdk: Any, upstream: httpx.Client
) -> None:
    question, task = "What is 2+2?", "sdk-stream-usage"
    opts = {"include_usage": True}
    stores = gw.stores()
    headers, chunks = _stream(sdk, gw, question, task, stream_options=opts)
    assert headers["x-tokenlean-cache"] == "miss" and headers["content-type"].startswith("text/event-stream")
    sent = gw.last_sent()
    assert sent["stream"] is True and sent["stream_options"] == opts

    # the same request straight to the server: the gateway relayed every event it sent
    direct = _sse(upstream.post("/chat/completions", json=sent).text)
    direct_text = "".join((e["choices"][0]["delta"].get("content") or "") for e in direct if e.get("choices"))
    assert _text(chunks) == direct_text != ""
    assert [c.choices[0].finish_reason for c in chunks if c.choices] == [
        e["choices"][0]["finish_reason"] for e in direct if e.get("choices")
    ]
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "stop"
    direct_usage = [e["usage"] for e in direct if e.get("usage")]
    client_usage = [c.usage.model_dump(exclude_none=True) for c in chunks if c.usage is not None]
    assert client_usage == direct_usage  # a usage chunk arrives exactly when the server sends one

    (rec,) = gw.records(task, 1)
    assert not rec.cache_hit and rec.first_token_at is not None and rec.endpoint == gw.llm.base_url
    if direct_usage:  # metered as the server reported
        assert (rec.usage.input_tokens, rec.usage.output_tokens) == (
            direct_usage[-1]["prompt_tokens"],
            direct_usage[-1]["completion_tokens"],
        )
    else:  # llama-cpp-python ignores stream_options: the gateway counts the tokens itself, flagged
        assert rec.extra.get("usage_estimated") is True
        plain = {k: v for k, v in sent.items() if k not in ("stream", "stream_options")}
        reported = upstream.post("/chat/completions", json=plain).json()["usage"]
        # tokenlean's tokenizer is not SmolLM2's and it cannot see the server's chat template (which
        # adds a default system prompt here): an estimate, never more than the server counted
        assert 0 < rec.usage.input_tokens <= reported["prompt_tokens"]
        assert (
            reported["completion_tokens"] / 2 <= rec.usage.output_tokens <= reported["completion_tokens"] * 2
        )

    # the complete streamed answer was kept: the same question again is a replay of its chunks,
    # and with include_usage the replay ends with a usage chunk (zero: nothing was billed)
    gw.stored(stores)
    sent_before = len(gw.sent)
    headers, replay = _stream(sdk, gw, question, task, stream_options=opts)
    assert headers["x-tokenlean-cache"] == "hit" and headers["x-tokenlean-route"] == "cache"
    assert len(gw.sent) == sent_before
    assert _text(replay) == _text(chunks)
    last = replay[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (0, 0, 0)
    assert [c for c in replay[:-1] if c.usage is not None] == []  # only the last chunk carries usage
    assert replay[-2].choices[0].finish_reason == "stop"
    assert [r.cache_hit for r in gw.records(task, 2)] == [False, True]


def test_sdk_stream_without_usage_option_gets_no_usage_chunk(gw: Any, sdk: Any) -> None:
    question, task = "Name a fruit.", "sdk-stream-plain"
    stores = gw.stores()
    headers, chunks = _stream(sdk, gw, question, task)
    assert headers["x-tokenlean-cache"] == "miss"
    # upstream, the gateway asks for usage anyway (for the ledger); the client did not ask for it
    assert gw.last_sent()["stream_options"] == {"include_usage": True}
    assert _text(chunks) != ""
    assert chunks[-1].choices and chunks[-1].choices[0].finish_reason == "stop"
    assert [c for c in chunks if c.usage is not None or not c.choices] == []
    (miss,) = gw.records(task, 1)
    assert not miss.cache_hit

    # a replay of the same question without include_usage: no usage chunk either
    gw.stored(stores)
    headers, replay = _stream(sdk, gw, question, task)
    assert headers["x-tokenlean-cache"] == "hit"
    assert _text(replay) == _text(chunks)
    assert [c for c in replay if c.usage is not None or not c.choices] == []
    assert replay[-1].choices[0].finish_reason == "stop"
    assert [r.cache_hit for r in gw.records(task, 2)] == [False, True]


def test_sdk_tools_are_sent_intact_and_tool_calls_come_back(
    gw: Any, sdk: Any, upstream: httpx.Client
) -> None:
    task = "sdk-tools"
    messages = _ask("What is the weather in Paris?")

    def call() -> Any:
        return sdk.chat.completions.with_raw_response.create(
            model=gw.llm.model,
            messages=messages,
            tools=TOOLS,
            tool_choice=FORCE_WEATHER,
            temperature=0,
            max_tokens=MAX_TOKENS,
            extra_headers={"x-tokenlean-task": task},
        )

    raw = call()
    r = raw.parse()
    sent = gw.last_sent()
    assert sent["tools"] == TOOLS and sent["tool_choice"] == FORCE_WEATHER and sent["messages"] == messages

    direct = upstream.post("/chat/completions", json=sent).json()["choices"][0]
    choice = r.choices[0]
    assert choice.finish_reason == direct["finish_reason"]
    got = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    want = [
        (c["function"]["name"], c["function"]["arguments"]) for c in direct["message"].get("tool_calls") or []
    ]
    assert got == want
    assert got, f"llama.cpp answered a forced tool choice without a tool call: {direct}"
    name, arguments = got[0]
    assert name == "get_weather"
    assert isinstance(json.loads(arguments).get("city"), str)  # arguments parse, with the schema's field

    # a tool call is not replayable: the same request again goes to the server again
    again = call()
    assert raw.headers["x-tokenlean-cache"] == again.headers["x-tokenlean-cache"] == "miss"
    assert [c.function.arguments for c in again.parse().choices[0].message.tool_calls] == [arguments]
    recs = gw.records(task, 2)
    assert [r.cache_hit for r in recs] == [False, False]
    assert recs[0].usage.output_tokens == r.usage.completion_tokens > 0

    # streamed: the tool call's deltas arrive and add up to the same call
    with sdk.chat.completions.create(
        model=gw.llm.model,
        messages=messages,
        tools=TOOLS,
        tool_choice=FORCE_WEATHER,
        temperature=0,
        max_tokens=MAX_TOKENS,
        stream=True,
        extra_headers={"x-tokenlean-task": task},
    ) as stream:
        chunks = list(stream)
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert deltas and {d.function.name for d in deltas} == {"get_weather"}
    streamed_args = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(streamed_args) == json.loads(arguments)
    assert gw.last_sent()["tools"] == TOOLS
    gw.records(task, 3)


def test_models_and_health(gw: Any, sdk: Any) -> None:
    assert gw.llm.model in [m.id for m in sdk.models.list()]
    with httpx.Client(base_url=gw.server.url, trust_env=False, timeout=10.0) as http:
        health = http.get("/health").json()
    assert health["status"] == "ok"
    assert health["upstreams"] == {"local": [f"local@{gw.llm.base_url}"]}


# -- LangChain -------------------------------------------------------------------------------------
def _chat_openai(gw: Any, task: str, **kwargs: Any) -> Any:
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=gw.base_url,
        api_key="x",
        model=gw.llm.model,
        temperature=0,
        # ChatOpenAI sends max_tokens as max_completion_tokens, which llama.cpp ignores
        extra_body={"max_tokens": MAX_TOKENS},
        default_headers={"x-tokenlean-task": task},
        max_retries=0,
        **kwargs,
    )


def test_langchain_invoke_and_stream(gw: Any) -> None:
    from langchain_core.messages import AIMessage, AIMessageChunk

    task = "langchain"
    llm = _chat_openai(gw, task)
    question = "Say goodbye to Bob."  # answered in full: cached

    answer = llm.invoke(question)
    assert isinstance(answer, AIMessage) and isinstance(answer.content, str) and answer.content
    assert gw.last_sent()["messages"] == [{"role": "user", "content": question}]
    (miss,) = gw.records(task, 1)
    assert not miss.cache_hit
    assert answer.usage_metadata is not None
    assert (miss.usage.input_tokens, miss.usage.output_tokens) == (
        answer.usage_metadata["input_tokens"],
        answer.usage_metadata["output_tokens"],
    )

    # the same question streamed: replayed from the cache, the same text
    sent_before = len(gw.sent)
    pieces = list(llm.stream(question))
    assert pieces and all(isinstance(p, AIMessageChunk) for p in pieces)
    assert "".join(str(p.content) for p in pieces) == answer.content
    assert len(gw.sent) == sent_before  # nothing went upstream
    assert [r.cache_hit for r in gw.records(task, 2)] == [False, True]

    # a new question streamed: relayed from the server, token by token
    pieces = list(llm.stream("Say hello to Bob."))
    assert len(pieces) > 2 and "".join(str(p.content) for p in pieces)
    assert gw.last_sent()["stream"] is True
    recs = gw.records(task, 3)
    assert not recs[-1].cache_hit and recs[-1].endpoint == gw.llm.base_url


def test_langchain_bind_tools(gw: Any) -> None:
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"It is sunny in {city}."

    task = "langchain-tools"
    llm = _chat_openai(gw, task).bind_tools([get_weather], tool_choice="get_weather")
    answer = llm.invoke("What is the weather in Rome?")
    assert isinstance(answer, AIMessage)
    sent = gw.last_sent()
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    assert sent["tools"][0]["function"]["parameters"]["properties"]["city"]["type"] == "string"
    assert sent["tool_choice"] == FORCE_WEATHER
    (rec,) = gw.records(task, 1)  # the call went through the gateway
    assert not rec.cache_hit and rec.usage.output_tokens > 0
    assert [c["name"] for c in answer.tool_calls] == ["get_weather"]
    assert isinstance(answer.tool_calls[0]["args"].get("city"), str)


# -- LlamaIndex ------------------------------------------------------------------------------------
def _openai_like(gw: Any, task: str) -> Any:
    openai_like = pytest.importorskip("llama_index.llms.openai_like")
    return openai_like.OpenAILike(
        model=gw.llm.model,
        api_base=gw.base_url,
        api_key="x",
        is_chat_model=True,
        max_tokens=MAX_TOKENS,
        temperature=0,
        max_retries=0,
        default_headers={"x-tokenlean-task": task},
    )


def test_llamaindex_chat_stream_chat_and_complete(gw: Any) -> None:
    from llama_index.core.llms import ChatMessage

    task = "llamaindex"
    llm = _openai_like(gw, task)

    chat = llm.chat([ChatMessage(role="user", content="Name a planet.")])
    assert chat.message.content
    (rec,) = gw.records(task, 1)
    assert not rec.cache_hit
    usage = chat.raw.usage  # the ChatCompletion the gateway returned
    assert (rec.usage.input_tokens, rec.usage.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    assert gw.last_sent()["max_tokens"] == MAX_TOKENS

    responses = list(llm.stream_chat([ChatMessage(role="user", content="Name a river.")]))
    assert len(responses) > 2
    assert "".join(r.delta or "" for r in responses) == responses[-1].message.content != ""
    assert gw.last_sent()["stream"] is True
    assert not gw.records(task, 2)[-1].cache_hit

    completion = llm.complete("Name an ocean.")
    assert completion.text
    assert gw.last_sent()["messages"] == [{"role": "user", "content": "Name an ocean."}]  # as a chat
    assert [r.cache_hit for r in gw.records(task, 3)] == [False, False, False]
