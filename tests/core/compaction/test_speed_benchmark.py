"""benchmarks/compaction_speed.py --quick: every block present and in range (no figures asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "datasets"


@pytest.mark.skipif(not (DATA / "compaction").exists(), reason="shared datasets not present")
def test_speed_benchmark_quick(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import compaction_speed

    out = tmp_path / "speed.json"
    assert compaction_speed.main(["--quick", "--json", str(out), "--data", str(DATA)]) == 0
    speed = json.loads(out.read_text())["speed"]
    assert speed["lexical"]["tokens_per_s"] > 0 and speed["auto"]["seconds"] > 0
    assert speed["auto"]["preselected"] and speed["auto"]["lexical_fallbacks"] == 0
    for route in ("minilm", "static", "lexical"):
        inc = speed["incremental"][route]
        assert inc["first_call"]["tokens"] > 0 and inc["steady_tokens_per_s_median"] > 0
    for kept in speed["retention"]["routes"].values():
        for part in ("long_documents", "nq_test"):
            assert set(kept[part]) == {"0.9", "0.95"} and all(0 <= v <= 1 for v in kept[part].values())
