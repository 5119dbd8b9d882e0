"""A new user's first minute: ``tokenlean serve`` with no config, the ``openai`` SDK pointed at it.

Runs the real command in a subprocess: it starts the local llama.cpp model itself and serves it.
A repeated question at temperature 0 must come from the cache (``x-tokenlean-cache: hit``), the
ledger must show the call under its key and task (``/v1/usage``) and ``/metrics`` must count it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest


@pytest.fixture(scope="module")
def served(local_model_file: Path, tmp_path_factory: pytest.TempPathFactory, launch: Any) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {"TOKENLEAN_LOCAL_MODEL": str(local_model_file)}
    with launch("tokenlean", "serve", env=env, log=log, timeout=180) as gateway:
        yield gateway.url


def test_repeated_question_is_served_from_the_cache(served: str) -> None:
    client = openai.OpenAI(base_url=f"{served}/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    ask = {
        "model": model,
        "messages": [{"role": "user", "content": "Answer with one word only: what colour is the sky?"}],
        "temperature": 0,
        "max_tokens": 24,
        "extra_headers": {"x-tokenlean-task": "first-minute"},
    }
    first = client.chat.completions.with_raw_response.create(**ask)  # type: ignore[arg-type]
    second = client.chat.completions.with_raw_response.create(**ask)  # type: ignore[arg-type]
    assert first.headers["x-tokenlean-cache"] == "miss"
    # a complete answer (a truncated one, finish_reason "length", is never cached)
    assert first.parse().choices[0].finish_reason == "stop"
    assert second.headers["x-tokenlean-cache"] == "hit"
    answer = first.parse()
    assert second.parse().choices[0].message.content == answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.prompt_tokens > 0

    usage = httpx.get(f"{served}/v1/usage").json()
    task = usage["tasks"]["first-minute"]
    assert task["calls"] == 2 and task["cache_hits"] == 1
    assert task["input_tokens"] == 2 * answer.usage.prompt_tokens  # the hit's replayed tokens count once more
    assert usage["keys"]["anonymous"]["calls"] >= 2
    metrics = httpx.get(f"{served}/metrics").text
    assert re.search(rf'tokenlean_llm_cache_hits_total\{{model="{re.escape(answer.model)}"\}} 1\b', metrics)
    assert re.search(rf'tokenlean_llm_calls_total\{{model="{re.escape(answer.model)}"\}} 2\b', metrics)


def test_workers_serve_from_one_config(tmp_path: Path, launch: Any) -> None:
    """``--workers 2``: uvicorn worker processes rebuild the app from the effective config."""
    from tokenlean.gateway.stub import StubServer

    with StubServer() as upstream:
        config = tmp_path / "tokenlean.toml"
        config.write_text(
            f'[upstreams.a]\nbase_urls = ["{upstream.base_url}"]\n[[routes]]\nmatch = "*"\ntargets = ["a"]\n'
        )
        with launch("tokenlean", "serve", "--config", str(config), "--workers", "2") as gateway:
            url = gateway.url
            answers = [
                httpx.post(
                    f"{url}/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]},
                )
                for i in range(6)
            ]
            assert [a.json()["choices"][0]["message"]["content"] for a in answers] == [
                f"echo: q{i}" for i in range(6)
            ]
            assert len(upstream.stub.requests) == 6
