"""Two gateway processes on one Redis Stack behave as one gateway.

Each process is the real ``tokenlean serve --config`` command; they share nothing but the Redis
named in ``[shared]``. A question answered through one is a cache hit through the other, a key's
daily budget is spent across both, ``/v1/usage`` and ``/metrics`` of either count both, an
omission one compacted is expanded by the other, and a session stays on its replica whichever
process receives its next turn.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tokenlean.gateway import hash_key
from tokenlean.gateway.stub import StubServer

KEY = "tl-shared-test-key"


def _config(redis_url: str, stubs: list[StubServer], prefix: str) -> str:
    urls = ", ".join(f'"{s.base_url}"' for s in stubs)
    return f"""
[shared]
redis = "{redis_url}"
prefix = "{prefix}"

[upstreams.a]
base_urls = [{urls}]

[[routes]]
match = "long*"
targets = ["a"]
compaction = {{ ratio = 0.5, min_tokens = 8, keep_last_turns = 1 }}

[[routes]]
match = "*"
targets = ["a"]

[[keys]]
name = "team"
hash = "{hash_key(KEY)}"
budget = {{ requests_per_day = 6 }}
"""


@pytest.fixture(scope="module")
def gateways(
    redis_stack: str, tmp_path_factory: pytest.TempPathFactory, launch: Any
) -> Iterator[tuple[str, str, list[StubServer], str, str]]:
    prefix = f"tokenlean:gwtest:{uuid.uuid4().hex[:8]}:"
    with StubServer() as s1, StubServer() as s2:
        path = tmp_path_factory.mktemp("shared") / "tokenlean.toml"
        path.write_text(_config(redis_stack, [s1, s2], prefix))
        serve = ("tokenlean", "serve", "--config", str(path))
        with launch(*serve) as one, launch(*serve) as two:
            yield one.url, two.url, [s1, s2], redis_stack, prefix


def post(url: str, text: str, **kw: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEY}", **kw.pop("headers", {})}  # type: ignore[dict-item]
    body = {
        "model": kw.pop("model", "m"),
        "messages": kw.pop("messages", [{"role": "user", "content": text}]),
    }
    return httpx.post(
        f"{url}/v1/chat/completions", json={**body, "temperature": 0}, headers=headers, timeout=10
    )


def test_two_processes_share_cache_budget_usage_omissions_and_sessions(
    gateways: tuple[str, str, list[StubServer], str, str],
) -> None:
    import redis

    one, two, stubs, redis_url, prefix = gateways
    question = f"shared question {uuid.uuid4().hex[:6]}"
    task = {"x-tokenlean-task": "shared-task"}

    # 1. the cache: answered through one process, a hit through the other
    first = post(one, question, headers=task)
    second = post(two, question, headers=task)
    assert (first.headers["x-tokenlean-cache"], second.headers["x-tokenlean-cache"]) == ("miss", "hit")
    assert (
        second.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    )
    assert sum(len(s.stub.requests) for s in stubs) == 1

    # 2. omitted text: compacted by one process, expanded by the other
    log = "\n".join(f"Line {i}: service node-{i} answered status {i * 7}." for i in range(60))
    messages = [
        {"role": "user", "content": "The log:\n" + log},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Which node answered 133?"},
    ]
    compacted = post(one, "", model="long-ctx", messages=messages)
    assert int(compacted.headers["x-tokenlean-tokens-saved"]) > 0
    sent = [r for s in stubs for r in s.stub.requests][-1]["body"]["messages"][0]["content"]
    handles = re.findall(r"om-[0-9a-f]{10,32}", sent)
    assert handles
    auth = {"authorization": f"Bearer {KEY}"}
    text = httpx.get(f"{two}/v1/tokenlean/omissions/{handles[0]}", headers=auth).json()["text"]
    assert text and text in log

    # 3. sessions: the next turn keeps its replica, whichever process takes it
    session = f"s-{uuid.uuid4().hex[:6]}"
    turn1 = post(one, "turn one", headers={"x-tokenlean-session": session})
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 5  # the pin is written in the background
    while not client.get(f"{prefix}sticky:{session}") and time.monotonic() < deadline:
        time.sleep(0.02)
    turn2 = post(two, "turn two", headers={"x-tokenlean-session": session})
    assert turn2.headers["x-tokenlean-replica"] == turn1.headers["x-tokenlean-replica"]

    # 4. the budget (6 requests a day) is one budget across both processes: 5 used so far
    assert [post(url, f"spend {i}").status_code for i, url in enumerate([two, one, two])] == [200, 429, 429]
    refused = post(one, "one more")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"

    # 5. usage and metrics of either process count both
    for url in (one, two):
        usage = httpx.get(f"{url}/v1/usage", headers=auth).json()
        team = usage["keys"]["team"]
        assert team["today"]["requests"] == 6
        assert team["calls"] == 6 and team["cache_hits"] == 1
        assert usage["tasks"]["shared-task"]["calls"] == 2
        metrics = httpx.get(f"{url}/metrics").text
        assert re.search(r'tokenlean_llm_calls_total\{model="m"\} 5\b', metrics), metrics
