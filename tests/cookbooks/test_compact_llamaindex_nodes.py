"""cookbooks/compact_llamaindex_nodes runs end to end against the local model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cookbooks" / "compact_llamaindex_nodes" / "main.py"


@pytest.mark.integration
def test_compact_llamaindex_nodes(local_llm: Any, tmp_path: Path) -> None:
    pytest.importorskip("llama_index.core")
    pytest.importorskip("sentence_transformers")
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
    m = re.search(r"retrieved context tokens: (\d+) -> (\d+)", proc.stdout)
    assert m and int(m.group(2)) < int(m.group(1))
    assert "330 metres" in proc.stdout  # the answering sentence survived
    assert "answer:" in proc.stdout
