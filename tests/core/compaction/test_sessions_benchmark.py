"""benchmarks/compaction_sessions.py: the cache-pricing rules, the evidence extractor, and a --quick run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "compaction_sessions.py"
DATA = ROOT.parent / "shared" / "datasets"
TRACES = DATA / "agent_traces" / "swe-agent"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compaction_sessions_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_openai_caches_from_1024_tokens_in_128_token_steps(bench: ModuleType) -> None:
    assert [bench.openai_cached(n) for n in (0, 1023, 1024, 1151, 1152, 5000)] == [
        0,
        0,
        1024,
        1024,
        1152,
        1024 + 31 * 128,
    ]


def _segs(*sizes_and_names: tuple[str, int]) -> list[tuple[bytes, list[int], str]]:
    return [(name.encode().ljust(16, b"."), [hash(name) % 997] * n, name) for name, n in sizes_and_names]


def test_ledger_reads_only_prefixes_an_earlier_call_wrote(bench: ModuleType) -> None:
    ledger = bench.CacheLedger()
    first = _segs(("sys", 1500), ("task", 500))
    ledger.add(first, [0, 1])  # breakpoints after the system prompt and the last message
    assert (ledger.an_read, ledger.an_write, ledger.oa_cached) == (0, 2000, 0)
    # the next call extends the conversation: everything written before is read
    second = _segs(("sys", 1500), ("task", 500), ("act", 100), ("obs", 400))
    ledger.add(second, [0, 3])
    assert (ledger.an_read, ledger.an_write) == (2000, 2000 + 500)
    assert ledger.oa_cached == 1024 + 7 * 128  # common prefix 2000 tokens, in 128-token steps
    # a call that rewrites the task message reads only the system prompt's breakpoint
    third = _segs(("sys", 1500), ("task-compacted", 250), ("act", 100), ("obs", 400))
    ledger.add(third, [0, 3])
    assert ledger.an_read == 2000 + 1500
    assert ledger.an_write == 2500 + 750


def test_evidence_extractor_finds_paths_lines_identifiers_and_errors(bench: ModuleType) -> None:
    action = (
        "The traceback points at `fields.py` line 1474, where TimeDelta rounds. Let's open it.\n"
        "open src/marshmallow/fields.py 1474\n"
        "It raised ValueError from _serialize_value, see ./tests/test_fields.py:88"
    )
    found = bench.extract_evidence(action)
    assert found["src/marshmallow/fields.py"] == "path"
    assert found["fields.py"] == "path"
    assert found["tests/test_fields.py"] == "path" and found["test_fields.py"] == "path"
    assert found["1474"] == "line" and found["88"] == "line"
    assert found["TimeDelta"] == "identifier" and found["_serialize_value"] == "identifier"
    assert found["ValueError"] == "error"
    assert "traceback" not in found and "open" not in found  # plain words are not evidence
    # a line number is evidence only where an observation shows that line
    match = bench.evidence_matcher("1474", "line")
    assert match("1473:    x = 1\n1474:    return round(x)\n")
    assert not match("the file has 1474 lines")


def test_verbatim_counts_kept_pieces_and_skips_marker_lines(bench: ModuleType) -> None:
    src = "alpha line\nbeta line. And more.\ngamma line"
    kept = "alpha line\n[… 12 tokens omitted · om-abc …]\nbeta line. [… 3 tokens omitted · om-def …]"
    assert bench.verbatim_lines(src, kept) == (2, 1, 2)
    rewritten = "alpha line\nBETA, summarised"
    assert bench.verbatim_lines(src, rewritten) == (1, 1, 2)


@pytest.mark.slow
@pytest.mark.skipif(not TRACES.is_dir(), reason="shared datasets not present")
def test_quick_run_writes_the_sessions_json(tmp_path: Path, bench: ModuleType) -> None:
    out = tmp_path / "sessions.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    body = json.loads(out.read_text())["sessions"]
    split = body["split"]
    assert len(split["tune"]) == len(split["report"]) == 2
    assert not set(split["tune"]) & set(split["report"])
    names = sorted(p.name for p in TRACES.glob("*.traj"))
    assert set(split["tune"]) <= set(names[:10]) and set(split["report"]) <= set(names[10:])
    prices = body["prices"]["usd_per_million_input_tokens"]
    assert set(prices) == {"gpt-4o", "claude-sonnet-4-5"}
    assert set(body["methods"]) == set(bench.METHODS)
    for name, res in body["methods"].items():
        if "unavailable" in res:  # a peer that is not installed says so instead of a row
            assert name not in ("none", "tokenlean-naive", "tokenlean-incremental"), res
            continue
        for part in ("tune", "report"):
            r = res[part]
            assert r["sessions"] == 2 and r["calls"] > 0 and r["errors"] == 0
            assert r["openai"]["cost_per_session_usd"] > 0 and r["anthropic"]["cost_per_session_usd"] > 0
            assert r["openai"]["vs_none"] > 0 and r["anthropic"]["vs_none"] > 0
            kept = r["action_evidence"]["kept"]
            assert kept is None or 0.0 <= kept <= 1.0
            assert 0.0 < r["verbatim"]["lines"] <= 1.0
    for part in ("tune", "report"):
        none = body["methods"]["none"][part]
        assert none["openai"]["vs_none"] == none["anthropic"]["vs_none"] == 1.0
        assert none["reduction"] == 0.0 and none["prefix_rewrites"]["calls"] == 0.0
        for name in ("tokenlean-naive", "tokenlean-incremental"):
            row = body["methods"][name][part]
            assert row["verbatim"]["lines"] == 1.0, (name, part, row["verbatim"])
            assert row["tokens_per_s"] > 0
    assert "tokenlean-incremental" in proc.stdout  # the table


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(tmp_path)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "dataset not found" in proc.stderr and "--data" in proc.stderr
