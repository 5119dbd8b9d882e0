"""The hit decision after the guards: a scorer calibrated to a target false-hit rate.

A single cosine threshold is the whole decision in GPTCache, LangChain's semantic caches and redisvl.
Here the guards veto first, then a scorer decides. :class:`PairScorer` can be a small logistic
regression (numpy, Newton steps, L2 penalty) over pair features that cosine misses: content-word
overlap, character trigrams, the question word, length ratio, and optionally the element-wise
agreement of the two embeddings (``u*v``, ``|u-v|``, ``use_embedding=True``).

:func:`PairScorer.calibrate` picks the decision threshold from *out-of-fold* scores (k-fold: each
pair is scored by a model that never saw it), so the false-hit rate it promises holds on new pairs,
and it keeps the plain cosine whenever the learned combination does not beat it on those same
out-of-fold scores. On the Quora pairs it does not (the label noise at the top of the
non-duplicates caps every scorer), so the shipped ``default_scorer.json`` is a plain cosine
threshold after the guards, calibrated on one half of a question-group split
(``benchmarks/semantic_cache.py`` fits it and reports its false-hit rate on the other half).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from tokenlean.cache.guards import TextFacts
from tokenlean.errors import CalibrationError, ConfigError

__all__ = ["LEXICAL_FEATURES", "LabelledPair", "PairScorer", "lexical_features"]

LEXICAL_FEATURES: tuple[str, ...] = (
    "cosine",
    "cosine_sq",
    "content_jaccard",
    "content_containment",
    "trigram_jaccard",
    "length_ratio",
    "diff_words_log",
    "same_wh",
    "exact_norm",
)


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def lexical_features(cos: float, a: TextFacts, b: TextFacts) -> list[float]:
    """The hand-made features of one pair (see ``LEXICAL_FEATURES`` for their order)."""
    inter = len(a.content & b.content)
    small = min(len(a.content), len(b.content))
    la, lb = len(a.words), len(b.words)
    return [
        cos,
        cos * cos,
        _jaccard(a.content, b.content),
        inter / small if small else 1.0,
        _jaccard(a.trigrams, b.trigrams),
        min(la, lb) / max(la, lb, 1),
        math.log1p(len(a.content ^ b.content)),
        1.0 if a.wh == b.wh else 0.0,
        1.0 if a.norm == b.norm else 0.0,
    ]


@dataclass(frozen=True, slots=True)
class LabelledPair:
    """One labelled example: would serving ``cached``'s answer to ``query`` be right?"""

    query: str
    cached: str
    duplicate: bool


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


