"""The support-bot cookbook runs end to end against the local model and serves repeats from the cache."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.integration
def test_support_bot_cookbook(run_cookbook: Any, embedder: object) -> None:
    proc = run_cookbook("semantic_cache_support_bot", timeout=300)
    out = proc.stdout
    assert "HIT (exact" in out and "HIT (semantic" in out
    assert "miss (negation)" in out and "miss (numbers)" in out
