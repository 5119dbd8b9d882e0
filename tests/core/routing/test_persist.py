"""Saved routers: the round trip decides alike, the file is pickle-free, a wrong embedder is refused;
the shipped default router; ``tokenlean route train`` / ``route eval`` on small outcome files."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tokenlean.errors import ConfigError, EmbedderMismatchError, RouterFileError, TokenleanError
from tokenlean.routing import LearnedRouter, OutputControl
from tokenlean.routing.persist import DEFAULT_ROUTER_DIR
from tokenlean.routing.testing import EASY, HARD
from tokenlean.routing.testing import WordHashEmbedder as WordHash
from tokenlean.routing.testing import synthetic_outcomes as _outcomes
from tokenlean.routing.testing import synthetic_prompt as _prompt
from tokenlean.types import Message, Request

KINDS = ["ensemble", "gap", "knn-gap", "lexical", "logistic", "knn", "mf"]


def _req(text: str) -> Request:
    return Request([Message("user", text)])


def _fitted(kind: str = "ensemble", **kw: object) -> tuple[LearnedRouter, list[str]]:
    prompts, strong, weak = _outcomes(300)
    scorer = "mf" if kind == "mf" else kind
    r = LearnedRouter("big", "small", scorer=scorer, embedder=WordHash(), **kw)  # type: ignore[arg-type]
    if kind == "mf":
        from tokenlean.routing import MatrixFactorizationScorer

        r.scorer = MatrixFactorizationScorer(dim=4, epochs=60)
    r.fit(prompts, strong, weak)
    r.calibrate(prompts, strong_share=0.5)
    test, _, _ = _outcomes(60, seed=11)
    return r, test


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_decisions(tmp_path: Path, kind: str) -> None:
    r, test = _fitted(
        kind, strong_output=OutputControl(max_tokens=512), weak_output=OutputControl(stop=("\n",))
    )
    r.save(tmp_path / "r")
    back = LearnedRouter.load(tmp_path / "r", embedder=WordHash())
    assert np.array_equal(back.score(test), r.score(test))
    assert [back.decide(_req(p)) for p in test] == [r.decide(_req(p)) for p in test]
    assert back.threshold == r.threshold and back.strong_output == r.strong_output
    assert back.weak_output == r.weak_output and back.info == r.info
    # no pickle anywhere: every member of the archive is a plain numeric array
    with np.load(tmp_path / "r" / "arrays.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype.kind in "fiu" for k in npz.files)
    meta = json.loads((tmp_path / "r" / "router.json").read_text())
    assert meta["format"] == "tokenlean-router" and meta["embedder"]["name"] == "wordhash"
    assert meta["embedder"]["dim"] == 64 and len(meta["probe_scores"]) == len(meta["embedder"]["probe_texts"])
    # renamed targets, runtime options
    other = LearnedRouter.load(
        tmp_path / "r", embedder=WordHash(), strong="gpt-4o", weak="gpt-4o-mini", threshold=9.0
    )
    d = other.decide(_req(test[0]))
    assert d is not None and d.target == "gpt-4o-mini"


def test_compact_files_are_smaller_close_and_stable(tmp_path: Path) -> None:
    r, test = _fitted("ensemble")
    r.save(tmp_path / "full")
    r.save(tmp_path / "small", compact=True)
    size = {k: (tmp_path / k / "arrays.npz").stat().st_size for k in ("full", "small")}
    assert size["small"] < size["full"]  # (the shipped router: 2.9 MB instead of 7.6)
    small = LearnedRouter.load(tmp_path / "small", embedder=WordHash())
    assert np.corrcoef(small.score(test), r.score(test))[0, 1] > 0.99
    small.save(tmp_path / "again", compact=True)  # a compact router saves to the same arrays again
    again = LearnedRouter.load(tmp_path / "again", embedder=WordHash())
    assert np.array_equal(again.score(test), small.score(test))
    with np.load(tmp_path / "small" / "arrays.npz") as a, np.load(tmp_path / "again" / "arrays.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_load_refuses_another_embedder(tmp_path: Path) -> None:
    r, _ = _fitted("gap")
    r.save(tmp_path / "r")

    class Other(WordHash):
        name = "other"

    with pytest.raises(EmbedderMismatchError, match="trained on embedder 'wordhash', this one is 'other'"):
        LearnedRouter.load(tmp_path / "r", embedder=Other())
    with pytest.raises(EmbedderMismatchError, match="embeds the probe texts differently"):
        LearnedRouter.load(tmp_path / "r", embedder=WordHash(salt="v2"))  # same name, other vectors

    with pytest.raises(EmbedderMismatchError, match="128-d"):
        LearnedRouter.load(tmp_path / "r", embedder=WordHash(dim=128))
    assert issubclass(EmbedderMismatchError, RouterFileError) and issubclass(RouterFileError, TokenleanError)


def test_missing_corrupt_and_unsupported_router_files_raise_typed_errors(tmp_path: Path) -> None:
    r, _ = _fitted("ensemble")
    r.save(tmp_path / "r")
    with pytest.raises(RouterFileError, match="not a saved router"):
        LearnedRouter.load(tmp_path / "nowhere", embedder=WordHash())
    for name, edit, match in (
        ("version", lambda m: m.update(version=99), "format version 99"),
        ("format", lambda m: m.update(format="pickle"), "not a tokenlean-router file"),
        ("kind", lambda m: m.update(kind="cascade"), "not a LearnedRouter"),
        ("scorer", lambda m: m["scorer"].update(kind="transformer"), "unknown scorer kind"),
        ("threshold", lambda m: m.update(threshold="high"), "does not describe a router"),
        ("members", lambda m: m["scorer"]["scale"].pop(), "members and scales"),
        ("probe", lambda m: m.update(probe_scores=[s + 1 for s in m["probe_scores"]]), "does not reproduce"),
    ):
        d = tmp_path / name
        shutil.copytree(tmp_path / "r", d)
        meta = json.loads((d / "router.json").read_text())
        edit(meta)
        (d / "router.json").write_text(json.dumps(meta))
        with pytest.raises(RouterFileError, match=match):
            LearnedRouter.load(d, embedder=WordHash())
    d = tmp_path / "notjson"
    shutil.copytree(tmp_path / "r", d)
    (d / "router.json").write_text("{")
    with pytest.raises(RouterFileError, match="not JSON"):
        LearnedRouter.load(d, embedder=WordHash())
    d = tmp_path / "tampered"
    shutil.copytree(tmp_path / "r", d)
    data = bytearray((d / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "arrays.npz").write_bytes(bytes(data))
    with pytest.raises(RouterFileError, match="SHA-256"):
        LearnedRouter.load(d, embedder=WordHash())
    # an object array (which only pickle can read) is refused even with a matching checksum
    d = tmp_path / "pickled"
    shutil.copytree(tmp_path / "r", d)
    with zipfile.ZipFile(d / "arrays.npz", "a") as z, z.open("evil.npy", "w") as fh:
        np.lib.format.write_array(fh, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    meta = json.loads((d / "router.json").read_text())
    meta["arrays_sha256"] = hashlib.sha256((d / "arrays.npz").read_bytes()).hexdigest()
    (d / "router.json").write_text(json.dumps(meta))
    with pytest.raises(RouterFileError, match="unreadable"):
        LearnedRouter.load(d, embedder=WordHash())
    with pytest.raises(ConfigError, match="unknown load options"):
        LearnedRouter.load(tmp_path / "r", embedder=WordHash(), scorer="gap")


def test_only_fitted_routers_of_known_scorers_save(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fit"):
        LearnedRouter("big", "small", embedder=WordHash()).save(tmp_path / "x")

    class Custom:
        kind, needs_outcomes = "custom", False

        def fit(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> None:
            pass

    r = LearnedRouter("big", "small", scorer=Custom(), embedder=WordHash())
    prompts, s, w = _outcomes(20)
    r.fit(prompts, s, w)
    with pytest.raises(ConfigError, match="cannot save a scorer of type Custom"):
        r.save(tmp_path / "x")
    r.scorer = LearnedRouter("a", "b").scorer
    r.info = {"when": object()}
    with pytest.raises(ConfigError):
        r.save(tmp_path / "y")


# -- the shipped router and the CLI (the real static embedder) -----------------------------------------


@pytest.mark.integration
def test_default_router_ships_small_loads_and_round_trips(tmp_path: Path, static_embedder: object) -> None:
    files = {f.name: f.stat().st_size for f in DEFAULT_ROUTER_DIR.iterdir()}
    assert set(files) == {"router.json", "arrays.npz"} and sum(files.values()) < 3.5e6
    assert DEFAULT_ROUTER_DIR.parent.parent.name == "routing"  # inside the package: shipped in the wheel
    r = LearnedRouter.default("gpt-4o", "gpt-4o-mini")
    assert (r.strong, r.weak) == ("gpt-4o", "gpt-4o-mini")
    assert r.info["trained_on"]["rows"] == {"gsm8k": 1307, "mmlu": 14037, "mt_bench": 72}
    assert r.scorer.active == ["gap", "knn-gap", "lexical"]
    prompts = [_prompt(t, i) for i, t in enumerate(HARD + EASY)] + [
        "Janet has 3 apples and buys 5 more. How many does she have?",
        "Which of these is a mammal?\nA. shark\nB. whale\nC. trout\nD. eel",
        "Write a haiku about autumn.",
    ]
    r.save(tmp_path / "copy", compact=True)
    back = LearnedRouter.load(tmp_path / "copy")
    assert np.array_equal(back.score(prompts), r.score(prompts))
    assert [back.decide(_req(p)) for p in prompts] == [r.decide(_req(p)) for p in prompts]
    # a table that is not the one the router was trained with: refused only when strict
    meta = json.loads((tmp_path / "copy" / "router.json").read_text())
    meta["embedder"]["table_sha256"] = "0" * 64
    (tmp_path / "copy" / "router.json").write_text(json.dumps(meta))
    with pytest.raises(EmbedderMismatchError, match="table"):
        LearnedRouter.load(tmp_path / "copy", strict=True)
    assert LearnedRouter.load(tmp_path / "copy").threshold == r.threshold


def _cli(args: list[str]) -> int:
    from tokenlean.routing.cli import register_cli

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    ns = parser.parse_args(args)
    return int(ns.func(ns))


def _write_outcomes(path: Path, n: int, seed: int) -> None:
    import csv

    prompts, strong, weak = _outcomes(n, seed=seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "big", "small"])
        for p, s, wk in zip(prompts, strong, weak, strict=True):
            w.writerow([p, int(s), int(wk)])
        w.writerow(["a prompt nobody scored", "", ""])


@pytest.mark.integration
def test_cli_train_and_eval_on_a_small_outcome_file(
    tmp_path: Path, static_embedder: object, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    _write_outcomes(train, 160, seed=0)
    _write_outcomes(test, 60, seed=1)
    out = tmp_path / "router"
    assert _cli(["route", "train", str(train), "--strong", "big", "--weak", "small", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "160 rows" in text and "1 skipped" in text and "strong=big weak=small" in text
    report = tmp_path / "eval.json"
    assert _cli(["route", "eval", str(test), "--router", str(out), "--json", str(report)]) == 0
    text = capsys.readouterr().out
    assert "APGR" in text and "PGR@share" in text and "in-sample" not in text
    rep = json.loads(report.read_text())
    assert rep["rows"] == 60 and rep["skipped"] == 1 and not rep["in_sample"]
    assert set(rep["policies"]) == {"router", "random", "length", "oracle"}
    assert rep["policies"]["router"]["apgr"] > rep["policies"]["random"]["apgr"] + 0.15  # topics decide it
    assert 0.3 < rep["strong_share"] < 0.7
    # evaluating on the training file says so
    assert _cli(["route", "eval", str(train), "--router", str(out)]) == 0
    assert "in-sample" in capsys.readouterr().out
    # bad invocations are typed errors (the top-level CLI prints them and exits 1)
    with pytest.raises(ConfigError, match="strong"):
        _cli(["route", "train", str(train), "--out", str(out)])
    with pytest.raises(ConfigError, match="both OUTCOMES and --router"):
        _cli(["route", "eval", str(test)])
    from tokenlean.cli import main

    assert main(["route", "train", str(tmp_path / "missing.csv"), "--strong", "big", "--weak", "small"]) == 1
    assert "no outcome file" in capsys.readouterr().err


@pytest.mark.integration
def test_cli_trains_on_an_outcome_log(
    tmp_path: Path, static_embedder: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole loop: route with the shipped router, log, feed back, retrain with the CLI."""
    prompts, strong, weak = _outcomes(200, seed=2)
    log = tmp_path / "log.jsonl"
    r = LearnedRouter.default("big", "small", outcome_log=log, explore=0.2, seed=0)
    for p, s, w in zip(prompts, strong, weak, strict=True):
        d = r.decide(_req(p))
        assert d is not None
        r.feedback(d.extra["call_id"], ok=bool(s if d.target == "big" else w))
    r.outcome_log.close()  # type: ignore[union-attr]
    out = tmp_path / "mine"
    assert _cli(["route", "train", str(log), "--out", str(out), "--compact"]) == 0
    text = capsys.readouterr().out
    assert "200 rows (200 with one model's outcome only)" in text and "200 decisions" in text
    mine = LearnedRouter.load(out)
    assert (mine.strong, mine.weak) == ("big", "small") and mine.info["log"]["decisions"] == 200
    test, _, _ = _outcomes(40, seed=3)
    scores = mine.score(test)
    hard = np.array([any(h in p for h in HARD) for p in test])
    assert scores[hard].mean() > scores[~hard].mean()
