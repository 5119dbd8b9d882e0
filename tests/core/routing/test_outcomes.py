"""Routing on your own outcomes: outcome files, the outcome log and feedback, privacy mode, N models.

A word-hashing toy embedder stands in for the static one (the tests of the shipped router and the
CLI in ``test_persist.py`` use the real one): what is under test here is the bookkeeping.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokenlean.errors import (
    ConfigError,
    EmbedderMismatchError,
    EmptyInputError,
    InputError,
    OutcomeFormatError,
    UnknownModelError,
)
from tokenlean.routing import CheapestAdequateRouter, LearnedRouter, OutcomeLog, read_outcomes
from tokenlean.routing.outcomes import decode_features, encode_features
from tokenlean.routing.testing import EASY, HARD
from tokenlean.routing.testing import WordHashEmbedder as WordHash
from tokenlean.routing.testing import synthetic_outcomes as _outcomes
from tokenlean.routing.testing import synthetic_prompt as _prompt
from tokenlean.types import Message, Request

MEDIUM = ("summary", "letter", "recipe", "itinerary", "poem", "review")


def _req(text: str, **md: object) -> Request:
    return Request([Message("user", text)], metadata=md)


# -- outcome files ----------------------------------------------------------------------------------


def test_csv_and_jsonl_outcomes_read_alike_with_model_or_role_columns(tmp_path: Path) -> None:
    f = tmp_path / "o.csv"
    f.write_text(
        "prompt,big,small,note\n"
        "What is 2+2?,1,1,x\n"
        '"Prove it,\nplease",true,false,\n'
        "Only the big one known,0.5,,\n"
        "Nothing known,,nan,\n"
        ",1,0,\n",
        encoding="utf-8",
    )
    t = read_outcomes(f, strong="big", weak="small")
    assert t.prompts == ["What is 2+2?", "Prove it,\nplease", "Only the big one known"]
    s, w = t.pair("big", "small")
    assert s.tolist() == [1.0, 1.0, 0.5] and w[:2].tolist() == [1.0, 0.0] and np.isnan(w[2])
    assert t.skipped == 2 and t.has_text and t.lengths.tolist() == [12, 16, 22] and len(t.sha256) == 64
    # ``strong``/``weak`` columns stand in when no column is named by the model
    g = tmp_path / "o.jsonl"
    g.write_text(
        json.dumps({"prompt": "What is 2+2?", "strong": 1, "weak": True})
        + "\n\n"
        + json.dumps({"prompt": "Hard one", "scores": {"gpt-x": 1, "mini": 0}})
        + "\n"
    )
    with pytest.raises(OutcomeFormatError, match="no outcome of model 'absent'"):
        read_outcomes(g, models=["gpt-x", "mini", "absent"])
    t2 = read_outcomes(g, strong="gpt-x", weak="mini")
    assert t2.pair("gpt-x", "mini")[0].tolist() == [1.0, 1.0] and t2.pair("gpt-x", "mini")[1].tolist() == [
        1.0,
        0.0,
    ]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.csv", "prompt,big\nx,1\n", "no column 'small' or 'weak'"),
        ("a.csv", "text,big,small\nx,1,0\n", "needs a 'prompt' or a 'features' column"),
        ("a.csv", "prompt,big,small\nx,1,O.8\n", r"a\.csv:2: small: 'O\.8' is not a score"),
        ("a.csv", "prompt,big,small\nx,1,inf\n", "must be finite"),
        ("a.csv", "prompt,big,small\nx,1,0,7\n", "more cells than columns"),
        ("a.csv", 'features,big,small\n"[0.1, 0.2]",1,0\n', "needs 'chars'"),
        ("a.csv", 'features,chars,big,small\n"[0.1, 0.2]",4,1,0\n"[0.1]",3,1,0\n', "1-value feature vector"),
        ("a.csv", "features,chars,big,small\nnot json,4,1,0\n", "not a JSON list"),
        (
            "a.jsonl",
            '{"prompt": "x", "big": 1, "small": 0}\n{"prompt": "y", "big": 1\n{"prompt": "z"}\n',
            r"a\.jsonl:2: not JSON",
        ),
        ("a.jsonl", '["prompt", 1, 0]\n', "must be a JSON object"),
        ("a.jsonl", '{"prompt": 7, "big": 1, "small": 0}\n', "'prompt' must be text"),
        ("a.jsonl", '{"big": 1, "small": 0}\n', "neither a prompt nor a feature vector"),
        ("a.jsonl", '{"prompt": "x", "big": [1], "small": 0}\n', "is not a score"),
        ("a.txt", "prompt,big,small\n", "not 'txt'|not '.txt'"),
    ],
)
def test_malformed_outcome_files_raise_typed_errors(
    tmp_path: Path, name: str, content: str, match: str
) -> None:
    f = tmp_path / name
    f.write_text(content, encoding="utf-8")
    with pytest.raises(OutcomeFormatError, match=match):
        read_outcomes(f, strong="big", weak="small")


def test_outcome_reader_refuses_bad_arguments_and_empty_files(tmp_path: Path) -> None:
    f = tmp_path / "o.csv"
    f.write_text("prompt,big,small\nx,,\n")
    with pytest.raises(EmptyInputError, match="no rows with a known outcome"):
        read_outcomes(f, strong="big", weak="small")
    with pytest.raises(OutcomeFormatError, match="no outcome file"):
        read_outcomes(tmp_path / "missing.csv", strong="big", weak="small")
    with pytest.raises(ConfigError, match="both"):
        read_outcomes(f, strong="big")
    with pytest.raises(ConfigError, match="must differ"):
        read_outcomes(f, strong="big", weak="big")
    with pytest.raises(ConfigError, match="CSV needs the model columns"):
        read_outcomes(f)
    (tmp_path / "latin.csv").write_bytes("prompt,big,small\ncaf\xe9,1,0\n".encode("latin-1"))
    with pytest.raises(OutcomeFormatError, match="not UTF-8"):
        read_outcomes(tmp_path / "latin.csv", strong="big", weak="small")


def test_feature_vectors_round_trip_and_bad_ones_are_refused() -> None:
    v = np.linspace(-1, 1, 12, dtype=np.float32)
    enc = encode_features(v, embedder="e", chars=40)
    back, chars, emb = decode_features(json.loads(json.dumps(enc)))
    assert np.allclose(back, v, atol=1e-3) and chars == 40 and emb == "e"
    assert decode_features([0.5, 1.0])[0].tolist() == [0.5, 1.0]
    for bad in (
        {"dtype": "float16", "b64": "@@"},
        {"dtype": "float64", "b64": ""},
        [],
        [True],
        "[1, null]",
        3,
    ):
        with pytest.raises(OutcomeFormatError):
            decode_features(bad)
    with pytest.raises(OutcomeFormatError, match="'dim' says 3"):
        decode_features({**enc, "dim": 3})
    with pytest.raises(ConfigError):
        encode_features(np.array([np.nan]), embedder="e", chars=1)


# -- the outcome log, feedback, retraining ------------------------------------------------------------


def test_outcome_log_feedback_and_retrain(tmp_path: Path) -> None:
    """Route live traffic, feed back how each answer did, retrain on the log alone."""
    prompts, strong, weak = _outcomes(240)
    truth = {p: (s, w) for p, s, w in zip(prompts, strong, weak, strict=True)}
    first = LearnedRouter("big", "small", embedder=WordHash(), segments=False, scorer="gap")
    first.fit(prompts[:40], strong[:40], weak[:40])
    log = tmp_path / "outcomes.jsonl"
    router = LearnedRouter(
        "big", "small", embedder=WordHash(), segments=False, outcome_log=log, explore=0.3, seed=1
    )
    router.scorer, router._center, router._mu, router._sd = first.scorer, first._center, first._mu, first._sd
    router.threshold = first.threshold
    ids = []
    for p in prompts[40:]:
        d = router.decide(_req(p))
        assert d is not None and d.extra["call_id"] and d.target in ("big", "small")
        ids.append(d.extra["call_id"])
        s, w = truth[p]
        router.feedback(
            d.extra["call_id"], ok=bool(s if d.target == "big" else w)
        )  # the routed model's outcome
    # a stable id of the caller's own, and the other model's outcome from an offline judge
    d = router.decide(_req(prompts[0], call_id="ticket-42"))
    assert d is not None and d.extra["call_id"] == "ticket-42"
    router.feedback("ticket-42", score=0.25, model="big")
    router.feedback("ticket-42", score=0.75, model="small")
    router.feedback("ticket-42", score=1.0, model="big")  # the last word per call and model wins
    router.outcome_log.close()

    records = [json.loads(x) for x in log.read_text().splitlines()]
    decision = next(r for r in records if r["type"] == "decision")
    assert set(decision) == {
        "v", "type", "call_id", "time", "router", "strong", "weak", "target", "score", "threshold", "explore", "prompt"
    }  # fmt: skip
    assert decision["prompt"] in prompts and decision["v"] == 1
    fb = next(r for r in records if r["type"] == "feedback")
    assert set(fb) == {"v", "type", "call_id", "time", "model", "score", "ok"}
    assert any(r.get("explore") for r in records), "explore sends some calls to the other model"

    table = read_outcomes(log)
    assert table.info["decisions"] == 201 and table.info["models"] == ["big", "small"]
    s, w = table.pair("big", "small")
    assert len(table) == 201 and int(np.isnan(s).sum() + np.isnan(w).sum()) == 200  # one model per call
    assert table.prompts[-1] == prompts[0] and s[-1] == 1.0 and w[-1] == 0.75

    retrained = LearnedRouter("big", "small", embedder=WordHash(), segments=False).fit_table(table)
    assert retrained.info["partial_rows"] == 200 and retrained.info["sha256"] == table.sha256
    test_prompts, _, _ = _outcomes(40, seed=9)
    scores = retrained.score(test_prompts)
    hard = np.array([any(h in p for h in HARD) for p in test_prompts])
    assert scores[hard].min() > scores[~hard].max(), "learned from one-model-per-call feedback"


def test_privacy_mode_logs_no_text_and_retrains_from_features(tmp_path: Path) -> None:
    prompts, strong, weak = _outcomes(120)
    log = tmp_path / "private.jsonl"
    router = LearnedRouter("big", "small", embedder=WordHash(), outcome_log=log, privacy="features")
    router.fit(prompts, strong, weak)
    assert router.privacy == "features"
    secret = "Patient Jane Roe, born 1970-01-01: explain the integral in detail."
    d = router.decide(_req(secret))
    assert d is not None
    router.feedback(d.extra["call_id"], ok=False, model="small")
    router.feedback(d.extra["call_id"], ok=True, model="big")
    for p, s, w in zip(prompts, strong, weak, strict=True):
        d = router.decide(_req(p))
        assert d is not None
        router.feedback(d.extra["call_id"], ok=bool(s), model="big")
        router.feedback(d.extra["call_id"], ok=bool(w), model="small")
    raw = log.read_text()
    assert "Jane" not in raw and "integral" not in raw and "Question" not in raw and '"prompt"' not in raw
    rec = json.loads(raw.splitlines()[0])
    assert set(rec["features"]) == {"embedder", "dtype", "dim", "b64", "chars"}
    assert rec["features"]["embedder"] == "wordhash+segments" and rec["features"]["chars"] == len(secret)
    vec, chars, _ = decode_features(rec["features"])
    assert np.allclose(vec, router.embed([secret])[0], atol=2e-3) and chars == len(secret)

    table = read_outcomes(log)
    assert not table.has_text and table.embedder == "wordhash+segments"
    again = LearnedRouter("big", "small", embedder=WordHash()).fit_table(table)
    assert not again.info["text"] and "lexical" not in again.scorer.active  # words were never stored
    test_prompts, _, _ = _outcomes(40, seed=5)
    hard = np.array([any(h in p for h in HARD) for p in test_prompts])
    scores = again.score(test_prompts)
    assert scores[hard].min() > scores[~hard].max()
    with pytest.raises(EmbedderMismatchError, match="wordhash\\+segments"):
        LearnedRouter("big", "small", embedder=WordHash(), segments=False).fit_table(table)


def test_feedback_and_logging_refuse_bad_input(tmp_path: Path) -> None:
    prompts, strong, weak = _outcomes(40)
    plain = LearnedRouter("big", "small", embedder=WordHash()).fit(prompts, strong, weak)
    d = plain.decide(_req(prompts[0]))
    assert d is not None and "call_id" not in d.extra  # no log, no call ids
    with pytest.raises(ConfigError, match="outcome log"):
        plain.feedback("x", ok=True)
    log = tmp_path / "o.jsonl"
    r = LearnedRouter("big", "small", embedder=WordHash(), outcome_log=log).fit(prompts, strong, weak)
    d = r.decide(_req(prompts[1]))
    assert d is not None
    cid = d.extra["call_id"]
    with pytest.raises(InputError, match="one of them"):
        r.feedback(cid)
    with pytest.raises(InputError, match="one of them"):
        r.feedback(cid, ok=True, score=1.0)
    with pytest.raises(InputError, match="True or False"):
        r.feedback(cid, ok=1)  # type: ignore[arg-type]
    for bad in (float("nan"), float("inf"), "0.5", True):
        with pytest.raises(InputError, match="finite number"):
            r.feedback(cid, score=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not routed by this router"):
        r.feedback("never-issued", ok=True)
    with pytest.raises(InputError, match="model must be"):
        r.feedback(cid, ok=True, model="other")
    with pytest.raises(InputError, match="call_id"):
        r.feedback("", ok=True)
    assert r.decide(_req("   ")) is None  # blank prompts are not routed, so not logged
    for kwargs, match in (
        ({"privacy": "text"}, "give outcome_log"),
        ({"outcome_log": log, "privacy": "everything"}, "privacy must be"),
        ({"outcome_log": log, "explore": 1.0}, "explore must be"),
        ({"explore": 0.1}, "only makes sense with outcome_log"),
        ({"outcome_log": OutcomeLog(log, privacy="text"), "privacy": "features"}, "was made with"),
        ({"outcome_log": 42}, "a path or an OutcomeLog"),
    ):
        with pytest.raises(ConfigError, match=match):
            LearnedRouter("big", "small", embedder=WordHash(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must differ"):
        LearnedRouter("big", "big")


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (
            [{"v": 1, "type": "feedback", "call_id": "a", "model": "big", "score": 3.0, "ok": True}],
            "mixes ok",
        ),
        (
            [{"v": 2, "type": "decision", "call_id": "a", "strong": "s", "weak": "w", "prompt": "p"}],
            "version 2",
        ),
        ([{"v": 1, "type": "opinion", "call_id": "a"}], "unknown record type"),
        ([{"v": 1, "type": "decision", "call_id": "", "strong": "s", "weak": "w", "prompt": "p"}], "call_id"),
        ([{"v": 1, "type": "decision", "call_id": "a", "prompt": "p"}], "needs 'strong' and 'weak'"),
        ([{"v": 1, "type": "feedback", "call_id": "a", "model": "big"}], "without a score"),
        ([{"v": 1, "type": "feedback", "call_id": "a", "score": 1}], "needs 'model'"),
    ],
)
def test_malformed_outcome_logs_raise_typed_errors(tmp_path: Path, lines: list[dict], match: str) -> None:
    head = [
        {"v": 1, "type": "decision", "call_id": "z", "strong": "big", "weak": "small", "prompt": "p"},
        {"v": 1, "type": "feedback", "call_id": "z", "model": "big", "score": 0.5},
    ]
    f = tmp_path / "log.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in head + lines))
    with pytest.raises(OutcomeFormatError, match=match):
        read_outcomes(f)


def test_outcome_log_tolerates_a_torn_last_line_only(tmp_path: Path) -> None:
    good = [
        {"v": 1, "type": "decision", "call_id": "a", "strong": "big", "weak": "small", "prompt": "hello"},
        {"v": 1, "type": "feedback", "call_id": "a", "model": "small", "score": 1.0, "ok": True},
        {"v": 1, "type": "feedback", "call_id": "nobody", "model": "small", "score": 1.0},
        {
            "v": 1,
            "type": "decision",
            "call_id": "b",
            "strong": "big",
            "weak": "small",
            "prompt": "no feedback",
        },
    ]
    f = tmp_path / "log.jsonl"
    text = "".join(json.dumps(x) + "\n" for x in good)
    f.write_text(text + '{"v": 1, "type": "feedb')  # the writer died mid-line
    t = read_outcomes(f)
    assert len(t) == 1 and t.info["unmatched_feedback"] == 1 and t.info["without_feedback"] == 1
    f.write_text('{"v": 1, "type": "feedb\n' + text)
    with pytest.raises(OutcomeFormatError, match=":1: not JSON"):
        read_outcomes(f)
    f.write_text(text.replace('"strong": "big"', '"strong": "huge"', 1))
    with pytest.raises(OutcomeFormatError, match="name --strong and --weak"):
        read_outcomes(f)


def test_fit_refuses_missing_outcomes_unless_asked_and_the_scorer_can() -> None:
    prompts, strong, weak = _outcomes(40)
    w = weak.copy()
    w[3] = np.nan
    r = LearnedRouter("big", "small", embedder=WordHash())
    with pytest.raises(ConfigError, match="allow_missing"):
        r.fit(prompts, strong, w)
    r.fit(prompts, strong, w, allow_missing=True)
    assert r.info["partial_rows"] == 1
    with pytest.raises(ConfigError, match="needs both outcomes"):
        LearnedRouter("big", "small", scorer="knn", embedder=WordHash()).fit(
            prompts, strong, w, allow_missing=True
        )
    s = strong.copy()
    s[3] = np.nan
    with pytest.raises(ConfigError, match="neither outcome"):
        r.fit(prompts, s, w, allow_missing=True)
    with pytest.raises(ConfigError, match="numbers"):
        r.fit(prompts, ["x"] * 40, weak)
    with pytest.raises(ConfigError, match=r"vectors= .* and lengths="):
        r.fit(None, strong, weak)


# -- N endpoints ------------------------------------------------------------------------------------------


def _three_model_outcomes(n: int, seed: int = 0) -> tuple[list[str], dict[str, np.ndarray]]:
    """Generated outcomes: ``mini`` handles easy topics, ``mid`` also medium ones, ``max`` all."""
    rng = np.random.default_rng(seed)
    skill = {"mini": (0.9, 0.2, 0.05), "mid": (0.92, 0.9, 0.2), "max": (0.95, 0.93, 0.9)}
    prompts: list[str] = []
    out: dict[str, list[float]] = {m: [] for m in skill}
    for i in range(n):
        level = i % 3
        topic = str(rng.choice((EASY, MEDIUM, HARD)[level]))
        prompts.append(_prompt(topic, i))
        for m, p in skill.items():
            out[m].append(float(rng.random() < p[level]))
    return prompts, {m: np.array(v) for m, v in out.items()}


def test_cheapest_adequate_routes_each_prompt_to_the_cheapest_model_that_suffices() -> None:
    prompts, outcomes = _three_model_outcomes(450)
    costs = {"mini": 0.1, "mid": 1.0, "max": 10.0}
    r = CheapestAdequateRouter(["max", "mid", "mini"], costs=costs, tolerance=0.15, embedder=WordHash())
    r.fit(prompts, outcomes)
    test, truth = _three_model_outcomes(90, seed=3)
    chosen = r.route(test)
    level = np.arange(90) % 3
    for lv, model in enumerate(("mini", "mid", "max")):  # the cheapest model that handles each level
        picks = [chosen[i] for i in range(90) if level[i] == lv]
        assert picks.count(model) >= 0.9 * len(picks), (model, picks)
    quality = np.mean([truth[m][i] for i, m in enumerate(chosen)])
    cost = np.mean([costs[m] for m in chosen])
    assert quality >= truth["max"].mean() - 0.03 and cost < 0.4 * costs["max"]
    d = r.decide(_req(_prompt("pizza", 1)))
    assert d is not None and d.target == "mini" and d.policy == "cheapest-adequate"
    assert "cheapest adequate: mini" in d.reason and set(d.extra["predicted_quality"]) == {
        "max",
        "mid",
        "mini",
    }
    cheapest = CheapestAdequateRouter(["max", "mid", "mini"], costs=costs, tolerance=1.0, embedder=WordHash())
    assert set(cheapest.fit(prompts, outcomes).route(test)) == {"mini"}
    strict = CheapestAdequateRouter(
        ["max", "mid", "mini"], costs=costs, tolerance=1.0, min_quality=0.8, embedder=WordHash()
    )
    assert strict.fit(prompts, outcomes).route([_prompt("theorem", 5)]) == ["max"]


def test_cheapest_adequate_learns_from_one_outcome_per_prompt_and_prices_from_the_table() -> None:
    prompts, outcomes = _three_model_outcomes(900, seed=1)
    rng = np.random.default_rng(0)
    known = rng.integers(0, 3, size=900)  # each prompt was answered (and judged) by one model only
    sparse = {m: np.where(known == j, v, np.nan) for j, (m, v) in enumerate(outcomes.items())}
    models = ["gpt-4o", "gpt-4o-mini", "gpt-4.1-nano"]
    renamed = dict(zip(models[::-1], sparse.values(), strict=True))  # nano ~ mini, 4o-mini ~ mid, 4o ~ max
    r = CheapestAdequateRouter(models, tolerance=0.15, embedder=WordHash()).fit(prompts, renamed)
    assert r.call_cost("gpt-4o", 400) > r.call_cost("gpt-4o-mini", 400) > r.call_cost("gpt-4.1-nano", 400) > 0
    test, _ = _three_model_outcomes(90, seed=4)
    chosen = r.route(test)
    for lv, model in enumerate(("gpt-4.1-nano", "gpt-4o-mini", "gpt-4o")):
        picks = [chosen[i] for i in range(90) if i % 3 == lv]
        assert picks.count(model) >= 0.8 * len(picks), (model, picks)
    with pytest.raises(UnknownModelError):
        CheapestAdequateRouter(["gpt-4o", "my-local-model"])
    for kwargs, match in (
        ({"models": ["a"]}, "at least two"),
        ({"models": ["a", "a"]}, "at least two"),
        ({"models": ["a", "b"], "costs": {"a": 1.0}}, "exactly the models"),
        ({"models": ["a", "b"], "costs": {"a": 1.0, "b": -1}}, ">= 0"),
        ({"models": ["a", "b"], "costs": {"a": 1, "b": 2}, "tolerance": 2}, r"tolerance must be in \[0, 1\]"),
        ({"models": ["a", "b"], "costs": {"a": 1, "b": 2}, "prices": object()}, "not both"),
        ({"models": ["a", "b"], "prices": {"a": 1}}, "PriceTable"),
    ):
        with pytest.raises(ConfigError, match=match):
            CheapestAdequateRouter(**kwargs)  # type: ignore[arg-type]
    r2 = CheapestAdequateRouter(["a", "b"], costs={"a": 1, "b": 2}, embedder=WordHash())
    with pytest.raises(ConfigError, match="fit"):
        r2.route(["x"])
    with pytest.raises(ConfigError, match="no outcomes for"):
        r2.fit(["x y"], {"a": [1.0]})
    with pytest.raises(ConfigError, match="no known outcome of 'b'"):
        r2.fit(["x y", "z"], {"a": [1.0, 0.0], "b": [np.nan, np.nan]})
    with pytest.raises(ConfigError, match="values for 2 prompts"):
        r2.fit(["x y", "z"], {"a": [1.0], "b": [1.0, 0.0]})
