"""A new user's first minute: ``tokenlean serve`` with no config, the ``openai`` SDK pointed at it.

Runs the real command in a subprocess: it starts the local llama.cpp model itself and serves it.
A repeated question at temperature 0 must come from the cache (``x-tokenlean-cache: hit``), the
ledger must show the call under its key and task (``/v1/usage``) and ``/metrics`` must count it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tokenlean.server import free_port


@pytest.fixture(scope="module")
def served(local_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENLEAN_")}
    env["TOKENLEAN_LOCAL_MODEL"] = str(local_model_file)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tokenlean", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"tokenlean serve exited ({proc.returncode}):\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail(f"tokenlean serve not ready:\n{log.read_text()}")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # uvicorn exits; the command then stops llama.cpp
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


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


def test_workers_serve_from_one_config(tmp_path: Path) -> None:
    """``--workers 2``: uvicorn worker processes rebuild the app from the effective config."""
    from tokenlean.gateway.stub import StubServer

    with StubServer() as upstream:
        config = tmp_path / "tokenlean.toml"
        config.write_text(
            f'[upstreams.a]\nbase_urls = ["{upstream.base_url}"]\n[[routes]]\nmatch = "*"\ntargets = ["a"]\n'
        )
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENLEAN_")}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokenlean",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--workers",
                "2",
            ],
            env=env,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert proc.poll() is None, "tokenlean serve --workers 2 exited"
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
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
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
