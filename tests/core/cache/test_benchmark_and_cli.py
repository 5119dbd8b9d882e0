"""``benchmarks/semantic_cache.py --quick`` runs end to end, and the ``tokenlean cache`` CLI works."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "datasets"


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "semantic_cache").exists(), reason="shared datasets folder not present")
def test_semantic_cache_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "sc.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "semantic_cache.py"), "--quick", "--no-redis", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    ours = result["systems"]["tokenlean"]
    assert set(ours["true_hit_rate_at_false_hit"]) == {"0.005", "0.01", "0.02"}
    assert 0 <= ours["true_hit_rate_at_false_hit"]["0.01"] <= 1
    assert "gptcache" in result["systems"] and "lookup_ms_p50" in ours
    assert result["adversarial"]["from_to"]["tokenlean_false_hit_rate"] == 0.0
    assert result["latency"]["scale"]["embedded"]


def test_cli_calibrate_stats_and_bad_input(
    tmp_path: Path, embedder: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from tokenlean.cache import PairScorer, SemanticCache
    from tokenlean.cli import main

    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["question1", "question2", "is_duplicate"])
        for t in [
            "password",
            "invoice",
            "account",
            "order",
            "refund",
            "email",
            "plan",
            "card",
            "team",
            "device",
            "login",
            "report",
        ]:
            w.writerow([f"How do I change my {t}?", f"How can I change my {t}?", 1])
            w.writerow([f"How do I change my {t}?", f"How do I delete my {t}?", 0])
            w.writerow([f"How do I change my {t}?", f"Why can't I change my {t}?", 0])
    out = tmp_path / "scorer.json"
    assert main(["cache", "calibrate", str(pairs), "--rate", "0.1", "--out", str(out)]) == 0
    scorer = PairScorer.load(str(out))
    assert scorer.max_false_hit_rate == 0.1
    db = tmp_path / "c.db"
    with SemanticCache(db, embedder=embedder, scorer=scorer) as cache:
        cache.store("How do I change my password?", "Settings > Security.")
    capsys.readouterr()
    assert main(["cache", "stats", str(db)]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 1
    assert main(["cache", "stats", str(tmp_path / "missing.db")]) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["cache", "calibrate", str(bad)]) == 1
