"""benchmarks/compaction.py runs in --quick mode and writes the JSON shape the issue names."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "compaction.py"
DATA = ROOT.parent / "shared" / "datasets"


PEERS = (
    "llamaindex-SentenceEmbeddingOptimizer-defaults",
    "topk-chunks-embedding",
    "topk-chunks-bm25",
    "headroom-compress",
    "headroom-TextCrusher",
    "distil-compress_messages",
    "distil-compress_messages-verbatim",
    "longllmlingua",
    "llmlingua-2",
)
# methods that take no target ratio; LlamaIndex's context window takes it but overshoots by design
OWN_RATIO = {"headroom-compress", "distil-compress_messages", "distil-compress_messages-verbatim"}
OVERSHOOTS = {"llamaindex-SentenceEmbeddingOptimizer-defaults"}


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (DATA / "compaction").exists(), reason="shared datasets not present")
def test_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "compaction.json"
    base = ("tokenlean-lexical", "truncate-recent", "langchain-trim_messages", "random-drop")
    methods = ",".join(base + PEERS)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--limit", "6", "--methods", methods, "--json", str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    body = json.loads(out.read_text())
    # every method has a row or a stated reason, never a silent skip
    assert set(body["methods"]) | set(body["not_run"]) == set(methods.split(","))
    assert not set(body["methods"]) & set(body["not_run"])
    assert all(isinstance(r, str) and r for r in body["not_run"].values())
    for name in ("longllmlingua", "llmlingua-2"):  # no model hub here: reason given, figures quoted
        assert "Hugging Face" in body["not_run"][name]
    assert body["published"]["measured_here"] is False
    for name in (*base, "topk-chunks-bm25"):
        assert name in body["methods"]  # no optional dependency
    for name in PEERS:
        if name in body["not_run"]:
            assert "not installed" in body["not_run"][name] or "Hugging Face" in body["not_run"][name]
    for name, res in body["methods"].items():
        assert res["n"] == 6 and 0 <= res["errors"] <= 6
        assert 0.0 <= res["answer_retention"] <= 1.0 and res["tokens_per_s"] > 0
        assert -1.0 < res["reduction"] < 1.0
        if name not in OWN_RATIO | OVERSHOOTS:
            assert 0.8 < res["reduction"] < 1.0, name  # held to the 90% cut
        assert res["follows_cut"] is (name not in OWN_RATIO)
        for key in ("verbatim_lines", "verbatim_sentences"):
            assert res[key] is None or 0.0 <= res[key] <= 1.0
        assert set(res["by_cut"]) == {"0.9"}
        assert res["by_cut"]["0.9"]["answer_retention"] == res["answer_retention"]
    assert body["methods"]["langchain-trim_messages"]["verbatim_lines"] == 1.0  # whole passages
    assert (
        body["methods"]["tokenlean-lexical"]["answer_retention"]
        >= body["methods"]["random-drop"]["answer_retention"]
    )
    assert "tokenlean-lexical" in proc.stdout  # the table
    assert "not run: llmlingua-2" in proc.stdout


def test_missing_peer_is_reported_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    bench = _load_module("compaction_bench_under_test", SCRIPT)
    qa = tmp_path / "qa.jsonl"
    row = {
        "context": "Paris is the capital of France. The Eiffel Tower was completed in 1889. " * 2,
        "question": "When was the Eiffel Tower completed?",
        "answers": ["1889"],
    }
    qa.write_text(json.dumps(row))
    out = tmp_path / "out.json"
    monkeypatch.setitem(sys.modules, "distil", None)  # import distil -> ImportError
    monkeypatch.setenv("COLUMNS", "200")
    args = ["--qa", str(qa), "--ratio", "0.5", "--json", str(out)]
    assert bench.main([*args, "--methods", "topk-chunks-bm25,distil-compress_messages"]) == 0
    body = json.loads(out.read_text())
    assert list(body["methods"]) == ["topk-chunks-bm25"]
    assert "distil-llm is not installed" in body["not_run"]["distil-compress_messages"]
    assert "distil-llm is not installed" in capsys.readouterr().err


def test_peer_helpers() -> None:
    peers = _load_module("compaction_peers", ROOT / "benchmarks" / "compaction_peers.py")
    docs = ["the cat sat on the mat", "dogs chase cats in the park", "the eiffel tower is in paris"]
    scores = peers.bm25_scores("where is the eiffel tower", docs)
    assert max(range(3), key=scores.__getitem__) == 2 and min(scores) >= 0.0
    text = "".join(f"Document [{i}](Title: T{i}) Passage {i} says fact {i}.\n" for i in range(1, 7))
    pieces = peers.chunks(text, max_tokens=200)
    assert "".join(p for p, _ in pieces) == text and len(pieces) == 6  # passages tile the input
    kept = peers._fill(pieces, [0, 5, 0, 9, 0, 0], budget=pieces[1][1] + pieces[3][1])
    assert kept == pieces[1][0] + pieces[3][0]  # best first, within budget, in input order
    msgs = peers.tool_messages("ctx", "q?")
    assert msgs[0]["content"] == "q?" and msgs[-1] == {
        "role": "tool",
        "tool_call_id": "call_0",
        "content": "ctx",
    }
    with pytest.raises(peers.NotRun, match="not installed"):
        peers._require("no_such_module_for_tokenlean_tests", "no-such-package")


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
