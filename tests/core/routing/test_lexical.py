"""The lexical (words) member of the learned router: TF-IDF rows, the CG ridge, the reliability gate."""

from __future__ import annotations

import numpy as np
import pytest

from tokenlean.errors import ConfigError, EmptyInputError
from tokenlean.routing.learned import LearnedRouter
from tokenlean.routing.lexical import LexicalGapScorer, _ridge, _Rows, _Tfidf, prompt_terms
from tokenlean.routing.scorers import EnsembleScorer, KNNGapScorer, QualityGapScorer
from tokenlean.types import Message, Request

TOPICS_HARD = ("integral", "eigenvalue", "theorem", "derivative", "lemma", "manifold")
TOPICS_EASY = ("banana", "weather", "greeting", "colour", "holiday", "pizza")


def _texts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Prompts whose topic word decides whether the cheap model fails (with 10% label noise)."""
    rng = np.random.default_rng(seed)
    texts, strong, weak = [], [], []
    filler = ("please", "answer", "briefly", "now", "thanks", "kindly", "quickly", "today")
    for i in range(n):
        hard = i % 2 == 0
        topic = (TOPICS_HARD if hard else TOPICS_EASY)[rng.integers(6)]
        words = [*rng.choice(filler, 4), topic, *rng.choice(filler, 3)]
        texts.append(f"Question {i}: " + " ".join(words))
        strong.append(1.0)
        wrong = hard != (rng.random() < 0.1)
        weak.append(0.0 if wrong else 1.0)
    return texts, np.array(strong), np.array(weak)


def _dense(rows: _Rows) -> np.ndarray:
    out = np.zeros((rows.n_rows, rows.n_cols))
    for i in range(rows.n_rows):
        lo, hi = rows.indptr[i], rows.indptr[i + 1]
        out[i, rows.indices[lo:hi]] = rows.data[lo:hi]
    return out


def test_terms_are_lowercased_words_and_adjacent_pairs() -> None:
    assert prompt_terms("Statement 1 | Statement 2: a B") == [
        "statement",
        "statement",
        "statement statement",
    ]
    assert prompt_terms("Why does X-ray fail?") == [
        "why",
        "does",
        "ray",
        "fail",
        "why does",
        "does ray",
        "ray fail",
    ]


def test_tfidf_rows_are_unit_length_and_sparse_products_match_dense() -> None:
    docs = [
        prompt_terms(t) for t in ("red apple pie", "green apple", "red car", "blue sky above", "red apple")
    ]
    tfidf = _Tfidf(docs, min_df=2)
    assert set(tfidf.vocab) == {"red", "apple", "red apple"}  # seen in at least two prompts
    rows = tfidf.rows(docs)
    dense = _dense(rows)
    norms = np.linalg.norm(dense, axis=1)
    assert np.allclose(norms[[0, 1, 2, 4]], 1.0) and norms[3] == 0.0  # no known word: an empty row
    v = np.arange(1.0, rows.n_cols + 1)
    u = np.arange(1.0, rows.n_rows + 1)
    assert np.allclose(rows.dot(v), dense @ v)
    assert np.allclose(rows.tdot(u), dense.T @ u)
    pick = np.array([4, 0, 3])
    assert np.allclose(_dense(rows.take(pick)), dense[pick])


def test_conjugate_gradient_ridge_matches_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    dense = rng.random((60, 12)) * (rng.random((60, 12)) < 0.4)
    idx = [np.flatnonzero(r) for r in dense]
    rows = _Rows(
        np.concatenate([[0], np.cumsum([len(i) for i in idx])]).astype(np.int64),
        np.concatenate(idx).astype(np.int64),
        np.concatenate([dense[k, i] for k, i in enumerate(idx)]),
        12,
    )
    y = dense @ rng.normal(size=12) + 0.3 + rng.normal(scale=0.1, size=60)
    w, b = _ridge(rows, y, alpha=0.5, max_iter=500, tol=1e-10)
    xc = dense - dense.mean(axis=0)
    w_exact = np.linalg.solve(xc.T @ xc + 0.5 * np.eye(12), xc.T @ (y - y.mean()))
    assert np.allclose(w, w_exact, atol=1e-6)
    assert b == pytest.approx(y.mean() - dense.mean(axis=0) @ w_exact, abs=1e-6)


def test_lexical_scorer_learns_which_words_need_the_strong_model_and_checks_itself() -> None:
    texts, strong, weak = _texts(600)
    lex = LexicalGapScorer().fit_outcomes(texts[:500], strong[:500], weak[:500])
    assert lex.reliable and lex.evidence > 10
    scores = lex.predict(texts[500:])
    hard = np.array([any(t in s for t in TOPICS_HARD) for s in texts[500:]])
    assert scores[hard].min() > scores[~hard].max()  # every unseen hard prompt ranks above every easy one
    # Outcomes unrelated to the words: the cross-validated check finds nothing, the ensemble will skip it.
    shuffled = np.random.default_rng(2).permutation(weak[:500])
    noise = LexicalGapScorer().fit_outcomes(texts[:500], strong[:500], shuffled)
    assert not noise.reliable and noise.evidence < 3.0
    tiny = LexicalGapScorer().fit_outcomes(texts[:6], strong[:6], weak[:6])  # too few rows to check
    assert not tiny.reliable and tiny.evidence == 0.0


def test_lexical_scorer_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        LexicalGapScorer(alpha=0)
    with pytest.raises(ConfigError, match="fit"):
        LexicalGapScorer().predict(["x"])
    with pytest.raises(EmptyInputError):
        LexicalGapScorer().fit_outcomes([], np.array([]), np.array([]))
    with pytest.raises(ConfigError, match="texts"):
        LexicalGapScorer().fit_outcomes(np.ones((3, 2)), np.ones(3), np.zeros(3))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="same length"):
        LexicalGapScorer().fit_outcomes(["a b", "c d"], np.ones(3), np.zeros(3))


def test_ensemble_takes_the_words_in_only_when_they_proved_reliable() -> None:
    texts, strong, weak = _texts(400)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 8))  # vectors that know nothing: the words carry the signal
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ens = EnsembleScorer().fit_outcomes(x, strong, weak, texts=texts)
    assert ens.active == ["gap", "knn-gap", "lexical"]
    with pytest.raises(ConfigError, match="texts="):
        ens.predict(x)
    with_words = ens.predict(x, texts=texts)
    hard = np.array([i % 2 == 0 for i in range(400)])
    assert with_words[hard].mean() > with_words[~hard].mean()
    no_texts = EnsembleScorer().fit_outcomes(x, strong, weak)  # the text member abstains
    assert no_texts.active == ["gap", "knn-gap"] and no_texts.predict(x).shape == (400,)
    noise = EnsembleScorer([QualityGapScorer(), KNNGapScorer(), LexicalGapScorer()]).fit_outcomes(
        x, strong, rng.permutation(weak), texts=texts
    )
    assert "lexical" not in noise.active
    with pytest.raises(ConfigError, match="fit"):
        EnsembleScorer().predict(x)


def test_learned_router_feeds_prompts_to_the_words_member() -> None:
    class Blind:
        """An embedder that sees nothing: only the words can route."""

        name, dim = "blind", 4

        def embed(self, texts: list[str]) -> np.ndarray:
            rng = np.random.default_rng(len(texts))
            return rng.normal(size=(len(texts), 4)).astype(np.float32)

    texts, strong, weak = _texts(400)
    r = LearnedRouter("big", "small", embedder=Blind(), segments=False).fit(texts, strong, weak)
    assert r.scorer.active == ["gap", "knn-gap", "lexical"]
    s = r.score(
        ["Question 9999: please answer the eigenvalue now", "Question 9998: please answer the pizza now"]
    )
    assert s[0] > s[1]

    class Unused:
        name, dim = "unused", 4

        def embed(self, texts: list[str]) -> np.ndarray:
            raise AssertionError("a words-only router must not embed")

    words_only = LearnedRouter("big", "small", scorer="lexical", embedder=Unused()).fit(texts, strong, weak)
    hard, easy = words_only.score(["the lemma please", "the holiday please"])
    assert hard - easy > 0.5  # gains are in [-1, 1]: the topic word moves it most of the way
    d = words_only.calibrate(texts, strong_share=0.5)
    assert words_only.decide(Request([Message("user", "about the manifold")])).target == "big"  # type: ignore[union-attr]
    assert d == words_only.threshold
