"""cookbooks/compact_langchain_agent runs end to end against the local model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.mark.integration
def test_compact_langchain_agent(run_cookbook: Any, tmp_path: Path) -> None:
    pytest.importorskip("langchain")
    proc = run_cookbook("compact_langchain_agent", cwd=tmp_path)
    out = proc.stdout
    assert "history tokens:" in out and "fewer" in out
    assert "E4012" in out and "/var/spool/jobs" in out  # protected patterns survived the cut
    assert "stored history still complete: True" in out
    assert "answer:" in out
