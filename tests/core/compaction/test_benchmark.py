"""benchmarks/compaction.py runs in --quick mode and writes the JSON shape the issue names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "compaction.py"
DATA = ROOT.parent / "shared" / "datasets"


@pytest.mark.skipif(not (DATA / "compaction").exists(), reason="shared datasets not present")
def test_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "compaction.json"
    methods = "tokenlean-lexical,truncate-recent,langchain-trim_messages,random-drop"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--limit", "6", "--methods", methods, "--json", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    body = json.loads(out.read_text())
    assert set(body["methods"]) == set(methods.split(","))
    for res in body["methods"].values():
        assert 0.8 < res["reduction"] < 1.0  # every method was held to the 90% cut
        assert 0.0 <= res["answer_retention"] <= 1.0 and res["tokens_per_s"] > 0
    assert (
        body["methods"]["tokenlean-lexical"]["answer_retention"]
        >= body["methods"]["random-drop"]["answer_retention"]
    )
    assert "tokenlean-lexical" in proc.stdout  # the table


def test_benchmark_qa_file_and_missing_data(tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    rows = [
        {
            "context": "Paris is the capital of France. " * 3
            + "The Eiffel Tower was completed in 1889. "
            + "Bananas are yellow. " * 8,
            "question": "When was the Eiffel Tower completed?",
            "answers": ["1889"],
        }
    ] * 3
    qa.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "qa.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--qa",
            str(qa),
            "--ratio",
            "0.5",
            "--methods",
            "tokenlean-lexical",
            "--json",
            str(out),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text())["methods"]["tokenlean-lexical"]["answer_retention"] == 1.0
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--data" in proc.stderr
