"""The Redis cookbook: a second process is served from the cache the first process filled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
@pytest.mark.redis
def test_redis_shared_cache_cookbook(local_llm: object, redis_stack: str) -> None:
    env = {
        **os.environ,
        "TOKENLEAN_BASE_URL": local_llm.base_url,  # type: ignore[attr-defined]
        "TOKENLEAN_MODEL": local_llm.model,  # type: ignore[attr-defined]
        "REDIS_URL": redis_stack,
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cookbooks" / "redis_shared_cache" / "main.py")],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    misses = [line for line in lines if " MISS " in line]
    hits = [line for line in lines if " HIT " in line]
    assert len(misses) == 2 and len(hits) >= 1  # the exact repeat at least, across processes
    assert {line.split("]")[0] for line in misses}.isdisjoint({line.split("]")[0] for line in hits})
