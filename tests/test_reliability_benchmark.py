"""``benchmarks/reliability.py --quick`` runs end to end and every zero it promises is a zero."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_keeps_its_promises(
    tmp_path: Path, static_embedder: object, redis_stack: str, local_model_file: Path
) -> None:
    pytest.importorskip("langchain")
    pytest.importorskip("langchain_openai")
    out = tmp_path / "reliability.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "reliability.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert set(data) >= {"faults", "load", "fuzz", "isolation", "soak", "not_measured"}
    kill9 = data["faults"]["sqlite_kill9"]
    assert kill9["acknowledged"] >= 2 and kill9["lost"] == 0
    redis_k9, restart = data["faults"]["redis_kill9"], data["faults"]["redis_restart"]
    assert "skipped" not in redis_k9, redis_k9  # the redis_stack fixture proved Redis Stack starts here
    assert redis_k9["acknowledged"] >= 2 and redis_k9["lost"] == 0
    assert (
        restart["calls_while_down"] > 0
        and restart["failed_user_calls"] == 0
        and restart["wrong_answers"] == 0
    )
    assert restart["recovery_s"] is not None  # the cache served again after the restart
    shared = data["faults"]["sqlite_8_processes"]
    assert shared["acknowledged"] == 8 * 150
    assert shared["missing_from_file"] == 0 and shared["unseen_by_another_process"] == 0
    rk = data["faults"]["replica_killed"]
    assert "skipped" not in rk, rk  # the local_model_file fixture proved llama.cpp can run here
    assert len(rk["kills"]) == 1 and rk["workers_stuck"] == 0
    assert rk["non_streaming"]["calls"] > 0 and rk["non_streaming"]["failed"] == 0
    st = rk["streaming"]
    assert st["calls"] > 0 and st["failed_before_token"] == 0 and st["silently_truncated"] == 0
    assert st["ok"] + st["interrupted"] + st["failed_after_token_other"] == st["calls"]
    # load: a correctness check, not a timing one (no latency is asserted)
    ld = data["load"]
    assert ld["requests"]["bare"] > 0 and ld["requests"]["bare"] == ld["requests"]["stack"]
    assert ld["errors"] == {"bare": 0, "stack": 0}, ld["error_samples"]
    assert ld["tokenlean_warnings"]["count"] == 0, ld["tokenlean_warnings"]
    assert ld["metered"]["calls"] == ld["requests"]["stack"]  # every stack call was metered
    assert ld["cache_hits"] == ld["metered"]["cache_hits"]
    assert ld["compacted_requests"] == ld["kinds"]["history"] > 0
    assert 0 < ld["rate_rps"] < ld["saturation_rps"]
    fz = data["fuzz"]
    assert fz["calls"] >= 600 and fz["entry_points"] >= 35
    # every entry point was actually driven, not only skipped
    assert all(v["calls"] > 0 for v in fz["by_entry_point"].values()), fz["by_entry_point"]
    assert fz["untyped_exceptions"] == 0, fz["examples"]
    assert fz["past_deadline"] == 0, fz["by_entry_point"]
    assert data["not_measured"] == []
    iso = data["isolation"]
    assert iso["semantic_tier"] and iso["semantic_hits"] > 0  # the semantic tier was exercised
    assert iso["hits"] > 0 and iso["cross_tenant_hits"] == 0 and iso["wrong_question_hits"] == 0
    soak = data["soak"]["metering"]
    assert (
        soak["summary_calls"] == soak["calls"] and soak["ledger_records_kept"] <= 10_000
    )  # bounded, all counted
    assert data["soak"]["cache"]["entries"] > 0 and data["soak"]["cache"]["rss_end_mb"] > 0
    assert "lost 0" in proc.stdout
