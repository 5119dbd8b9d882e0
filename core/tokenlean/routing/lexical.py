"""What a prompt's *words* say about who should answer it: a TF-IDF ridge model of the strong model's gain.

A sentence embedding is a blurred summary: "Statement 1 | Statement 2", a statute's name or a
unit of measure are each a few tokens in a mean of hundreds, yet they tell which kind of
question this is, and kinds of questions are what routing generalises over (the cheap model is
reliably fine on some and reliably lost on others). A linear model on the words and word pairs
themselves sees them sharply, and it errs on other prompts than the embedding scorers do, so
the two together route better than either (``benchmarks/routing.py`` measures it).

Words need many examples to mean anything: on a small outcome set (MT-Bench's) a word model is
noise, and averaged in (as a z-score, like every ensemble member) it would dilute the embedding
scorers. So the model checks itself when it is fitted: cross-validated on its
own training rows, do its predictions correlate with the gain beyond chance (t >= ``min_t``)? The
ensemble leaves it out when not (``reliable``).

Numpy only: a vocabulary of the training prompts' words and word pairs seen at least ``min_df``
times, sublinear TF-IDF rows of unit length in a compressed-sparse-row layout, and ridge regression
solved by conjugate gradients (matrix-vector products by ``np.bincount``), so no scikit-learn or
scipy is needed on the request path; a prediction is a tokenisation and a few dictionary lookups.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from tokenlean.errors import ConfigError, EmptyInputError

__all__ = ["LexicalGapScorer", "prompt_terms"]

# Words of two or more letters or digits (scikit-learn's default), lower-cased. Not
# ``tokenlean._text.WORD_PATTERN``: that one keeps one-letter words, and here the answer labels
# "A", "B", ... in every multiple-choice prompt would only add common, uninformative terms.
_WORD = re.compile(r"(?u)\b\w\w+\b")


def prompt_terms(text: str) -> list[str]:
    """The words of ``text`` and its adjacent word pairs, lower-cased."""
    words = _WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in pairwise(words)]


@dataclass(slots=True)
class _Rows:
    """Sparse rows (CSR without scipy): what the ridge solver needs and nothing else."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    n_cols: int
    _row_ids: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._row_ids = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def dot(self, v: np.ndarray) -> np.ndarray:
        """``X @ v``."""
        return np.bincount(self._row_ids, weights=self.data * v[self.indices], minlength=self.n_rows)

    def tdot(self, u: np.ndarray) -> np.ndarray:
        """``X.T @ u``."""
        return np.bincount(self.indices, weights=self.data * u[self._row_ids], minlength=self.n_cols)

    def col_means(self) -> np.ndarray:
        return self.tdot(np.full(self.n_rows, 1.0 / max(1, self.n_rows)))

    def take(self, rows: np.ndarray) -> _Rows:
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        pick = np.concatenate(
            [np.arange(s, e, dtype=np.int64) for s, e in zip(starts, ends, strict=True)]
            or [np.zeros(0, dtype=np.int64)]
        )
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return _Rows(indptr, self.indices[pick], self.data[pick], self.n_cols)


