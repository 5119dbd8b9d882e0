"""Scorers: the models behind a learned router, each ordering prompts by how much the strong model helps.

Numpy only, no torch training loop: outcome data is small (thousands of rows) and the embedding
already does the heavy lifting, so a logistic head, a kNN vote or a low-rank bilinear (matrix
factorisation) model on top of frozen sentence vectors, plus a ridge model on the prompt's words
(``tokenlean.routing.lexical``), is enough and keeps fitting and scoring cheap on a CPU. Two
families: classifiers of "strong wins" (``logistic``, ``knn``, ``mf``) and *outcome* scorers that
learn from both models' qualities (``gap``, ``knn-gap``, ``lexical``, ``ensemble``).
``benchmarks/routing.py`` and ``benchmarks/routing_honest.py`` measure them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from tokenlean.errors import ConfigError, EmptyInputError
from tokenlean.routing.lexical import LexicalGapScorer

__all__ = [
    "EnsembleScorer",
    "KNNGapScorer",
    "KNNScorer",
    "LogisticScorer",
    "MatrixFactorizationScorer",
    "OutcomeScorer",
    "QualityGapScorer",
    "calibrate_threshold",
    "share_for_budget",
]

log = logging.getLogger("tokenlean.routing.scorers")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _nearest(
    queries: np.ndarray, keys: np.ndarray, k: int, block: int = 512
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """The ``k`` keys most similar (dot product) to each query: ``(rows, similarities, indices)``
    per block of queries, so memory stays bounded when thousands of prompts are scored at once."""
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ keys.T
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        yield slice(start, start + block), np.take_along_axis(sims, idx, axis=1), idx


class LogisticScorer:
    """L2-regularised logistic regression, solved exactly by Newton's method (IRLS).

    Soft targets in [0, 1] and sample weights are allowed. The feature count is small (an
    embedding, a few hundred), so a Newton step (a d x d solve) is cheap and ten of them reach
    the optimum that a first-order method only approaches; the intercept is not penalised.
    The penalty is ``l2/2 * |w|^2`` on the *mean* loss, i.e. sklearn's ``C = 1 / (l2 * n)``.
    """

    kind = "logistic"

    def __init__(self, l2: float = 1e-2, max_iter: int = 30, tol: float = 1e-7) -> None:
        self.l2, self.max_iter, self.tol = l2, max_iter, tol
        self.w: np.ndarray | None = None
        self.b = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> LogisticScorer:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        n, d = x.shape
        wt = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
        wt = wt / wt.mean()
        xa = np.hstack([x, np.ones((n, 1))])
        reg = np.full(d + 1, self.l2)
        reg[-1] = 1e-9  # the intercept is free
        ybar = float(np.average(y, weights=wt))
        theta = np.zeros(d + 1)
        theta[-1] = math.log((ybar + 1e-3) / (1 - ybar + 1e-3))

        def loss(t: np.ndarray) -> float:
            z = xa @ t
            # mean weighted cross-entropy, written stably: log(1 + e^z) - y z
            return float(np.mean(wt * (np.logaddexp(0.0, z) - y * z)) + 0.5 * np.sum(reg * t * t))

        current = loss(theta)
        for _ in range(self.max_iter):
            p = _sigmoid(xa @ theta)
            grad = xa.T @ (wt * (p - y)) / n + reg * theta
            hess = (xa * (wt * p * (1 - p))[:, None]).T @ xa / n + np.diag(reg)
            try:
                step = np.linalg.solve(hess, grad)
            except np.linalg.LinAlgError:
                step = np.linalg.lstsq(hess, grad, rcond=None)[0]
            t = 1.0
            while t > 1e-4:  # backtracking: a full Newton step can overshoot far from the optimum
                candidate = theta - t * step
                new = loss(candidate)
                if new <= current:
                    break
                t *= 0.5
            else:
                break
            theta, improvement, current = candidate, current - new, new
            if improvement < self.tol:
                break
        self.w, self.b = theta[:-1], float(theta[-1])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.w is not None, "fit() first"
        return _sigmoid(np.asarray(x, dtype=np.float64) @ self.w + self.b)


class KNNScorer:
    """Similarity-weighted vote of the ``k`` nearest training prompts (cosine on unit vectors)."""

    kind = "knn"

    def __init__(self, k: int = 25, temperature: float = 0.05) -> None:
        self.k, self.temperature = k, temperature
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None
        self.prior = 0.5

    def fit(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> KNNScorer:
        self.x = np.asarray(x, dtype=np.float32)
        self.y = np.asarray(y, dtype=np.float32)
        self.prior = float(self.y.mean())
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.x is not None and self.y is not None, "fit() first"
        q = np.asarray(x, dtype=np.float32)
        out = np.empty(len(q), dtype=np.float32)
        for rows, top, idx in _nearest(q, self.x, min(self.k, len(self.x))):
            w = np.exp((top - top.max(axis=1, keepdims=True)) / self.temperature)
            # one pseudo-count of the prior keeps sparse neighbourhoods from extreme votes
            out[rows] = (np.sum(w * self.y[idx], axis=1) + self.prior) / (np.sum(w, axis=1) + 1.0)
        return out


class MatrixFactorizationScorer:
    """RouteLLM's matrix-factorisation router, numpy edition.

    ``s(m, q) = u_m · (P q) + b_m``; the strong-win probability is ``sigmoid(s(strong) - s(weak))``
    trained with logistic loss. With two models this is a rank-``dim`` bilinear logistic model,
    which regularises better than a full-width logistic head on small outcome sets.
    """

    kind = "mf"

    def __init__(
        self, dim: int = 32, l2: float = 1e-3, epochs: int = 400, lr: float = 0.02, seed: int = 0
    ) -> None:
        self.dim, self.l2, self.epochs, self.lr, self.seed = dim, l2, epochs, lr, seed
        self.p: np.ndarray | None = None
        self.u: np.ndarray | None = None
        self.b = 0.0

    def fit(
        self, x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None
    ) -> MatrixFactorizationScorer:
        rng = np.random.default_rng(self.seed)
        n, d = x.shape
        wt = np.ones(n) if weight is None else weight / weight.mean()
        p = rng.normal(0, 1 / math.sqrt(d), (d, self.dim))
        u = rng.normal(0, 0.1, self.dim)  # u_strong - u_weak
        b = 0.0
        params = [p, u]
        ms = [np.zeros_like(a) for a in params]
        vs = [np.zeros_like(a) for a in params]
        mb = vb = 0.0
        for t in range(1, self.epochs + 1):
            h = x @ p
            z = h @ u + b
            g = wt * (_sigmoid(z) - y) / n
            gu = h.T @ g + self.l2 * u
            gp = x.T @ np.outer(g, u) + self.l2 * p
            gb = float(g.sum())
            for i, grad in enumerate((gp, gu)):
                ms[i] = 0.9 * ms[i] + 0.1 * grad
                vs[i] = 0.999 * vs[i] + 0.001 * grad * grad
                params[i] -= self.lr * (ms[i] / (1 - 0.9**t)) / (np.sqrt(vs[i] / (1 - 0.999**t)) + 1e-8)
            mb = 0.9 * mb + 0.1 * gb
            vb = 0.999 * vb + 0.001 * gb * gb
            b -= self.lr * (mb / (1 - 0.9**t)) / (math.sqrt(vb / (1 - 0.999**t)) + 1e-8)
        self.p, self.u, self.b = params[0], params[1], b
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.p is not None and self.u is not None, "fit() first"
        return _sigmoid((x @ self.p) @ self.u + self.b)


class OutcomeScorer(Protocol):
    """A scorer fitted on both models' outcomes (not a win label): ``gap``, ``knn-gap``, ``ensemble``.

    ``lexical`` follows the same protocol with prompt texts in place of vectors (``uses_text``).
    """

    kind: str
    needs_outcomes: bool

    def fit_outcomes(self, x: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> Any: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...


class QualityGapScorer:
    """Expected quality gain of the strong model: ``E[strong | x] - E[weak | x]``, two logistic heads.

    Why not one classifier of "strong wins"? On sets where the weak model is often right and
    the strong one wrong (MMLU has many such rows), a win/lose label throws that away, and ties (both
    right, the majority) become noise. Routing wants the *expected gain* of paying for the
    strong model, which is the difference of the two models' expected qualities; each is
    learned with a logistic head on soft targets (0/1 correctness or a judge score scaled to
    [0, 1]). Regularisation scales like 1/n (``c`` = sklearn's ``C``), so small outcome sets
    (MT-Bench's 80 prompts) are smoothed hard and large ones are not.
    """

    kind = "gap"
    needs_outcomes = True
    accepts_missing = True  # each head learns from the rows where its model's outcome is known

    def __init__(self, c: float = 0.1) -> None:
        self.c = c
        self.heads: tuple[LogisticScorer, LogisticScorer] | None = None

    def fit_outcomes(self, x: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> QualityGapScorer:
        """Fit both heads; a NaN outcome means "not known" and leaves that row out of its head."""
        heads = []
        for y in (np.asarray(strong, dtype=np.float64), np.asarray(weak, dtype=np.float64)):
            known = np.isfinite(y)
            if not known.any():
                raise ConfigError("the gap scorer needs at least one known outcome of each model")
            l2 = 1.0 / (self.c * max(1, int(known.sum())))
            heads.append(LogisticScorer(l2=l2).fit(x[known] if not known.all() else x, y[known]))
        self.heads = (heads[0], heads[1])
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.heads is not None, "fit() first"
        return self.heads[0].predict(x) - self.heads[1].predict(x)


class KNNGapScorer:
    """Mean quality gain (strong - weak) of the ``k`` most similar training prompts.

    A local average with a wide neighbourhood: outcome data is noisy per prompt (one sample of
    each model), so what generalises is the gain of a *kind* of prompt (a subject, a task type).
    Similarity is cosine in a partly whitened space: vectors are centred on the training mean
    (sentence embeddings share a large common direction that otherwise dominates cosine) and
    projected on their top ``components`` principal axes (fewer on small sets), each scaled by 1/sqrt of its spread,
    so a few dominant directions do not decide every neighbourhood (``benchmarks/routing.py``).
    ``k`` defaults to about a twentieth of the training set (5 to 100);
    one prior-weighted pseudo-neighbour shrinks sparse areas.
    """

    kind = "knn-gap"
    needs_outcomes = True

    def __init__(self, k: int | None = None, components: int = 128) -> None:
        self.k = k
        self.components = components
        self.x: np.ndarray | None = None
        self.gap: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.proj: np.ndarray | None = None
        self.prior = 0.0

    def _unit(self, x: np.ndarray) -> np.ndarray:
        assert self.mean is not None and self.proj is not None
        z = (np.asarray(x, dtype=np.float32) - self.mean) @ self.proj
        return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-9)

    def fit_outcomes(self, x: np.ndarray, strong: np.ndarray, weak: np.ndarray) -> KNNGapScorer:
        x = np.asarray(x, dtype=np.float32)
        self.mean = x.mean(axis=0)
        centred = x - self.mean
        # few rows cannot estimate many axes: at most one per 20 rows, and never fewer than 8
        d = min(self.components, max(8, len(x) // 20), centred.shape[1])
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        spread = np.sqrt(sv[:d] / math.sqrt(max(1, len(x)))) + 1e-6
        self.proj = (vt[:d].T / spread).astype(np.float32)
        self.x = self._unit(x)
        self.gap = (np.asarray(strong) - np.asarray(weak)).astype(np.float32)
        self.prior = float(self.gap.mean())
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        assert self.x is not None and self.gap is not None, "fit() first"
        n = len(self.x)
        k = min(n, self.k if self.k is not None else max(5, min(100, n // 20)))
        out = np.empty(len(x), dtype=np.float64)
        for rows, top, idx in _nearest(self._unit(x), self.x, k):
            w = np.maximum(top, 0.0)
            out[rows] = (np.sum(w * self.gap[idx], axis=1) + self.prior) / (np.sum(w, axis=1) + 1.0)
        return out


class EnsembleScorer:
    """Average of member scorers, each standardised by its scores on the training prompts.

    Members disagree in scale (a probability difference, a neighbourhood mean), so each score
    becomes a z-score against the member's own training distribution before averaging; unlike
    ranks, z-scores keep *how far* apart prompts are, which is what separates a new prompt from
    a cluster of near-ties on small outcome sets. Different views of the data averaged are
    steadier than any one alone. Default members: ``gap`` and ``knn-gap`` on the embedding, and
    ``lexical`` on the prompt's words (``tokenlean.routing.lexical``), which joins only when
    ``texts`` are given and it proved ``reliable`` on the training rows (on small sets it
    abstains); ``benchmarks/routing.py`` measures each member and the blend.
    """

    kind = "ensemble"
    needs_outcomes = True
    takes_texts = True
    accepts_missing = True
    #: Fewest rows with *both* outcomes for a member that needs both (``knn-gap``, ``lexical``) to vote.
    min_complete = 20

    def __init__(self, members: Sequence[Any] | None = None) -> None:
        self.members: list[Any] = (
            list(members) if members is not None else [QualityGapScorer(), KNNGapScorer(), LexicalGapScorer()]
        )
        self._scale: list[tuple[float, float] | None] = []

    @staticmethod
    def _input(member: Any, x: np.ndarray, texts: Sequence[str] | None) -> Any:
        return texts if getattr(member, "uses_text", False) else x

    def fit_outcomes(
        self, x: np.ndarray, strong: np.ndarray, weak: np.ndarray, texts: Sequence[str] | None = None
    ) -> EnsembleScorer:
        self._scale = []
        strong, weak = np.asarray(strong, dtype=np.float64), np.asarray(weak, dtype=np.float64)
        complete = np.isfinite(strong) & np.isfinite(weak)
        rows = np.flatnonzero(complete)
        for m in self.members:
            inp = self._input(m, x, texts)
            if inp is None:  # a text member without texts abstains
                self._scale.append(None)
                continue
            if len(rows) == len(complete) or getattr(m, "accepts_missing", False):
                m.fit_outcomes(inp, strong, weak)
            elif len(rows) >= self.min_complete:  # a gain needs both outcomes: those rows only
                sub = inp[rows] if isinstance(inp, np.ndarray) else [inp[i] for i in rows]
                m.fit_outcomes(sub, strong[rows], weak[rows])
            else:
                log.info("ensemble: %s member left out (%d rows with both outcomes)", m.kind, len(rows))
                self._scale.append(None)
                continue
            if not getattr(m, "reliable", True):
                log.info("ensemble: %s member left out (evidence %.1f)", m.kind, getattr(m, "evidence", 0.0))
                self._scale.append(None)
                continue
            train = m.predict(inp)
            self._scale.append((float(train.mean()), float(train.std()) or 1.0))
        return self

    @property
    def active(self) -> list[str]:
        """The kinds of the members that vote (fitted, and reliable where they check)."""
        return [m.kind for m, sc in zip(self.members, self._scale, strict=True) if sc is not None]

    def predict(self, x: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        if not self._scale or all(sc is None for sc in self._scale):
            raise ConfigError("fit() the ensemble first")
        parts = []
        for m, sc in zip(self.members, self._scale, strict=True):
            if sc is None:
                continue
            inp = self._input(m, x, texts)
            if inp is None:
                raise ConfigError(f"the ensemble's {m.kind} member was fitted on texts: pass texts=")
            parts.append((m.predict(inp) - sc[0]) / sc[1])
        return np.mean(parts, axis=0)


SCORERS: dict[str, Callable[[], Any]] = {
    "logistic": LogisticScorer,
    "knn": KNNScorer,
    "mf": MatrixFactorizationScorer,
    "gap": QualityGapScorer,
    "knn-gap": KNNGapScorer,
    "ensemble": EnsembleScorer,
    "lexical": LexicalGapScorer,
}


def calibrate_threshold(scores: Sequence[float] | np.ndarray, strong_share: float) -> float:
    """The score threshold that sends ``strong_share`` of these prompts to the strong model."""
    if not 0.0 <= strong_share <= 1.0:
        raise ConfigError(f"strong_share must be in [0, 1], got {strong_share}")
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise EmptyInputError("need scores to calibrate a threshold")
    if strong_share <= 0:
        return float(np.nextafter(s.max(), np.inf))
    if strong_share >= 1:
        return float(s.min())
    return float(np.quantile(s, 1.0 - strong_share))


def share_for_budget(budget_per_call: float, weak_cost: float, strong_cost: float) -> float:
    """Strong-call share a per-call cost budget affords: ``w + s*(c_s - c_w) <= budget``."""
    if strong_cost <= weak_cost:
        raise ConfigError("the strong model must cost more than the weak one")
    return float(min(1.0, max(0.0, (budget_per_call - weak_cost) / (strong_cost - weak_cost))))
