"""The Redis backend's LRU sorted set does not outlive the entries Redis expired (real Redis Stack).

Entries here carry no embedding, so no model is loaded: the set, the hashes and the sweep are what
is under test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tokenlean.cache import RedisBackend
from tokenlean.cache.store import CacheEntry
from tokenlean.errors import ConfigError

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture
def make(redis_stack: str, request: pytest.FixtureRequest) -> Iterator[object]:
    made: list[RedisBackend] = []

    def factory(**kwargs: object) -> RedisBackend:
        backend = RedisBackend(redis_stack, prefix=f"lru{len(made)}{abs(hash(request.node.name))}:", **kwargs)  # type: ignore[arg-type]
        backend.clear()
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        backend.clear()


def _put(backend: RedisBackend, key: str, ttl: float | None) -> CacheEntry:
    return backend.put(CacheEntry(namespace="ns", key=key, query=key, payload=key), ttl)


def _members(backend: RedisBackend) -> int:
    return int(backend.client.zcard(backend._lru))


def test_writes_sweep_members_of_expired_entries(make: object) -> None:
    backend = make()  # type: ignore[operator]
    for i in range(50):
        _put(backend, f"t{i}", 1.0)
    for i in range(5):
        _put(backend, f"keep{i}", None)
    assert _members(backend) == 55
    time.sleep(1.2)  # Redis drops the 50 hashes; nothing tells the set
    _put(backend, "one more", None)
    assert _members(backend) == 6
    stats = backend.stats()
    assert stats["entries"] == 6 and stats["pruned"] == 50


def test_sweep_work_per_write_is_bounded_and_covers_the_set(make: object) -> None:
    backend = make(prune_batch=16)  # type: ignore[operator]
    for i in range(400):
        _put(backend, f"t{i}", 1.0)
    for i in range(10):
        _put(backend, f"keep{i}", None)
    # On a loaded machine the first entries may expire while the later ones are written, and
    # those writes then sweep them already: only what one write adds is bounded.
    before = backend.pruned
    time.sleep(1.2)
    _put(backend, "first", None)
    assert 0 < backend.pruned - before < 100  # one slice, not the whole set
    writes = 1
    while backend.pruned < 400 and writes < 200:
        _put(backend, f"w{writes}", None)
        writes += 1
    assert _members(backend) == 10 + writes and backend.pruned == 400
    assert writes < 200


def test_touch_does_not_bring_back_an_expired_entry(make: object) -> None:
    backend = make()  # type: ignore[operator]
    entry = _put(backend, "short", 0.2)
    backend.touch(entry)
    assert int(backend.client.hget(backend._ekey(str(entry.id)), "hits")) == 1
    time.sleep(0.4)
    backend.touch(entry)  # a hit served just before the expiry, counted just after
    assert backend.client.exists(backend._ekey(str(entry.id))) == 0


def test_expired_members_are_not_counted_as_evictions(make: object) -> None:
    backend = make()  # type: ignore[operator]
    for i in range(10):
        _put(backend, f"t{i}", 1.0)
    live = [_put(backend, f"keep{i}", None) for i in range(3)]
    time.sleep(1.2)
    assert _members(backend) == 13  # nothing has written since they expired
    assert backend.enforce(3, "lru") == 0  # the cap was only exceeded by the dead
    assert all(backend.get_exact("ns", e.key) is not None for e in live)
    assert backend.enforce(2, "lru") == 1
    assert backend.get_exact("ns", "keep0") is None and _members(backend) == 2


def test_bad_prune_batch(redis_stack: str) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError):
            RedisBackend(redis_stack, prune_batch=bad)  # type: ignore[arg-type]
