"""Shared pieces of the gateway tests: a gateway in front of the real llama.cpp server, recording
what it sends upstream, for the OpenAI and the Anthropic client tests alike."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import httpx
import pytest

from tokenlean.gateway import create_app, load_config
from tokenlean.gateway.serving import AppServer
from tokenlean.metering import Ledger, UsageRecord


class Gw:
    """The running gateway, what it sent upstream, and its ledger."""

    def __init__(self, server: AppServer, llm: Any) -> None:
        self.server = server
        self.llm = llm
        self.state = server.app.state.gateway
        self.sent: list[dict[str, Any]] = []  # every JSON body the gateway sent upstream

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def ledger(self) -> Ledger:
        return self.state.levers.meter.ledger

    def records(self, task: str, n: int, timeout: float = 10.0) -> list[UsageRecord]:
        """The task's records once there are ``n`` of them.

        A stream's call is recorded when the relay ends, which may be just after the client has
        read ``[DONE]`` and moved on: wait for it (briefly) instead of racing it.
        """
        deadline = time.monotonic() + timeout
        while True:
            recs = self.ledger.records(task)
            if len(recs) >= n or time.monotonic() > deadline:
                assert len(recs) == n, [(r.model, r.usage, r.cache_hit) for r in recs]
                return recs
            time.sleep(0.02)

    def stores(self) -> int:
        """Answers the gateway's cache has kept so far."""
        return int(self.state.levers.cache.stats()["stores"])

    def stored(self, before: int, timeout: float = 10.0) -> None:
        """Wait until the cache kept one more answer than ``before`` (a stream is stored when
        its relay ends, possibly just after the client has read ``[DONE]``)."""
        deadline = time.monotonic() + timeout
        while self.stores() <= before:
            assert time.monotonic() < deadline, f"the cache kept nothing: {self.state.levers.cache.stats()}"
            time.sleep(0.02)

    def last_sent(self) -> dict[str, Any]:
        assert self.sent, "nothing was sent upstream"
        return self.sent[-1]


@contextmanager
def _llama_gateway(llm: Any, match: str) -> Iterator[Gw]:
    cfg = load_config(
        None,
        upstreams={"local": {"base_urls": [llm.base_url], "model": llm.model}},
        routes=[{"match": match, "targets": ["local"], "cache": True}],
    )
    with AppServer(create_app(cfg), lifespan="on") as server:
        g = Gw(server, llm)

        async def capture(request: httpx.Request) -> None:
            if request.url.path.endswith("/chat/completions"):
                g.sent.append(json.loads(request.content))

        # the pool's upstream client, created now so that every request of the module is seen
        g.state.pool.client.event_hooks["request"].append(capture)
        yield g


@pytest.fixture(scope="module")
def llama_gateway(local_llm: Any) -> Callable[[str], AbstractContextManager[Gw]]:
    """``with llama_gateway(route_match) as gw``: the gateway (cache on) in front of llama.cpp."""
    return lambda match: _llama_gateway(local_llm, match)
