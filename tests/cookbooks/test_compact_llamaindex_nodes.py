"""cookbooks/compact_llamaindex_nodes runs end to end against the local model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.integration
def test_compact_llamaindex_nodes(run_cookbook: Any, tmp_path: Path) -> None:
    pytest.importorskip("llama_index.core")
    pytest.importorskip("sentence_transformers")
    proc = run_cookbook("compact_llamaindex_nodes", cwd=tmp_path)
    m = re.search(r"retrieved context tokens: (\d+) -> (\d+)", proc.stdout)
    assert m and int(m.group(2)) < int(m.group(1))
    assert "330 metres" in proc.stdout  # the answering sentence survived
    assert "answer:" in proc.stdout
