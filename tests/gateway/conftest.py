"""Shared pieces of the gateway tests: a gateway in front of the real llama.cpp server, recording
what it sends upstream, for the OpenAI and the Anthropic client tests alike; and servers started
as processes of their own (the real ``tokenlean serve`` command, stub replicas a test can kill)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tokenlean.gateway import create_app, load_config
from tokenlean.gateway.serving import AppServer
from tokenlean.metering import Ledger, UsageRecord
from tokenlean.server import free_port


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


class Process:
    """``python -m MODULE ARGS --port P`` in a session of its own on 127.0.0.1, until ``/health``
    answers (a process that exits or stays silent fails the test, with its log when there is one)."""

    def __init__(
        self, module: str, *args: str, env: dict[str, str] | None = None, log: Path | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        # TOKENLEAN_* of the test session must not configure the server under test
        base = {k: v for k, v in os.environ.items() if not k.startswith("TOKENLEAN_")}
        out = log.open("wb") if log is not None else None
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, *args, "--port", str(self.port)],
                env={**base, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()

    def _said(self) -> str:
        return f":\n{self.log.read_text()}" if self.log is not None else ""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.proc.args} exited ({self.proc.returncode}){self._said()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.proc.args} not ready after {timeout}s{self._said()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL to the whole process group (a replica dying mid-run)."""
        os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (uvicorn exits; ``tokenlean serve`` then stops what it started), then SIGKILL."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(10)


@contextmanager
def _launched(
    module: str, *args: str, env: dict[str, str] | None = None, log: Path | None = None, timeout: float = 60
) -> Iterator[Process]:
    process = Process(module, *args, env=env, log=log)
    try:
        process.wait_ready(timeout)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def launch() -> Callable[..., AbstractContextManager[Process]]:
    """``with launch("tokenlean", "serve", "--config", path) as p``: ``p.url``, ``p.kill()``."""
    return _launched