class _Tfidf:
    """Vocabulary and IDF of a set of prompts; rows are ``(1 + log tf) * idf``, unit length."""

    def __init__(self, docs: Sequence[list[str]], min_df: int) -> None:
        df: Counter[str] = Counter()
        for terms in docs:
            df.update(set(terms))
        kept = sorted(t for t, c in df.items() if c >= min_df)
        self.vocab = {t: i for i, t in enumerate(kept)}
        n = len(docs)
        self.idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in kept], dtype=np.float64)

    def row(self, terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """One prompt's nonzero columns and values (empty when no term is in the vocabulary)."""
        counts = Counter(i for i in map(self.vocab.get, terms) if i is not None)
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        val = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
        val *= self.idf[idx]
        if len(val):
            val /= np.linalg.norm(val)
        return idx, val

    def rows(self, docs: Sequence[list[str]]) -> _Rows:
        parts = [self.row(terms) for terms in docs]
        lengths = [len(idx) for idx, _ in parts]
        empty = np.zeros(0)
        return _Rows(
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            np.concatenate([idx for idx, _ in parts] or [empty]).astype(np.int64),
            np.concatenate([val for _, val in parts] or [empty]),
            len(self.vocab),
        )


def _ridge(x: _Rows, y: np.ndarray, alpha: float, max_iter: int, tol: float) -> tuple[np.ndarray, float]:
    """``argmin |y - Xw - b|^2 + alpha |w|^2`` (intercept free) by conjugate gradients.

    Centring ``X`` implicitly (``Xc v = Xv - (mu . v)``) keeps the data sparse; the normal
    equations ``(Xc'Xc + alpha I) w = Xc'(y - ybar)`` are symmetric positive definite, which is
    what CG needs, and well conditioned for the ``alpha`` used here (tens of iterations).
    """
    mu = x.col_means()
    ybar = float(y.mean())

    def op(v: np.ndarray) -> np.ndarray:
        u = x.dot(v) - float(mu @ v)  # sums to zero, so X'u = Xc'u
        return x.tdot(u) + alpha * v

    w = np.zeros(x.n_cols)
    r = x.tdot(y - ybar)
    p = r.copy()
    rr = float(r @ r)
    stop = (tol**2) * rr
    for _ in range(max_iter):
        if rr <= stop or rr == 0.0:
            break
        ap = op(p)
        step = rr / float(p @ ap)
        w += step * p
        r -= step * ap
        new = float(r @ r)
        p = r + (new / rr) * p
        rr = new
    return w, ybar - float(mu @ w)


class LexicalGapScorer:
    """Expected gain of the strong model from a prompt's words: ridge regression on TF-IDF terms.

    Fitted on texts, not vectors (``uses_text``): ``fit_outcomes(texts, strong, weak)`` and
    ``predict(texts)``. ``alpha`` is the ridge penalty on the summed squared error, so it weighs
    less as outcome data grows. ``reliable`` says whether, cross-validated in ``folds`` folds on
    the training rows, the predictions correlated with the gain at ``t >= min_t`` (``evidence``
    is that t); ``EnsembleScorer`` averages it in only then.
    """

    kind = "lexical"
    needs_outcomes = True
    uses_text = True

    def __init__(
        self,
        alpha: float = 3.0,
        *,
        min_df: int = 2,
        min_t: float = 3.0,
        folds: int = 5,
        max_iter: int = 300,
        tol: float = 1e-4,
        seed: int = 0,
    ) -> None:
        if alpha <= 0 or min_df < 1 or folds < 2:
            raise ConfigError("LexicalGapScorer needs alpha > 0, min_df >= 1 and folds >= 2")
        self.alpha, self.min_df, self.min_t, self.folds = alpha, min_df, min_t, folds
        self.max_iter, self.tol, self.seed = max_iter, tol, seed
        self._tfidf: _Tfidf | None = None
        self.w: np.ndarray | None = None
        self.b = 0.0
        self.evidence = 0.0
        self.reliable = False

    def fit_outcomes(self, texts: Sequence[str], strong: np.ndarray, weak: np.ndarray) -> LexicalGapScorer:
        texts = list(texts)
        if not texts:
            raise EmptyInputError("no prompts to fit the lexical scorer on")
        if any(not isinstance(t, str) for t in texts):
            raise ConfigError("the lexical scorer is fitted on prompt texts, not vectors")
        gain = np.asarray(strong, dtype=np.float64) - np.asarray(weak, dtype=np.float64)
        if len(gain) != len(texts):
            raise ConfigError("texts, strong and weak must have the same length")
        docs = [prompt_terms(t) for t in texts]
        self._tfidf = _Tfidf(docs, self.min_df)
        x = self._tfidf.rows(docs)
        self.evidence = self._cross_validated_t(x, gain)
        self.reliable = self.evidence >= self.min_t
        self.w, self.b = _ridge(x, gain, self.alpha, self.max_iter, self.tol)
        return self

    def _cross_validated_t(self, x: _Rows, gain: np.ndarray) -> float:
        """t statistic of the correlation between out-of-fold predictions and the gain.

        The vocabulary and IDF come from all training rows (no outcomes involved); each fold's
        weights are fitted without that fold's outcomes.
        """
        n = x.n_rows
        if n < 2 * self.folds or x.n_cols == 0 or float(gain.std()) == 0.0:
            return 0.0
        fold = np.random.default_rng(self.seed).permutation(n) % self.folds
        oof = np.empty(n)
        for k in range(self.folds):
            test, train = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
            w, b = _ridge(x.take(train), gain[train], self.alpha, self.max_iter, self.tol)
            oof[test] = x.take(test).dot(w) + b
        if float(oof.std()) == 0.0:
            return 0.0
        r = float(np.corrcoef(oof, gain)[0, 1])
        return r * math.sqrt(n - 2) / math.sqrt(max(1e-12, 1.0 - r * r))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        if self._tfidf is None or self.w is None:
            raise ConfigError("fit() the lexical scorer first")
        w, tfidf = self.w, self._tfidf
        out = np.empty(len(texts))
        for k, text in enumerate(texts):  # per prompt: no sparse matrix for a request of one
            idx, val = tfidf.row(prompt_terms(text))
            out[k] = float(val @ w[idx]) + self.b
        return out
