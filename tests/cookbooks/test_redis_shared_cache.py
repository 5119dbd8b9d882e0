"""The Redis cookbook: a second process is served from the cache the first process filled."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.integration
@pytest.mark.redis
def test_redis_shared_cache_cookbook(run_cookbook: Any, redis_stack: str) -> None:
    proc = run_cookbook("redis_shared_cache", timeout=300, env={"REDIS_URL": redis_stack})
    lines = proc.stdout.splitlines()
    misses = [line for line in lines if " MISS " in line]
    hits = [line for line in lines if " HIT " in line]
    assert len(misses) == 2 and len(hits) >= 1  # the exact repeat at least, across processes
    assert {line.split("]")[0] for line in misses}.isdisjoint({line.split("]")[0] for line in hits})
