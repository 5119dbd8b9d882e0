"""Semantic routes: a request goes to the route whose example utterances it resembles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokenlean.errors import ConfigError, EmptyInputError
from tokenlean.routing.decision import Decision, OutputControl, prompt_text
from tokenlean.types import Request

__all__ = ["SemanticRoute", "SemanticRouter"]


@dataclass(frozen=True)
class SemanticRoute:
    """A named route with example utterances; ``threshold=None`` is fitted from the examples."""

    name: str
    target: str
    utterances: tuple[str, ...]
    threshold: float | None = None
    output: OutputControl | None = None


class SemanticRouter:
    """kNN over example utterances (semantic-router style), with per-route thresholds.

    A fitted threshold sits between how close a route's examples are to each other (leave one
    out, low percentile) and how close they come to other routes' examples (high percentile):
    a query must look like the route more than the route looks like its neighbours. With one
    route there is no negative side, so the in-route percentile minus a margin is used.
    """

    name = "semantic"

    def __init__(
        self, routes: Sequence[SemanticRoute], *, embedder: Any = None, k: int = 3, margin: float = 0.05
    ) -> None:
        if not routes:
            raise ConfigError("SemanticRouter needs at least one route")
        for r in routes:
            if not r.utterances:
                raise EmptyInputError(f"route {r.name!r} has no example utterances")
        self.routes = list(routes)
        self._embedder = embedder
        self.k = k
        self.margin = margin
        self._vecs: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self.thresholds: dict[str, float] = {}

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from tokenlean.embeddings import get_static_embedder

            self._embedder = get_static_embedder()
        return self._embedder

    def fit(self) -> SemanticRouter:
        texts = [u for r in self.routes for u in r.utterances]
        labels = np.array([i for i, r in enumerate(self.routes) for _ in r.utterances])
        vecs = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        sims = vecs @ vecs.T
        np.fill_diagonal(sims, -1.0)
        for i, r in enumerate(self.routes):
            if r.threshold is not None:
                self.thresholds[r.name] = r.threshold
                continue
            own = labels == i
            if own.sum() > 1:
                inside = sims[np.ix_(own, own)].max(axis=1)
                lo = float(np.percentile(inside, 10))
            else:
                lo = 0.6
            if (~own).any():
                outside = sims[np.ix_(own, ~own)].max(axis=1)
                hi = float(np.percentile(outside, 90))
                thr = (lo + hi) / 2 if lo > hi else lo - self.margin
            else:
                thr = lo - self.margin
            self.thresholds[r.name] = float(min(max(thr, 0.2), 0.95))
        self._vecs, self._labels = vecs, labels
        return self

    def scores(self, text: str) -> dict[str, float]:
        """Mean similarity of the ``k`` nearest examples of each route."""
        if self._vecs is None:
            self.fit()
        assert self._vecs is not None and self._labels is not None
        q = np.asarray(self.embedder.embed([text]), dtype=np.float32)[0]
        sims = self._vecs @ q
        out: dict[str, float] = {}
        for i, r in enumerate(self.routes):
            s = np.sort(sims[self._labels == i])[::-1][: self.k]
            out[r.name] = float(s.mean())
        return out

    def decide(self, request: Request) -> Decision | None:
        text = prompt_text(request)
        if not text.strip():
            return None
        scores = self.scores(text)
        best = max(scores, key=lambda n: scores[n])
        route = next(r for r in self.routes if r.name == best)
        thr = self.thresholds[best]
        if scores[best] < thr:
            return None
        return Decision(
            route.target,
            f"semantic route {best!r}: similarity {scores[best]:.2f} >= {thr:.2f}",
            self.name,
            score=scores[best],
            output=route.output,
        )