def _fit_logreg(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 30) -> np.ndarray:
    """L2-penalised logistic regression by Newton's method; returns weights with bias last."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = _sigmoid(xb @ w)
        grad = xb.T @ (p - y) + reg * w
        h = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(h, grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-7:
            break
    return w


def _threshold_for(scores: np.ndarray, labels: np.ndarray, max_rate: float) -> float:
    """Smallest threshold whose false-hit rate on these scores is ``<= max_rate``."""
    neg = np.sort(scores[~labels])[::-1]
    allowed = math.floor(max_rate * len(neg))  # false hits we may accept
    if allowed >= len(neg):
        return float(neg[-1]) if len(neg) else 0.0
    # a hit needs score >= t; the (allowed+1)-th highest negative must fall below t
    return float(np.nextafter(neg[allowed], np.inf))


@dataclass
class PairScorer:
    """Logistic regression over pair features; ``threshold`` is on its output probability.

    ``use_embedding`` adds ``u*v`` and ``|u-v|`` (needs the embedding model the weights were fit
    with: ``model`` records its name and ``dim``). Without fitted weights the scorer is the cosine
    itself, which keeps an uncalibrated cache working (and as strict as a single threshold).
    """

    weights: np.ndarray | None = None
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    threshold: float = 0.92
    use_embedding: bool = False
    model: str | None = None
    dim: int | None = None
    l2: float = 3.0
    force_logreg: bool = False
    max_false_hit_rate: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fitted(self) -> bool:
        return self.weights is not None

    def feature_matrix(
        self, u: np.ndarray, v: np.ndarray, facts_a: Sequence[TextFacts], facts_b: Sequence[TextFacts]
    ) -> np.ndarray:
        u = np.asarray(u, dtype=np.float32).reshape(len(facts_a), -1)
        v = np.asarray(v, dtype=np.float32).reshape(len(facts_b), -1)
        cos = np.einsum("ij,ij->i", u, v)
        lex = np.array(
            [lexical_features(float(c), fa, fb) for c, fa, fb in zip(cos, facts_a, facts_b, strict=True)],
            dtype=np.float64,
        ).reshape(len(facts_a), len(LEXICAL_FEATURES))
        if not self.use_embedding:
            return lex
        return np.hstack([lex, (u * v).astype(np.float64), np.abs(u - v).astype(np.float64)])

    def _check_dim(self, u: np.ndarray) -> None:
        if self.use_embedding and self.dim is not None and u.shape[-1] != self.dim:
            raise ConfigError(
                f"scorer was fitted on {self.dim}-d embeddings ({self.model}); got {u.shape[-1]}-d: recalibrate"
            )

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        if self.weights is None:
            return x[:, 0]  # cosine
        assert self.mean is not None and self.scale is not None
        z = (x - self.mean) / self.scale
        return _sigmoid(z @ self.weights[:-1] + self.weights[-1])

    def score(
        self, u: np.ndarray, v: np.ndarray, facts_a: Sequence[TextFacts], facts_b: Sequence[TextFacts]
    ) -> np.ndarray:
        """Probability-like scores (or cosine when unfitted), one per pair."""
        if self.fitted:
            self._check_dim(np.asarray(u))
        return self.score_matrix(self.feature_matrix(u, v, facts_a, facts_b))

    # -- fitting -----------------------------------------------------------------------------
    def _fit(self, x: np.ndarray, y: np.ndarray) -> None:
        self.mean = x.mean(axis=0)
        sd = x.std(axis=0)
        self.scale = np.where(sd > 1e-8, sd, 1.0)
        self.weights = _fit_logreg((x - self.mean) / self.scale, y.astype(np.float64), self.l2)

    def calibrate(
        self,
        x: np.ndarray,
        y: np.ndarray,
        vetoed: np.ndarray,
        max_false_hit_rate: float,
        *,
        folds: int = 5,
        seed: int = 0,
    ) -> dict[str, float]:
        """Fit on ``x``/``y`` and set ``threshold`` for ``max_false_hit_rate`` (out-of-fold).

        ``vetoed`` marks pairs a guard already rejects: they never hit, so they count as misses
        (for positives) and as safely rejected (for negatives), but are left out of the fit.
        """
        y = np.asarray(y, dtype=bool)
        vetoed = np.asarray(vetoed, dtype=bool)
        n_neg = int((~y).sum())
        n_pos = int(y.sum())
        if not 0 < max_false_hit_rate < 1:
            raise ConfigError("max_false_hit_rate must be in (0, 1)")
        if n_pos < 10 or n_neg < max(10, math.ceil(1 / max_false_hit_rate)):
            raise CalibrationError(
                f"need >= 10 duplicates and >= {max(10, math.ceil(1 / max_false_hit_rate))} non-duplicates "
                f"to measure a {max_false_hit_rate:.2%} false-hit rate; got {n_pos} and {n_neg}"
            )
        live = ~vetoed
        rng = np.random.default_rng(seed)
        fold_of = rng.integers(0, folds, size=len(y))
        oof = np.full(len(y), -np.inf)
        for k in range(folds):
            train = live & (fold_of != k)
            test = live & (fold_of == k)
            if not test.any() or y[train].all() or not y[train].any():
                continue
            self._fit(x[train], y[train])
            oof[test] = self.score_matrix(x[test])
        self._fit(x[live], y[live])
        self.threshold = _threshold_for(oof, y, max_false_hit_rate)
        hits = oof >= self.threshold
        # Model selection on the same out-of-fold footing: keep the plain cosine (after guards)
        # when the learned combination does not beat it (on small or noisy pair sets it may not).
        cos = np.where(live, x[:, 0], -np.inf)
        cos_t = _threshold_for(cos, y, max_false_hit_rate)
        cos_hits = cos >= cos_t
        if not self.force_logreg and cos_hits[y].mean() >= hits[y].mean():
            self.weights = self.mean = self.scale = None
            self.threshold, hits = cos_t, cos_hits
        self.max_false_hit_rate = max_false_hit_rate
        stats = {
            "scorer": 0.0 if self.weights is None else 1.0,
            "pairs": float(len(y)),
            "threshold": self.threshold,
            "true_hit_rate": float(hits[y].mean()) if n_pos else 0.0,
            "false_hit_rate": float(hits[~y].mean()) if n_neg else 0.0,
            "vetoed_duplicates": float(vetoed[y].mean()) if n_pos else 0.0,
            "vetoed_non_duplicates": float(vetoed[~y].mean()) if n_neg else 0.0,
        }
        self.info = stats
        return stats

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": None if self.weights is None else self.weights.tolist(),
            "mean": None if self.mean is None else self.mean.tolist(),
            "scale": None if self.scale is None else self.scale.tolist(),
            "threshold": self.threshold,
            "use_embedding": self.use_embedding,
            "model": self.model,
            "dim": self.dim,
            "l2": self.l2,
            "force_logreg": self.force_logreg,
            "max_false_hit_rate": self.max_false_hit_rate,
            "features": list(LEXICAL_FEATURES),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairScorer:
        def arr(key: str) -> np.ndarray | None:
            value = data.get(key)
            return None if value is None else np.asarray(value, dtype=np.float64)

        if data.get("features", list(LEXICAL_FEATURES)) != list(LEXICAL_FEATURES):
            raise ConfigError("scorer file was written for another feature set: recalibrate")
        return cls(
            weights=arr("weights"),
            mean=arr("mean"),
            scale=arr("scale"),
            threshold=float(data.get("threshold", 0.92)),
            use_embedding=bool(data.get("use_embedding", True)),
            model=data.get("model"),
            dim=data.get("dim"),
            l2=float(data.get("l2", 3.0)),
            force_logreg=bool(data.get("force_logreg", False)),
            max_false_hit_rate=data.get("max_false_hit_rate"),
            info=dict(data.get("info") or {}),
        )

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh)

    @classmethod
    def load(cls, path: str) -> PairScorer:
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    @classmethod
    def default(cls, model: str | None = None) -> PairScorer:
        """The scorer shipped with tokenlean (calibrated on Quora question pairs, all-MiniLM-L6-v2).

        Falls back to a plain cosine threshold of 0.92 (uncalibrated) for another embedding model.
        """
        try:
            text = resources.files("tokenlean.cache").joinpath("default_scorer.json").read_text("utf-8")
        except (FileNotFoundError, OSError):
            return cls(use_embedding=False)
        scorer = cls.from_dict(json.loads(text))
        if model is not None and scorer.model is not None and model != scorer.model:
            return cls(use_embedding=False)
        return scorer
