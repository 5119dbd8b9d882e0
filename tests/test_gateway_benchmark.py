"""``benchmarks/gateway.py --quick`` runs end to end and its JSON is complete and self-consistent.

No timing threshold is asserted (this machine is shared): only that every variant was measured,
that every lever acted on every measured request, that nothing failed, and that the derived
numbers are what they say (added = gateway - direct). The ``peers`` block: every peer has its rows
or a ``not_run`` reason, and its figures are consistent (ratios are the quotients they name).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"off", "off_history", "cache", "cache_hit", "layout", "compaction", "rules", "all"}
THROUGHPUT = {"stub_non_streaming", "stub_streaming", "gateway_non_streaming", "gateway_streaming"}
PEER_SYSTEMS = {"tokenlean", "litellm", "headroom", "headroom-token"}


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
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    data = json.loads(out.read_text())
    assert set(data) >= {
        "overhead",
        "throughput",
        "config",
        "pass",
        "targets",
        "python_speed_ref_us",
        "peers",
    }

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
    _check_peers(data["peers"])
    assert "Peers: added latency" in proc.stdout


def _approx_ratio(ratio: float | None, a: float | None, b: float | None) -> bool:
    if a is None or b is None or not b > 0:
        return ratio is None
    return ratio == pytest.approx(a / b)


def _check_peers(peers: dict[str, Any]) -> None:
    """Every peer: its rows, or not_run with the reason; the figures are what they say."""
    assert set(peers) >= {"config", "systems", "replay", "direct", "wall_s"}
    cfg, systems, replay = peers["config"], peers["systems"], peers["replay"]
    n = cfg["requests_per_side"]
    assert n > 0 and _positive(cfg["rate_rps"])
    assert set(systems) == PEER_SYSTEMS
    assert "not_run" not in systems["tokenlean"]  # the reference always runs
    ref = systems["tokenlean"]["latency"]
    ran = [name for name, row in systems.items() if "not_run" not in row]
    for name, row in systems.items():
        assert row["label"] and row["package"] and row["setup"], name
        if "not_run" in row:
            assert isinstance(row["not_run"], str) and row["not_run"].strip(), (name, row)
            assert "latency" not in row and "replay" not in row, name
            continue
        assert row["version"], name
        if name != "headroom-token":  # replay-only
            cap = row["capacity"]
            assert _positive(cap["rps"]) and cap["errors"] == 0, (name, cap["error_samples"])
            assert cap["rate_share"] == pytest.approx(cfg["rate_rps"] / cap["rps"]), name
            assert set(row["latency"]) == {"short", "history"}, name
            for body, r in row["latency"].items():
                assert r["requests"] == n, (name, body)
                assert r["errors"] == {"direct": 0, "via": 0, "other": 0}, (name, body, r["error_samples"])
                for side in ("direct", "via"):
                    s = r[side]
                    assert all(_positive(s[k]) for k in ("p50_ms", "p99_ms", "max_ms")), (name, body, side)
                    assert s["p50_ms"] <= s["p99_ms"] <= s["max_ms"], (name, body, side)
                assert r["added_p50_ms"] == pytest.approx(r["via"]["p50_ms"] - r["direct"]["p50_ms"])
                assert r["added_p99_ms"] == pytest.approx(r["via"]["p99_ms"] - r["direct"]["p99_ms"])
                assert r["checks"]["answers_ok"] == n, (name, body, r["checks"])
                vs = r["vs_tokenlean"]
                assert _approx_ratio(vs["added_p50"], r["added_p50_ms"], ref[body]["added_p50_ms"]), (
                    name,
                    body,
                )
                assert _approx_ratio(vs["added_p99"], r["added_p99_ms"], ref[body]["added_p99_ms"]), (
                    name,
                    body,
                )
                assert _approx_ratio(
                    vs["cpu_per_request"], r["cpu_ms_per_request"], ref[body]["cpu_ms_per_request"]
                ), (name, body)
                if name == "tokenlean":
                    assert r["checks"]["levers_acted"], r["checks"]  # the route really had no lever
                else:
                    assert isinstance(r["checks"]["upstream_fields_changed"], list), (name, body)
        rep = row["replay"]
        if "not_run" in replay:
            assert rep == {"not_run": replay["not_run"]}, name
    if "not_run" in replay:  # no dataset here: the reason names the option
        assert "--data" in replay["not_run"] and peers["direct"] is None
        return
    assert replay["trajectories"] and replay["calls_per_system"] > 0
    direct = peers["direct"]
    rows = {"direct": direct, **{name: systems[name]["replay"] for name in ran}}
    for name, r in rows.items():
        assert r["calls"] == replay["calls_per_system"] and r["sessions"] == len(replay["trajectories"]), name
        assert r["errors"] == 0, (name, r["error_samples"])
        assert r["upstream_requests"] + r["calls_without_upstream_request"] >= r["calls"], name
        assert r["client_tokens"] == direct["client_tokens"], name
        assert r["tokens_sent"] > 0 and r["tokens_sent_vs_direct"] == pytest.approx(
            r["tokens_sent"] / direct["tokens_sent"]
        ), name
        for provider in ("openai", "anthropic"):
            c = r[provider]
            assert _positive(c["cost_usd"]), (name, provider)
            assert c["cost_per_session_usd"] == pytest.approx(c["cost_usd"] / r["sessions"]), (name, provider)
            assert c["vs_direct"] == pytest.approx(c["cost_usd"] / direct[provider]["cost_usd"]), (
                name,
                provider,
            )
        assert set(r["per_session"]) == set(replay["trajectories"]), name
    # the stub received exactly what the client sent when nothing stood between them
    assert direct["tokens_sent"] == direct["client_tokens"] and direct["requests_changed"] == 0
    assert direct["upstream_requests"] == direct["calls"] and direct["fields_changed"] == {}


def _bench() -> ModuleType:
    """benchmarks/gateway.py as a module (its siblings importable, as when it runs)."""
    bench_dir = str(ROOT / "benchmarks")
    if bench_dir not in sys.path:
        sys.path.append(bench_dir)
    if "gateway_benchmark" in sys.modules:
        return sys.modules["gateway_benchmark"]
    spec = importlib.util.spec_from_file_location("gateway_benchmark", ROOT / "benchmarks" / "gateway.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_a_peer_that_cannot_run_is_listed_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _bench()
    missing = bench.Peer("nope", "No such proxy", "tokenlean-no-such-distribution", "defaults")
    monkeypatch.setattr(bench, "PEERS", (missing,))
    started: dict[str, Any] = {}
    ready, info = bench.start_peers(tmp_path, "http://127.0.0.1:9", {}, started)
    assert ready == {} and started == {}  # nothing was started
    assert "not installed" in info["nope"]["not_run"] and info["nope"]["version"] is None
    # a start that fails: the reason is the error line of the peer's output, not the whole log
    exc = RuntimeError(
        "litellm exited with code 1 while starting:\nTraceback (most recent call last):\n  File ...\n"
        "ModuleNotFoundError: Missing dependency No module named 'mcp'. Run `pip install 'litellm[proxy]'`"
    )
    reason = bench._start_error(exc)
    assert reason.startswith("litellm exited with code 1") and "No module named 'mcp'" in reason


def test_replay_without_the_dataset_names_the_option(tmp_path: Path) -> None:
    bench = _bench()
    reason = bench.replay_missing(tmp_path)
    assert reason and "--data" in reason and str(tmp_path) in reason
    assert bench.replay_missing(None) == "no --data given"


def test_stub_log_numbers_what_it_keeps() -> None:
    bench = _bench()
    log = bench._CountedLog(maxlen=3)
    for i in range(5):
        log.append({"body": i})
    assert log.total == 5
    assert [r["seq"] for r in log.since(0)] == [2, 3, 4]  # the first two fell out of the bound
    assert [r["body"] for r in log.since(4)] == [4] and log.since(5) == []
    sent = {"model": "m", "messages": [], "max_tokens": 1, "temperature": 0}
    upstream = {"model": "x", "messages": [], "max_completion_tokens": 1, "temperature": 0}
    assert bench._fields_changed(sent, upstream) == ["+max_completion_tokens", "-max_tokens", "~model"]
