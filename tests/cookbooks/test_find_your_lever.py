"""cookbooks/find_your_lever records a week against the local model and ranks the levers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SWE = ROOT.parent / "shared" / "datasets" / "agent_traces" / "swe-agent"


@pytest.mark.integration
def test_find_your_lever(run_cookbook: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = tmp_path / "result.json"
    traces = [str(p) for p in sorted(SWE.glob("*.traj"))[:4]] if SWE.is_dir() else []
    proc = run_cookbook(
        "find_your_lever",
        *("--out", str(out), "--json", str(result), *traces),
        cwd=tmp_path,
        timeout=500,
        env={"COLUMNS": "160"},
    )
    assert proc.stdout.count("Pull first") == (2 if traces else 1)
    data = json.loads(result.read_text())
    week = data["week"]
    assert week["summary"]["calls"] == 17 and week["summary"]["tasks"] == 17
    assert week["summary"]["ttft_p50_s"] is not None  # streamed: real TTFT
    recs = {r["lever"]: r for r in week["recommendations"]}
    # The week repeats questions word for word: the cache must find those hits (and no more
    # than the repeats and paraphrases there are).
    cache = recs["semantic-cache"]
    assert (
        cache["applicable"] and 4 <= cache["metrics"]["exact_hits"] + cache["metrics"]["semantic_hits"] < 17
    )
    # Short prompts are below the providers' 1024-token caching minimum.
    assert not recs["prompt-cache"]["applicable"]
    saved = [float(r["cost_saved"]) for r in week["recommendations"] if r["applicable"]]
    assert saved == sorted(saved, reverse=True)
    assert (out / "week.html").read_text().count("<svg") == 3
    if traces:
        agent_best = data["agents"]["best"]
        assert agent_best in {"prompt-cache", "compaction"}
