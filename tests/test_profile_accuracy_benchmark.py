"""``benchmarks/profile_accuracy.py --quick``: the JSON has its shape and its errors add up.

Sanity only: the 10% target is the full run's finding (docs/profiler-accuracy.md), not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "profile_accuracy.py"
DATA = ROOT.parent / "shared" / "datasets"
SWE = DATA / "agent_traces" / "swe-agent"


def _check_row(row: dict[str, object], where: str) -> None:
    est, app = row["estimated"], row["applied"]
    assert isinstance(est, float | int) and isinstance(app, float | int), where
    assert 0.0 <= est <= 1.0 and 0.0 <= app <= 1.0, (where, est, app)
    assert row["abs_error"] == pytest.approx(abs(est - app), abs=2e-6), where
    rel = row["rel_error"]
    if app:
        assert rel == pytest.approx(abs(est - app) / app, rel=1e-3, abs=2e-6), where
        assert row["within_10pct"] == (rel <= 0.10 + 1e-9), where
    elif est:
        assert rel is None and row["within_10pct"] is False, where
    else:
        assert rel == 0.0 and row["within_10pct"] is True, where


@pytest.mark.slow
def test_quick_run_shape_and_consistency(tmp_path: Path) -> None:
    if not SWE.is_dir():
        pytest.skip(f"datasets not found at {SWE}")
    out = tmp_path / "accuracy.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert set(data) >= {"levers", "not_applicable", "traces", "split"}
    assert data["traces"] == 3 and data["quick"] is True
    assert isinstance(data["split"], str) and data["split"]
    # every lever the profiler estimates is either scored or explained
    assert set(data["levers"]) | set(data["not_applicable"]) == set(data["profiler_levers"])
    assert not set(data["levers"]) & set(data["not_applicable"])
    assert set(data["levers"]) == {"compaction", "prompt-cache", "semantic-cache"}
    for name, reason in data["not_applicable"].items():
        assert isinstance(reason, str) and len(reason) > 40, name
    for name, lever in data["levers"].items():
        assert lever["unit"] in ("tokens", "cost"), name
        assert lever["how_applied"], name
        _check_row(lever, name)
        assert len(lever["per_trace"]) == data["traces"], name
        for row in lever["per_trace"]:
            _check_row(row, f"{name}/{row['trace']}")
        assert lever["traces_within_10pct"] == sum(r["within_10pct"] for r in lever["per_trace"])
    # compaction with every call compacted is the application itself: no error left
    assert data["levers"]["compaction"]["by_sample_size"]["None"]["abs_error"] == pytest.approx(0, abs=1e-4)
    assert "tokens_saved_applied" in data["levers"]["compaction"]["per_trace"][0]


def test_missing_data_says_how_to_fix_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "dataset not found" in proc.stderr and "--data" in proc.stderr
