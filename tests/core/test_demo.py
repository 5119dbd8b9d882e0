"""``tokenlean demo --quick`` end to end: two local model servers, two runs, a report."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_quick_prints_before_after_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], local_model_file: Path
) -> None:
    from tokenlean.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    for label in ("baseline vs every lever on", "tokens per task", "cost per task", "TTFT p50", "tokens/s",
                  "cache hit rate", "routing mix", "same answers", "Report:"):  # fmt: skip
        assert label in stdout, label
    assert str((out / "report.html").resolve()) in stdout.replace("\n", "")

    result = json.loads((out / "demo_result.json").read_text())
    total = result["measured"]["total"]
    assert total["tokens_after"] < total["tokens_before"]
    assert Decimal(total["cost_after"]) < Decimal(total["cost_before"])
    assert total["cache_hits"] >= 1  # the support questions repeat
    assert total["routes_after"].get("weak", 0) >= 1
    assert {t["task"] for t in result["measured"]["tasks"]} == {
        "agent: fix failing test",
        "rag: product docs",
        "support: repeated questions",
    }
    assert result["profile"]["recommendations"], "the baseline trace was profiled"

    html = (out / "report.html").read_text()
    assert 'id="measured"' in html and html.count("<svg") == 3
    for name in ("baseline_trace.jsonl", "baseline_ledger.jsonl", "levers_ledger.jsonl"):
        assert (out / name).stat().st_size > 0
    # The exported baseline trace is itself a profiler input.
    from tokenlean.profile import read_trace

    assert len(read_trace(out / "baseline_trace.jsonl")) == total["calls"]
