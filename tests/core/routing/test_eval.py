"""Offline evaluation: RouteLLM's metrics on hand-checkable curves, the CSV loader, the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tokenlean.errors import InputError
from tokenlean.routing.datasets import OutcomeData, load_outcome_csv
from tokenlean.routing.eval import (
    apgr,
    baseline_scores,
    cost_quality_curve,
    cpt,
    crossfit_scores,
    evaluate_random,
    evaluate_scores,
)

ROOT = Path(__file__).resolve().parents[3]


def _data() -> OutcomeData:
    # 10 prompts: strong right on all, weak wrong on the first 4 (the gap is 0.4)
    strong = np.ones(10)
    weak = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], dtype=float)
    return OutcomeData("toy", [f"p{i}" * (10 - i) for i in range(10)], strong, weak)


def test_curve_apgr_and_cpt_by_hand() -> None:
    d = _data()
    oracle = evaluate_scores("oracle", d.strong - d.weak, d)
    # oracle: the 4 gap rows first (ties switch together), then the rest
    assert [(p.strong_share, p.quality) for p in oracle.curve] == [(0.0, 0.6), (0.4, 1.0), (1.0, 1.0)]
    assert oracle.cpt50 == pytest.approx(0.2) and oracle.cpt80 == pytest.approx(0.32)
    assert oracle.apgr == pytest.approx(0.4 * 0.5 + 0.6 * 1.0)
    worst = evaluate_scores("worst", d.weak - d.strong, d)
    assert worst.cpt50 == pytest.approx(0.8) and worst.apgr == pytest.approx(0.6 * 0 + 0.4 * 0.5)
    const = evaluate_scores("const", np.zeros(10), d)  # one tie group: all weak or all strong
    assert [(p.strong_share, p.quality) for p in const.curve] == [(0.0, 0.6), (1.0, 1.0)]
    assert const.apgr == pytest.approx(0.5)
    assert evaluate_random(d).apgr == pytest.approx(0.5, abs=0.08)


def test_length_baseline_and_errors() -> None:
    d = _data()
    s = baseline_scores(d)
    assert evaluate_scores("length", s["length"], d).apgr == pytest.approx(
        evaluate_scores("o", d.strong - d.weak, d).apgr
    )
    with pytest.raises(InputError):
        evaluate_scores("nan", np.full(10, np.nan), d)
    curve = cost_quality_curve(np.arange(10), d.strong, d.weak)
    assert apgr(curve, 1.0, 0.6) == evaluate_scores("x", np.arange(10), d).apgr
    assert cpt(curve, 1.0, 0.6, 0.0) == 0.0


def test_crossfit_never_scores_a_row_with_a_model_that_saw_it() -> None:
    d = _data()
    seen: list[tuple[set[int], set[int]]] = []

    def fp(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        seen.append((set(train.tolist()), set(test.tolist())))
        return np.zeros(len(test))

    crossfit_scores(d, fp, folds=5)
    assert all(not (tr & te) for tr, te in seen)
    assert set().union(*(te for _, te in seen)) == set(range(10))


def _write_csv(path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "big", "small", "note"])
        rows = [(f"Prove theorem {i} in detail with all steps", 1, 0) for i in range(12)]
        rows += [(f"Say hi to person {i}", 1, 1) for i in range(12)]
        for p, s, m in rows:
            w.writerow([p, s, m, "x"])
        w.writerow(["missing outcome", "", 1, "x"])
        w.writerow(["bad value", "n/a", 0, "x"])


def test_csv_loader_skips_and_counts_missing(tmp_path: Path) -> None:
    f = tmp_path / "out.csv"
    _write_csv(f)
    d = load_outcome_csv(f, "big", "small")
    assert len(d) == 24 and d.skipped == 2 and d.strong_quality == 1.0 and d.weak_quality == 0.5
    with pytest.raises(InputError):
        load_outcome_csv(f, "big", "nope")


@pytest.mark.integration
def test_cli_route_eval_on_a_csv(tmp_path: Path, embedder) -> None:
    import argparse

    from tokenlean.routing.cli import register_cli

    f = tmp_path / "outcomes.csv"
    _write_csv(f)
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    out = tmp_path / "r.json"
    args = parser.parse_args(
        [
            "route",
            "eval",
            "--csv",
            str(f),
            "--strong",
            "big",
            "--weak",
            "small",
            "--json",
            str(out),
            "--cache-dir",
            str(tmp_path),
        ]
    )
    assert args.func(args) == 0
    report = json.loads(out.read_text())
    pols = report["datasets"]["outcomes"]
    assert {"random", "length", "oracle", "learned-logistic", "learned-knn", "tokenlean-best"} <= set(pols)
    assert report["meta"]["outcomes"]["skipped"] == 2
    assert pols["learned-knn"]["apgr"] == pytest.approx(pols["oracle"]["apgr"], abs=0.05)  # easy to learn
    assert list(tmp_path.glob("*.npy"))  # embeddings cached for the next run


@pytest.mark.integration
def test_benchmark_quick_runs(tmp_path: Path) -> None:
    data = ROOT.parent / "shared" / "datasets"
    if not (data / "routing" / "routellm").exists():
        pytest.skip(f"routing datasets not at {data}")
    out = tmp_path / "routing.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "routing.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    for name in ("gsm8k", "mmlu", "mt_bench"):
        for pol in ("tokenlean-best", "random", "length", "oracle"):
            assert set(res["datasets"][name][pol]) >= {"apgr", "cpt50", "cpt80"}
        assert res["datasets"][name]["oracle"]["apgr"] > res["datasets"][name]["random"]["apgr"]
    assert res["decision_latency"]["p50_ms_warm"] > 0
    _check_honest_blocks(res)


def _check_honest_blocks(res: dict) -> None:
    """Issue 18's blocks: grouped CV, the frozen test, leave-one-dataset-out, cascades, money."""
    router = res["grouped"]["router"]
    sets = ("gsm8k", "mmlu", "mt_bench")
    for block in ("grouped", "frozen_test", "leave_one_out"):
        for name in sets:
            entry = res[block]["sets"][name]
            assert entry["rows"] > 0
            pols = entry["policies"]
            assert {"random", "length", "oracle", "best-feature", router} <= set(pols) or (
                block == "frozen_test"
                and {"random", "length", "oracle", "best-feature-in-sample", router} <= set(pols)
            )
            for m in pols.values():
                assert 0.0 <= m["cpt50"] <= m["cpt80"] <= 1.0 and -1.0 <= m["apgr"] <= 2.0
            assert not any(p.startswith("cascade") for p in pols)  # cascades are their own class
    g = res["grouped"]
    assert g["method"]["links"] and g["folds"] >= 2
    for name in sets:
        total = g["sets"][name]["rows"] + res["frozen_test"]["sets"][name]["rows"]
        assert total == res["meta"][name]["rows"]  # the frozen test and the CV part split the set
        assert res["leave_one_out"]["sets"][name]["train_on"] == [s for s in sets if s != name]
    for name in ("gsm8k", "mt_bench"):  # the sets with the weak model's answers
        cas = res["cascades"]["sets"][name]
        assert {"cascade-verifier", "cascade-blend"} <= set(cas["grouped"])
        charged = cas["grouped_charged"]["cascade-verifier"]
        assert 0.0 <= charged["apgr_cost"] <= 1.5
    money = res["money"]
    assert money["pinned_on"] and money["prices_usd_per_million"]["gpt-4o"]["input"] > 0
    for name in sets:
        for pair in money["sets"][name].values():
            m = pair["frozen_test"][router]
            assert 0 < m["usd_per_1k_all_weak"] < m["usd_per_1k_all_strong"]
    assert set(res["targets"]["grouped"]) == set(sets) and "decision_p50_ms" in res["targets"]


def test_load_outcomes_says_what_to_pass(tmp_path: Path) -> None:
    from tokenlean.errors import ConfigError
    from tokenlean.routing.datasets import load_outcomes

    f = tmp_path / "outcomes.csv"
    _write_csv(f)
    with pytest.raises(ConfigError, match="--strong"):
        load_outcomes([f], strong="big")
    with pytest.raises(ConfigError, match="--data"):
        load_outcomes()
    with pytest.raises(ConfigError, match="not found under"):
        load_outcomes(data_dir=tmp_path)
    sets = load_outcomes([f], "big", "small")
    assert list(sets) == ["outcomes"] and sets["outcomes"].skipped == 2
