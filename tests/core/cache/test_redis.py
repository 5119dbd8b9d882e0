"""The Redis Stack backend against a real redis-stack-server: sharing, isolation, outages, slowness."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tokenlean.cache import RedisBackend, RedisStackServer, SemanticCache

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture
def cache(redis_stack: str, embedder: object, request: pytest.FixtureRequest) -> SemanticCache:
    backend = RedisBackend(redis_stack, prefix=f"t{abs(hash(request.node.name))}:")
    c = SemanticCache(backend, embedder=embedder)
    yield c
    backend.clear()


def test_hit_miss_guard_and_two_clients_share(
    cache: SemanticCache, redis_stack: str, embedder: object
) -> None:
    assert cache.store("How do I reset my password?", "Use the link.").stored
    assert cache.lookup("how do i reset my password").tier == "exact"
    hit = cache.lookup("How can I reset my password?")
    assert hit.hit and hit.tier == "semantic" and hit.text == "Use the link."
    assert cache.lookup("How do I not reset my password?").rejected_by == "negation"
    # a second client (another app process would do the same) sees the entry
    other = SemanticCache(RedisBackend(redis_stack, prefix=cache.backend.prefix), embedder=embedder)  # type: ignore[attr-defined]
    assert other.lookup("How can I reset my password?").hit
    assert cache.backend.stats()["entries"] == 1


def test_tenants_are_isolated(cache: SemanticCache) -> None:
    cache.store("What is our refund policy?", "30 days.", tenant="acme")
    assert cache.lookup("What is our refund policy?", tenant="acme").hit
    assert not cache.lookup("What is our refund policy?", tenant="globex").hit
    assert not cache.lookup("What's our refund policy?", tenant="globex").hit


def test_native_ttl_and_feedback(redis_stack: str, embedder: object) -> None:
    backend = RedisBackend(redis_stack, prefix="ttl:")
    cache = SemanticCache(backend, embedder=embedder, ttl=0.3)
    cache.store("How do I reset my password?", "Use the link.")
    hit = cache.lookup("How can I reset my password?")
    assert hit.hit
    cache.report_wrong(hit)
    assert cache.lookup("How can I reset my password?").rejected_by == "entry_threshold"
    time.sleep(0.45)
    assert not cache.lookup("How do I reset my password?").hit  # expired by Redis itself
    backend.clear()


def test_max_entries(redis_stack: str, embedder: object) -> None:
    backend = RedisBackend(redis_stack, prefix="cap:")
    cache = SemanticCache(backend, embedder=embedder, max_entries=2, semantic=False)
    for q in ("a", "b", "c"):
        cache.store(q, q.upper())
    assert backend.stats()["entries"] == 2 and not cache.lookup("a").hit and cache.lookup("c").hit
    backend.clear()


def test_down_then_back_passes_through_fast_and_recovers(
    tmp_path: Path, embedder: object, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisStackServer(data_dir=tmp_path / "r", persist=True)
    url = server.start()
    backend = RedisBackend(url, retry_interval=0.2)
    cache = SemanticCache(backend, embedder=embedder)
    cache.store("How do I reset my password?", "Use the link.")
    embedder.embed(["How can I reset my password?"])  # type: ignore[attr-defined]  # warm: time Redis only
    server.stop(cleanup=False)
    t0 = time.perf_counter()
    down = cache.lookup("How can I reset my password?")
    assert not down.hit and down.rejected_by == "backend_error"
    assert time.perf_counter() - t0 < 1.0
    assert not cache.store("Define entropy.", "Disorder.").stored
    assert "passing through" in caplog.text
    t0 = time.perf_counter()
    for _ in range(20):  # open circuit: no network wait at all
        cache.lookup("How can I reset my password?")
    assert time.perf_counter() - t0 < 1.0
    server.start()  # same port, same data (append-only file)
    time.sleep(0.3)
    back = cache.lookup("How can I reset my password?")
    assert back.hit and back.text == "Use the link."
    server.stop()


def test_slow_redis_times_out_quickly(redis_stack: str, embedder: object) -> None:
    import redis

    backend = RedisBackend(redis_stack, prefix="slow:", socket_timeout=0.2, retry_interval=0.1)
    cache = SemanticCache(backend, embedder=embedder)
    cache.store("How do I reset my password?", "Use the link.")
    embedder.embed(["How can I reset my password?"])  # type: ignore[attr-defined]
    blocker = redis.Redis.from_url(redis_stack)
    th = threading.Thread(target=blocker.execute_command, args=("DEBUG", "SLEEP", "1.5"))
    th.start()
    time.sleep(0.1)
    t0 = time.perf_counter()
    slow = cache.lookup("How can I reset my password?")
    elapsed = time.perf_counter() - t0
    th.join()
    assert not slow.hit and slow.rejected_by == "backend_error" and elapsed < 0.8
    time.sleep(0.15)
    assert cache.lookup("How can I reset my password?").hit  # recovered
    backend.clear()


def test_appendfsync_is_checked_and_passed_to_the_server(tmp_path: Path) -> None:
    from tokenlean.errors import ConfigError

    with pytest.raises(ConfigError):
        RedisStackServer(appendfsync="sometimes")
    server = RedisStackServer(data_dir=tmp_path / "r", persist=True, appendfsync="always")
    import redis

    client = redis.Redis.from_url(server.start())
    try:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
    finally:
        client.close()
        server.stop()
