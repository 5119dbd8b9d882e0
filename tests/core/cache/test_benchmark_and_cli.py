"""``benchmarks/semantic_cache.py --quick`` runs end to end, and the ``tokenlean cache`` CLI works."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "datasets"


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "semantic_cache").exists(), reason="shared datasets folder not present")
def test_semantic_cache_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "sc.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "semantic_cache.py"), "--quick", "--no-redis", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    ours = result["systems"]["tokenlean"]
    assert set(ours["true_hit_rate_at_false_hit"]) == {"0.005", "0.01", "0.02"}
    assert 0 <= ours["true_hit_rate_at_false_hit"]["0.01"] <= 1
    assert _rate(ours["lookup_ms_p50"], upper=None) and _rate(ours["default"]["true_hit_rate"])
    # peers at their documented defaults and at their best threshold, scored on the same pairs
    cosine = result["systems"]["cosine (MiniLM)"]
    assert all(_rate(v) for v in cosine["true_hit_rate_at_false_hit"].values())
    gpt = result["systems"]["gptcache"]
    assert gpt["default"]["threshold"] > 0 and _rate(gpt["default"]["cosine_equivalent"])
    assert _rate(gpt["default"]["true_hit_rate"]) and _rate(gpt["default"]["false_hit_rate"])
    assert _rate(gpt["lookup_ms_p50"], upper=None) and _rate(gpt["agreement_with_pair_rule"])
    assert gpt["best_threshold_curve_equals"] in (None, "cosine (MiniLM)")
    assert (gpt["best_threshold_curve_equals"] is not None) == ("gptcache" in cosine["same_curve_as"])
    assert "redisvl" in result["not_run"] and "redisvl" not in result["systems"]  # --no-redis: not faked
    latency = result["latency"]["same_set"]
    assert latency["tokenlean"]["entries"] == latency["gptcache"]["entries"] > 0
    assert latency["tokenlean"]["queries"] == latency["gptcache"]["queries"] > 0
    # near-misses: the template set and the independent swaps from the committed word list
    adversarial = result["adversarial"]
    assert adversarial["template"]["from_to"]["tokenlean_false_hit_rate"] == 0.0
    swap = adversarial["independent_swap"]
    assert swap["pairs"] > 0 and swap["word_list"] == "benchmarks/data/swap_words.json"
    for block in (swap, *swap["by_kind"].values(), *adversarial["template"].values()):
        assert _rate(block["tokenlean_false_hit_rate"]) and _rate(block["single_threshold_false_hit_rate"])
    assert swap["examples"] and all(_rate(e["cosine"], lower=-1) for e in swap["examples"])
    # multi-turn follow-ups
    contextual = result["contextual"]
    assert contextual["conversations"] > 0
    for name in ("tokenlean", "single cosine, last user message"):
        unrelated, matching = contextual["unrelated"][name], contextual["matching_context"][name]
        assert unrelated["lookups"] > 0 and 0 <= unrelated["wrong_hits"] <= unrelated["lookups"]
        assert _rate(unrelated["wrong_hit_rate"]) and _rate(matching["true_hit_rate"])
        assert matching["true_hits"] + matching["wrong_hits"] <= matching["lookups"]
    assert result["scale"] == result["latency"]["scale"] and result["scale"]["embedded"]
    assert "error_bound" in result


def _rate(value: object, lower: float = 0.0, upper: float | None = 1.0) -> bool:
    """A finite number in ``[lower, upper]`` (no upper bound when ``upper`` is None)."""
    return (
        isinstance(value, (int, float))
        and math.isfinite(value)
        and lower <= value
        and (upper is None or value <= upper)
    )


def test_swap_word_list_is_independent_of_the_guards() -> None:
    """The independent near-miss list is benchmark data: nothing that ships reads it."""
    data = json.loads((ROOT / "benchmarks" / "data" / "swap_words.json").read_text())
    assert len(data["antonyms"]) >= 50 and len(data["siblings"]) >= 10
    shipped = [ROOT / "core", ROOT / "integrations"]
    readers = [
        path
        for root in shipped
        for path in root.rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".json", ".toml", ".txt", ".cfg"}
        and "swap_words" in path.read_text(errors="replace")
    ]
    assert readers == []


def test_swap_pairs_replace_one_shared_word_case_preserved() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from semantic_cache import load_swap_words, swap_pairs
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    partners = load_swap_words()
    pairs = [
        ("How do I gain weight?", "What is the best way to Gain weight quickly?", True),
        ("Is Python hard to learn?", "How hard is it to learn Python?", True),
        ("What is love?", "Define love.", False),  # not a duplicate: never swapped
        ("Why is the sky blue?", "What makes the sky look blue?", True),
    ]
    out = swap_pairs(pairs, partners, random.Random(0))
    assert len(out) == 3 and all(
        o["query"] != q for o, (_, q, _) in zip(out, pairs[:2] + pairs[3:], strict=True)
    )
    for o in out:
        assert o["swap"] in {w for w, _ in partners[o["word"]]}
        assert not re.search(rf"\b{o['swap']}\b", o["cached"], re.IGNORECASE)
        assert re.search(rf"\b{o['swap']}\b", o["query"], re.IGNORECASE)
    assert out[0]["word"] == "gain" and "Lose weight" in out[0]["query"]  # only the shared word; case kept
    assert out[1]["word"] in {"python", "hard"} and out[2]["kind"] == "colors"


def test_cli_calibrate_stats_and_bad_input(
    tmp_path: Path, embedder: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from tokenlean.cache import PairScorer, SemanticCache
    from tokenlean.cli import main

    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["question1", "question2", "is_duplicate"])
        for t in [
            "password",
            "invoice",
            "account",
            "order",
            "refund",
            "email",
            "plan",
            "card",
            "team",
            "device",
            "login",
            "report",
        ]:
            w.writerow([f"How do I change my {t}?", f"How can I change my {t}?", 1])
            w.writerow([f"How do I change my {t}?", f"How do I delete my {t}?", 0])
            w.writerow([f"How do I change my {t}?", f"Why can't I change my {t}?", 0])
    out = tmp_path / "scorer.json"
    assert main(["cache", "calibrate", str(pairs), "--rate", "0.1", "--out", str(out)]) == 0
    scorer = PairScorer.load(str(out))
    assert scorer.max_false_hit_rate == 0.1
    db = tmp_path / "c.db"
    with SemanticCache(db, embedder=embedder, scorer=scorer) as cache:
        cache.store("How do I change my password?", "Settings > Security.")
    capsys.readouterr()
    assert main(["cache", "stats", str(db)]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 1
    assert main(["cache", "stats", str(tmp_path / "missing.db")]) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["cache", "calibrate", str(bad)]) == 1
