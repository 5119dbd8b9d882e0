"""``benchmarks/gateway.py --quick`` runs end to end and its JSON is complete and self-consistent.

No timing threshold is asserted (this machine is shared): only that every variant was measured,
that every lever acted on every measured request, that nothing failed, and that the derived
numbers are what they say (added = gateway - direct).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"off", "off_history", "cache", "cache_hit", "layout", "compaction", "rules", "all"}
THROUGHPUT = {"stub_non_streaming", "stub_streaming", "gateway_non_streaming", "gateway_streaming"}


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_quick_run_measures_every_variant(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn")
    pytest.importorskip("httpx")
    pytest.importorskip("pydantic_settings")
    out = tmp_path / "gateway.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gateway.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    data = json.loads(out.read_text())
    assert set(data) >= {"overhead", "throughput", "config", "pass", "targets", "python_speed_ref_us"}

    cfg = data["config"]
    assert data["quick"] is True
    assert _positive(cfg["rate_rps"]) and cfg["client_offered_rps"] == 2 * cfg["rate_rps"]
    assert cfg["requests_per_side_per_variant"] > 0 and _positive(cfg["cpu_count"])
    assert set(cfg["variants"]) == VARIANTS
    assert 0 < cfg["rate_share_of_gateway_capacity"] < 1  # the rate is below saturation

    assert set(data["overhead"]) == VARIANTS
    n = cfg["requests_per_side_per_variant"]
    for name, o in data["overhead"].items():
        assert o["requests"] == n, name
        assert o["errors"] == {"direct": 0, "gateway": 0, "other": 0}, (name, o["error_samples"])
        for side in ("direct", "gateway"):
            s = o[side]
            assert all(_positive(s[k]) for k in ("p50_ms", "p99_ms", "mean_ms", "max_ms")), (name, side, s)
            assert s["p50_ms"] <= s["p99_ms"] <= s["max_ms"], (name, side, s)
        assert o["added_p50_ms"] == pytest.approx(o["gateway"]["p50_ms"] - o["direct"]["p50_ms"])
        assert o["added_p99_ms"] == pytest.approx(o["gateway"]["p99_ms"] - o["direct"]["p99_ms"])
        checks = o["checks"]
        exp = checks["expected"]
        assert checks["levers_acted"], (name, checks)
        assert checks["cache"] == {exp["cache"]: n} and checks["route"] == {exp["route"]: n}, (name, checks)
        assert checks["answers_ok"] == n, (name, checks)
        assert checks["tokens_saved_requests"] == (n if exp["tokens_saved"] else 0), (name, checks)
        if exp["route"] != "cache":  # a hit never reaches the upstream
            assert checks["upstream_body_changed"] is exp["upstream_changed"], (name, checks)
    ov = data["overhead"]
    assert ov["off"]["checks"]["cache"] == {"bypass": n}
    assert ov["cache"]["checks"]["cache"] == {"miss": n} and ov["cache_hit"]["checks"]["cache"] == {"hit": n}
    assert ov["rules"]["checks"]["route"] == {"stub_b": n}
    for name in ("layout", "compaction", "all"):
        assert ov[name]["checks"]["upstream_body_changed"] is True, name

    assert set(data["throughput"]) == THROUGHPUT
    for name, t in data["throughput"].items():
        assert t["stream"] is not name.endswith("non_streaming"), name
        assert t["errors"] == 0, (name, t["error_samples"])
        assert set(t["by_concurrency"]) == {str(k) for k in cfg["throughput_concurrency"]}, name
        for run in t["by_concurrency"].values():
            assert run["errors"] == 0 and run["requests"] > 0 and _positive(run["seconds"]), name
            assert run["rps"] == pytest.approx(run["requests"] / run["seconds"]), name
            assert run["rps"] <= t["rps"], name
        assert t["rps"] == t["by_concurrency"][str(t["concurrency"])]["rps"], name
        if name.startswith("gateway"):
            assert _positive(t["gateway_cpu_ms_per_request"]), name
    assert cfg["rate_share_of_gateway_capacity"] == pytest.approx(
        cfg["rate_rps"] / data["throughput"]["gateway_non_streaming"]["rps"]
    )

    assert data["gateway_log"]["problem_lines"] == 0, data["gateway_log"]["tail"]
    assert set(data["pass"]) == {"off_added_p50_le_2ms", "off_added_p99_le_10ms"}
    assert all(isinstance(v, bool) for v in data["pass"].values())
    assert data["pass"]["off_added_p50_le_2ms"] == (
        ov["off"]["added_p50_ms"] <= data["targets"]["added_p50_ms_max"]
    )
    assert data["pass"]["off_added_p99_le_10ms"] == (
        ov["off"]["added_p99_ms"] <= data["targets"]["added_p99_ms_max"]
    )
    assert "added p50" in proc.stdout and "req/s" in proc.stdout
