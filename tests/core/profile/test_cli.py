"""``tokenlean profile``: ranked table on stdout, HTML and JSON reports, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenlean.cli import main

SWE = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "agent_traces" / "swe-agent"


def test_profile_swe_agent_traces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not SWE.is_dir():
        pytest.skip(f"datasets not found at {SWE}")
    files = [str(p) for p in sorted(SWE.glob("*.traj"))[:3]]
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."my-model"]\ninput = "3.00"\ncached_input = "0.30"\noutput = "15.00"\n')
    rc = main(
        [
            "profile",
            *files,
            "--html",
            str(html),
            "--json",
            str(js),
            "--prices",
            str(prices),
            "--model",
            "my-model",
            "--lever",
            "prompt-cache",
            "--lever",
            "compaction",
            "--lever",
            "generate-less",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "tokenlean profile" in out and "Pull first" in out
    data = json.loads(js.read_text())
    assert [r["lever"] for r in data["recommendations"]] and data["priced_as"] == "my-model"
    assert {r["lever"] for r in data["recommendations"]} == {"prompt-cache", "compaction", "generate-less"}
    costs = [float(r["cost_saved"]) for r in data["recommendations"] if r["applicable"]]
    assert costs == sorted(costs, reverse=True), "recommendations are ranked by money saved"
    assert "<svg" in html.read_text()


def test_profile_bad_trace_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": 1}\n{"y": 2}\n')
    assert main(["profile", str(bad)]) == 2
    assert "bad.jsonl" in capsys.readouterr().err
