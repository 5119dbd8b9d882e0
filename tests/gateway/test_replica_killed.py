"""A replica killed (SIGKILL) mid-run behind the gateway, with a fallback configured.

Two stub replicas run as processes of their own and stream slowly (a pause between events), so
that streams are in flight when one of them is killed; a third stub is the fallback. Concurrent
clients send streaming and non-streaming requests before, during and after the kill. Promised:

* 0 failed non-streaming calls (a call cut by the kill is sent to another replica);
* 0 failed streams that had not sent a token yet (they fail over too);
* a stream cut after its first token ends with an explicit error event, never silently short;
* every completed answer is the whole answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tokenlean.gateway import create_app, load_config
from tokenlean.gateway.serving import AppServer

CHUNK_DELAY = 0.05  # seconds between a stub stream's events: a stream lasts a few tenths of a second


@pytest.fixture
def replicas(launch: Any) -> Iterator[list[Any]]:
    """Three stub replicas, each a process of its own that streams slowly."""
    stub = ("tokenlean.gateway.stub", "--chunk-delay", str(CHUNK_DELAY))
    with launch(*stub) as r1, launch(*stub) as r2, launch(*stub) as fallback:
        yield [r1, r2, fallback]


async def _stream(client: httpx.AsyncClient, url: str, text: str) -> str:
    """'ok', 'failed_before_token', 'error_after_token' or 'silently_short' for one stream."""
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "stream": True}
    got: list[str] = []
    try:
        async with client.stream("POST", f"{url}/chat/completions", json=body) as r:
            if r.status_code != 200:
                return "failed_before_token"
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    return "ok" if "".join(got) == f"echo: {text}" else "silently_short"
                event = json.loads(data)
                if "error" in event:
                    return "error_after_token" if got else "failed_before_token"
                for choice in event.get("choices") or ():
                    got.append(choice.get("delta", {}).get("content") or "")
    except httpx.HTTPError:
        return "error_after_token" if got else "failed_before_token"
    return "silently_short"  # ended without [DONE] and without an error event


async def _complete(client: httpx.AsyncClient, url: str, text: str) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    try:
        r = await client.post(f"{url}/chat/completions", json=body)
    except httpx.HTTPError:
        return "failed"
    if r.status_code != 200:
        return "failed"
    return "ok" if r.json()["choices"][0]["message"]["content"] == f"echo: {text}" else "wrong"


async def _traffic(url: str, seconds: float, kill: Any) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {"stream": {}, "complete": {}}
    stop = time.monotonic() + seconds

    async def worker(i: int) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            n = 0
            while time.monotonic() < stop:  # bounded: the loop ends by itself
                n += 1
                text = f"worker {i} request {n} with a few words"
                if i % 2:
                    outcome, kind = await _stream(client, url, text), "stream"
                else:
                    outcome, kind = await _complete(client, url, text), "complete"
                counts[kind][outcome] = counts[kind].get(outcome, 0) + 1

    async def killer() -> None:
        await asyncio.sleep(seconds / 3)
        kill()

    await asyncio.gather(*(worker(i) for i in range(8)), killer())
    return counts


def test_replica_killed_mid_run(replicas: list[Any]) -> None:
    victim = replicas[0]
    r1, r2, fb = (f"{p.url}/v1" for p in replicas)
    cfg = load_config(
        None,
        upstreams={
            "a": {"base_urls": [r1, r2], "first_token_timeout": 2.0, "timeout": 5.0},
            "b": {"base_urls": [fb]},
        },
        routes=[{"match": "*", "targets": ["a"], "fallbacks": ["b"], "cache": False}],
    )
    with AppServer(create_app(cfg), lifespan="on") as gw:
        counts = asyncio.run(_traffic(gw.base_url, 4.5, victim.kill))
    assert victim.proc.poll() is not None  # it really died mid-run
    streams, completes = counts["stream"], counts["complete"]
    assert set(completes) == {"ok"}, counts  # 0 failed non-streaming calls
    assert streams.get("failed_before_token", 0) == 0, counts  # those fail over
    assert streams.get("silently_short", 0) == 0, counts  # never a silently shorter answer
    assert set(streams) <= {"ok", "error_after_token"}, counts
    assert streams["ok"] > 10 and completes["ok"] > 10, counts
