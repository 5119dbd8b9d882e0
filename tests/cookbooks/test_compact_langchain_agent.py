"""cookbooks/compact_langchain_agent runs end to end against the local model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cookbooks" / "compact_langchain_agent" / "main.py"


@pytest.mark.integration
def test_compact_langchain_agent(local_llm: Any, tmp_path: Path) -> None:
    pytest.importorskip("langchain")
    env = {
        **os.environ,
        "TOKENLEAN_BASE_URL": local_llm.base_url,
        "TOKENLEAN_MODEL": local_llm.model,
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "history tokens:" in out and "fewer" in out
    assert "E4012" in out and "/var/spool/jobs" in out  # protected patterns survived the cut
    assert "stored history still complete: True" in out
    assert "answer:" in out
