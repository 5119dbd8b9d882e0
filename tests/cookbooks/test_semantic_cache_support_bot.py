"""The support-bot cookbook runs end to end against the local model and serves repeats from the cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_support_bot_cookbook(local_llm: object, embedder: object) -> None:
    env = {**os.environ, "TOKENLEAN_BASE_URL": local_llm.base_url, "TOKENLEAN_MODEL": local_llm.model}  # type: ignore[attr-defined]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cookbooks" / "semantic_cache_support_bot" / "main.py")],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "HIT (exact" in out and "HIT (semantic" in out
    assert "miss (negation)" in out and "miss (numbers)" in out
