"""``benchmarks/layout.py --quick`` runs and reports full recall on the planted corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_layout_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "layout.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "layout.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    det = result["detection"]
    assert det["planted"] >= 20 and det["recall"] == 1.0 and det["precision"] == 1.0
    corpus = result["cacheable_prefix"]["planted_corpus"]
    assert corpus["cacheable_after"] > corpus["cacheable_before"]
    assert "breaker detection" in proc.stdout
