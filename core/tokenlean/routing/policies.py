"""Quality policies: which *model* should answer, and why.

A policy looks at a ``Request`` and returns a ``Decision`` (target, reason, score, output
control) or ``None`` for "no opinion" so policies chain: cheap rules first, then semantic routes,
then a learned router, then the router's default. Every decision carries a human-readable
``reason``; a decision nobody can explain cannot be debugged or trusted.

The learned routers are numpy only (no torch training loop): outcome data is small (thousands of
rows) and the embedding already does the heavy lifting, so a logistic head, a kNN vote or a
low-rank bilinear (matrix factorisation) model on top of frozen sentence vectors (static ones by
default), plus a ridge model on the prompt's words, is enough, fits in seconds and predicts in
well under a millisecond.
"""

from __future__ import annotations

import logging
import math
import numbers
import random
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tokenlean._checks import str_items
from tokenlean.errors import (
    ConfigError,
    EmbedderMismatchError,
    EmptyInputError,
    InputError,
    OutcomeFormatError,
    RouterFileError,
)
from tokenlean.routing.lexical import LexicalGapScorer
from tokenlean.routing.outcomes import PRIVACY_MODES, OutcomeLog, OutcomeTable, encode_features
from tokenlean.types import Message, Request

__all__ = [
    "CheapestAdequateRouter",
    "Decision",
    "EnsembleScorer",
    "KNNGapScorer",
    "KNNScorer",
    "LearnedRouter",
    "LogisticScorer",
    "MatrixFactorizationScorer",
    "OutputControl",
    "QualityGapScorer",
    "RoutingPolicy",
    "Rule",
    "RulesPolicy",
    "SemanticRoute",
    "SemanticRouter",
    "calibrate_threshold",
    "prompt_text",
    "share_for_budget",
]

log = logging.getLogger("tokenlean.routing.policies")


# -- decisions --------------------------------------------------------------------------------------


def check_count(value: object, name: str, *, minimum: int) -> None:
    """Raise ``ConfigError`` unless ``value`` is ``None`` or a whole number >= ``minimum``.

    Token bounds are compared and sent as they are: a negative or fractional one would be
    silently meaningless (a rule that never matches, a cap every server refuses).
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class OutputControl:
    """ "Generate less": a per-route cap on output, applied to the request before it is sent.

    Output tokens cost 4-8x input tokens at most providers and dominate latency, so a route for
    short factual answers should say so. ``instruction`` is appended as a system message.
    """

    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    instruction: str | None = None

    def __post_init__(self) -> None:
        check_count(self.max_tokens, "OutputControl.max_tokens", minimum=1)
        # a bare string would be spread into one stop sequence per character
        object.__setattr__(self, "stop", str_items(self.stop, "OutputControl.stop"))
        if self.instruction is not None and not isinstance(self.instruction, str):
            raise ConfigError(f"OutputControl.instruction must be a str or None, got {self.instruction!r}")

    def apply(self, request: Request) -> Request:
        params = dict(request.params)
        if self.max_tokens is not None:
            current = params.get("max_tokens", params.get("max_completion_tokens"))
            if isinstance(current, bool) or not isinstance(current, int) or current < 1:
                current = None  # no usable cap of the caller's (check_request refuses one before sending)
            params["max_tokens"] = self.max_tokens if current is None else min(current, self.max_tokens)
            params.pop("max_completion_tokens", None)
        if self.stop:
            old = params.get("stop") or []
            old = [old] if isinstance(old, str) else old
            if not isinstance(old, (list, tuple)) or not all(isinstance(x, str) for x in old):
                raise InputError(f"the request's 'stop' must be a str or a list of str, got {old!r}")
            params["stop"] = list(dict.fromkeys([*old, *self.stop]))[:4]  # OpenAI allows 4
        messages = request.messages
        if self.instruction:
            messages = (*messages, Message("system", self.instruction))
        return replace(request, params=params, messages=messages)

    def to_dict(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "stop": list(self.stop), "instruction": self.instruction}


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes and why.

    ``target`` names a model group of the router. ``score`` is the policy's number (similarity,
    predicted strong-win probability) when it has one. ``replica``, ``escalated`` and
    ``fallback_from`` are filled in by the router once the call has run.
    """

    target: str
    reason: str
    policy: str
    score: float | None = None
    output: OutputControl | None = None
    cascade: Any = None  # a Cascade when the target is "cheap first, maybe escalate"
    replica: str | None = None
    escalated: bool = False
    fallback_from: tuple[str, ...] = ()
    latency_ms: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "reason": self.reason,
            "policy": self.policy,
            "score": self.score,
            "output": None if self.output is None else self.output.to_dict(),
            "replica": self.replica,
            "escalated": self.escalated,
            "fallback_from": list(self.fallback_from),
            "latency_ms": self.latency_ms,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }


@runtime_checkable
class RoutingPolicy(Protocol):
    """One method: a decision, or ``None`` to let the next policy decide."""

    name: str

    def decide(self, request: Request) -> Decision | None: ...


def prompt_text(request: Request, max_chars: int = 2000) -> str:
    """The text a quality policy judges: the last user turn (what the model must answer now)."""
    last = request.last_user
    text = last.text if last is not None else (request.messages[-1].text if request.messages else "")
    return text[:max_chars]


# -- rules ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A declarative match; every given condition must hold.

    ``tags``: all must be in ``request.metadata["tags"]``; ``task_type``: equals
    ``metadata["task_type"]``; ``min_tokens``/``max_tokens``: bounds on the prompt's token count;
    ``has_tools``: whether tools are attached; ``when``: any extra predicate.
    """

    target: str
    tags: tuple[str, ...] = ()
    task_type: str | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    has_tools: bool | None = None
    when: Callable[[Request], bool] | None = None
    output: OutputControl | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.target, str):
            raise ConfigError(f"Rule.target must name a target (str), got {self.target!r}")
        object.__setattr__(self, "tags", str_items(self.tags, "Rule.tags"))
        if self.has_tools is not None and not isinstance(self.has_tools, bool):
            raise ConfigError(f"Rule.has_tools must be True, False or None, got {self.has_tools!r}")
        if self.when is not None and not callable(self.when):
            raise ConfigError("Rule.when must be a predicate (a callable) or None")
        if self.output is not None and not isinstance(self.output, OutputControl):
            raise ConfigError("Rule.output must be an OutputControl or None")
        check_count(self.min_tokens, "Rule.min_tokens", minimum=0)
        check_count(self.max_tokens, "Rule.max_tokens", minimum=0)
        if self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ConfigError(
                f"Rule.min_tokens ({self.min_tokens}) is above Rule.max_tokens ({self.max_tokens}): "
                "the rule could never match"
            )

    def matches(self, request: Request, n_tokens: Callable[[], int]) -> str | None:
        """The reason when the rule matches, else ``None``."""
        why: list[str] = []
        md = request.metadata
        if self.tags:
            raw = md.get("tags") or ()
            if isinstance(raw, str):
                have = {raw}
            elif isinstance(raw, (Mapping, list, tuple, set, frozenset)):
                have = {t for t in raw if isinstance(t, str)}  # a mapping's keys are its tags
            else:
                raise InputError(f"metadata 'tags' must be a str, a list of str or a mapping, got {raw!r}")
            if not set(self.tags) <= have:
                return None
            why.append(f"tags {sorted(self.tags)}")
        if self.task_type is not None:
            if md.get("task_type") != self.task_type:
                return None
            why.append(f"task_type={self.task_type}")
        if self.has_tools is not None:
            if bool(request.tools) != self.has_tools:
                return None
            why.append("tools present" if self.has_tools else "no tools")
        if self.min_tokens is not None or self.max_tokens is not None:
            n = n_tokens()
            if self.min_tokens is not None and n < self.min_tokens:
                return None
            if self.max_tokens is not None and n > self.max_tokens:
                return None
            why.append(f"{n} prompt tokens")
        if self.when is not None:
            if not self.when(request):
                return None
            why.append(getattr(self.when, "__name__", "predicate"))
        return ", ".join(why) or "always"


class RulesPolicy:
    """First matching rule wins. Cheap (no model) and fully predictable: put it first."""

    name = "rules"

    def __init__(self, rules: Sequence[Rule], *, model_for_tokens: str | None = None) -> None:
        self.rules = list(rules)
        self.model_for_tokens = model_for_tokens

    def decide(self, request: Request) -> Decision | None:
        cache: list[int] = []

        def n_tokens() -> int:
            if not cache:
                from tokenlean.tokens import count_messages

                cache.append(count_messages(request.messages, self.model_for_tokens))
            return cache[0]

        for i, rule in enumerate(self.rules):
            why = rule.matches(request, n_tokens)
            if why is not None:
                label = rule.name or f"rule {i}"
                return Decision(rule.target, f"{label}: {why}", self.name, output=rule.output)
        return None


# -- semantic routes ---------------------------------------------------------------------------------


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


# -- learned routers ----------------------------------------------------------------------------------


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


def _standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(axis=0)
    sd = x.std(axis=0) + 1e-6
    return mu, sd


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
    the strong one wrong (MMLU: 9% of rows), a win/lose label throws that away, and ties (both
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
    so a few dominant directions do not decide every neighbourhood (MMLU APGR 0.663 -> 0.677
    for static embeddings). ``k`` defaults to about a twentieth of the training set (5 to 100);
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
        # few rows cannot estimate many axes: at most one per 20 rows (MT-Bench's 64: 8 axes)
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
    ``texts`` are given and it proved ``reliable`` on the training rows (MMLU APGR 0.697 ->
    0.71; on MT-Bench's 64 prompts it abstains).
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


_SCORERS: dict[str, Callable[[], Any]] = {
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


def prompt_segments(text: str) -> tuple[str, str]:
    """The first and the second half of a prompt's lines; ``(text, "")`` below three lines."""
    lines = text.strip().split("\n")
    if len(lines) < 3:
        return text, ""
    k = len(lines) // 2
    return "\n".join(lines[:k]), "\n".join(lines[k:])


class SegmentedEmbedder:
    """Embeds each prompt three times, side by side: whole, first half of its lines, second half.

    A mean-pooled vector blurs the parts of a prompt that say different things about who should
    answer it: the question and its answer choices, the instructions and the data. Keeping the
    halves apart lets the router weigh them separately; on RouteLLM's data (``benchmarks/routing.py``)
    this raised the ensemble router's APGR on MMLU from 0.690 to 0.697 and on MT-Bench from 0.737
    to 0.770, and left GSM8K (one-paragraph prompts, no second half) as it was. Whole + halves
    + thirds, or thirds alone, did worse on MMLU (0.695). Three static embeddings cost well
    under 1 ms.
    """

    views = 3

    def __init__(self, base: Any) -> None:
        self.base = base
        self.name = f"{getattr(base, 'name', type(base).__name__)}+segments"
        self.dim = int(getattr(base, "dim", 0)) * self.views

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            raise EmptyInputError("no texts to embed")
        halves = [prompt_segments(t) for t in texts]
        # The static embedder rejects empty text; a blank second half embeds as a blank.
        vecs = np.asarray(
            self.base.embed(texts + [h for h, _ in halves] + [t or " " for _, t in halves]),
            dtype=np.float32,
        )
        n = len(texts)
        return np.hstack([vecs[:n], vecs[n : 2 * n], vecs[2 * n :]])


def whole_prompt_view(vectors: np.ndarray) -> np.ndarray:
    """The whole-prompt block of ``SegmentedEmbedder`` vectors."""
    return vectors[:, : vectors.shape[1] // SegmentedEmbedder.views]


class _PromptFeatures:
    """What the learned routers see of a prompt: its embedding (whole and in halves) and its length.

    Shared by ``LearnedRouter`` and ``CheapestAdequateRouter`` so both featurise alike.
    """

    segments: bool
    _embedder: Any
    _center: np.ndarray | None
    _mu: np.ndarray | None
    _sd: np.ndarray | None

    def _init_features(self, embedder: Any, segments: bool) -> None:
        self._embedder = embedder
        self.segments = segments
        self._center = None
        self._mu = None
        self._sd = None

    @property
    def embedder(self) -> Any:
        """What ``embed`` uses: the given (default: static) embedder, segmented if asked."""
        if self._embedder is None:
            from tokenlean.embeddings import get_static_embedder

            self._embedder = get_static_embedder()
        if self.segments and not isinstance(self._embedder, SegmentedEmbedder):
            self._embedder = SegmentedEmbedder(self._embedder)
        return self._embedder

    @property
    def base_embedder(self) -> Any:
        """The embedder under the segmentation (the one a saved router is versioned against)."""
        emb = self.embedder
        return emb.base if isinstance(emb, SegmentedEmbedder) else emb

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """The router's vectors for ``prompts`` (to precompute ``vectors=`` once for many fits)."""
        return np.asarray(self.embedder.embed(list(prompts)), dtype=np.float32)

    def features(
        self,
        prompts: Sequence[str] | None,
        vectors: np.ndarray | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Embedding plus log length (length alone is RouteLLM's weakest useful baseline signal).

        The embedding is centred on the training prompts' mean and re-normalised (each segment
        on its own): all prompts share a large common direction (for static embeddings a cosine
        of ~0.8 between unrelated texts), and what tells prompts apart is the small rest, which
        this puts on one scale. Without ``prompts`` (privacy mode) give ``vectors`` and
        ``lengths`` (each prompt's length in characters).
        """
        if prompts is None and (vectors is None or lengths is None):
            raise ConfigError("without prompts, give vectors= (router.embed output) and lengths=")
        if vectors is None:
            assert prompts is not None
            vecs = self.embed(prompts)
        else:
            vecs = np.asarray(vectors, dtype=np.float32)
        views = SegmentedEmbedder.views if self.segments else 1
        if vecs.ndim != 2 or vecs.shape[1] % views:
            raise ConfigError(
                f"vectors of shape {vecs.shape} are not this router's embeddings: use router.embed(prompts)"
            )
        if self._center is None:
            self._center = vecs.mean(axis=0)
        elif self._center.shape[0] != vecs.shape[1]:
            raise ConfigError(
                f"vectors have {vecs.shape[1]} dimensions, the router was fitted on {self._center.shape[0]}"
            )
        if lengths is not None:
            chars = np.asarray(lengths, dtype=np.float64)
            if chars.shape != (len(vecs),) or not np.isfinite(chars).all() or (chars < 0).any():
                raise ConfigError("lengths must be one prompt length (characters, >= 0) per vector")
        else:
            assert prompts is not None
            if len(prompts) != len(vecs):
                raise ConfigError(f"{len(prompts)} prompts but {len(vecs)} vectors")
            chars = np.array([len(p) for p in prompts], dtype=np.float64)
        blocks = (vecs - self._center).reshape(len(vecs), views, -1)
        blocks = blocks / (np.linalg.norm(blocks, axis=2, keepdims=True) + 1e-9)
        vecs = blocks.reshape(len(vecs), -1)
        lens = np.log1p(chars.astype(np.float32))[:, None]
        return np.hstack([vecs, lens / 10.0])

    def _fit_features(
        self,
        prompts: Sequence[str] | None,
        vectors: np.ndarray | None,
        lengths: Sequence[int] | np.ndarray | None = None,
        *,
        standardize: bool = True,
    ) -> np.ndarray:
        x = self.features(prompts, vectors, lengths)
        if standardize:
            self._mu, self._sd = _standardize(x[:, -1:])
            x = self._norm(x)
        return x

    def _norm(self, x: np.ndarray) -> np.ndarray:
        if self._mu is None or self._sd is None:
            return x
        x = x.copy()
        x[:, -1:] = (x[:, -1:] - self._mu) / self._sd * 0.1
        return x

    def _table_inputs(self, table: OutcomeTable) -> tuple[list[str] | None, np.ndarray | None]:
        """``(texts, vectors)`` for an outcome table: texts when every row has one (the router
        embeds them), else vectors, the privacy-mode rows' own and the embedded text rows'."""
        if table.has_text:
            return [p for p in table.prompts if p is not None], None
        name = getattr(self.embedder, "name", type(self.embedder).__name__)
        if table.embedder is not None and table.embedder != name:
            raise EmbedderMismatchError(
                f"{table.source}: feature vectors come from {table.embedder!r}, this router embeds with {name!r}"
            )
        todo = [i for i, v in enumerate(table.vectors) if v is None]
        done = [v for v in table.vectors if v is not None]
        dim = done[0].size
        embedded = np.empty((0, dim), dtype=np.float32)
        if todo:
            texts = [table.prompts[i] or "" for i in todo]
            embedded = self.embed(texts)
            if embedded.shape[1] != dim:
                raise EmbedderMismatchError(
                    f"{table.source}: {dim}-value feature vectors, this router's have {embedded.shape[1]}"
                )
        out = np.empty((len(table), dim), dtype=np.float32)
        for i, v in enumerate(table.vectors):
            if v is not None:
                out[i] = v
        for k, i in enumerate(todo):
            out[i] = embedded[k]
        return None, out


class LearnedRouter(_PromptFeatures):
    """Strong-vs-weak router trained from outcome data, thresholded to a strong-call share.

    ``fit(prompts, strong_score, weak_score)`` learns, from prompt embeddings (plus log prompt
    length), a score that orders prompts by how much the strong model helps. Scorers:
    ``ensemble`` (default: ``gap``, ``knn-gap`` and, when the outcome data is large enough to
    trust it, ``lexical``, averaged as z-scores), ``gap`` (expected strong minus weak quality),
    ``knn-gap`` (gain of similar prompts), ``lexical`` (gain predicted from the prompt's words,
    ``tokenlean.routing.lexical``), and the classifiers of
    "strong wins" ``logistic``, ``knn``, ``mf`` (RouteLLM's matrix factorisation).
    ``calibrate(prompts, strong_share=...)`` or ``calibrate(..., budget=..., weak_cost=...,
    strong_cost=...)`` picks the threshold on a held-out set. ``decide`` then routes a request
    to ``strong`` when its score reaches it.

    The default embedder is the *static* one (``tokenlean.embeddings.get_static_embedder``): a
    decision must cost well under the 5 ms budget of the request path including the
    embedding, which a transformer forward pass on a CPU does not; on RouteLLM's data the
    static vectors route as well as MiniLM's (see ``benchmarks/routing.py``). Pass
    ``embedder=get_default_embedder()`` to use the transformer instead. With ``segments=True``
    (default) the embedder sees each prompt whole and in two halves (``SegmentedEmbedder``);
    vectors passed to ``fit``/``score``/``calibrate`` must come from ``router.embed(prompts)``.

    **Owning it.** ``LearnedRouter.default(strong, weak)`` loads the router shipped with
    tokenlean (trained on RouteLLM's GSM8K, MMLU and MT-Bench outcomes; ``scripts/
    train_default_router.py``). ``save(dir)`` / ``LearnedRouter.load(dir)`` keep a fitted router
    as numpy arrays (``allow_pickle=False``) and JSON, versioned with the embedder it expects.
    With ``outcome_log=PATH`` every decision is logged with a call id (``Decision.extra
    ["call_id"]``) and ``feedback(call_id, ok=...)`` or ``feedback(call_id, score=...)`` records
    how the answer did; ``privacy="features"`` logs the router's vectors instead of the prompt
    text (``tokenlean.routing.outcomes`` says exactly what is stored). ``explore=0.05`` sends that
    share of logged calls to the *other* model, so feedback covers both models across all kinds
    of prompts (without it the strong model is only ever seen on the prompts it was sent).
    ``tokenlean route train LOG.jsonl`` retrains on the log; ``fit_table`` does it in Python.
    """

    name = "learned"
    #: Call ids remembered for ``feedback`` without ``model=`` (the newest this many).
    remember_calls = 100_000

    def __init__(
        self,
        strong: str,
        weak: str,
        *,
        scorer: str | Any = "ensemble",
        embedder: Any = None,
        segments: bool = True,
        threshold: float = 0.5,
        strong_output: OutputControl | None = None,
        weak_output: OutputControl | None = None,
        outcome_log: str | Path | OutcomeLog | None = None,
        privacy: str | None = None,
        explore: float = 0.0,
        seed: int | None = None,
    ) -> None:
        for role, model in (("strong", strong), ("weak", weak)):
            if not isinstance(model, str) or not model:
                raise ConfigError(f"the {role} model must be a non-empty name, got {model!r}")
        if strong == weak:
            raise ConfigError(f"the strong and the weak model must differ (both {strong!r})")
        self.strong, self.weak = strong, weak
        if isinstance(scorer, str) and scorer not in _SCORERS:
            raise ConfigError(f"unknown scorer {scorer!r}; choose from {sorted(_SCORERS)}")
        self.scorer = _SCORERS[scorer]() if isinstance(scorer, str) else scorer
        self._init_features(embedder, segments)
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise ConfigError(f"threshold must be a number, got {threshold!r}")
        self.threshold: float = float(threshold)
        self.strong_output: OutputControl | None = strong_output
        self.weak_output: OutputControl | None = weak_output
        if privacy is not None and privacy not in PRIVACY_MODES:
            raise ConfigError(f"privacy must be one of {PRIVACY_MODES}, got {privacy!r}")
        if isinstance(outcome_log, OutcomeLog):
            if privacy is not None and privacy != outcome_log.privacy:
                raise ConfigError(
                    f"privacy={privacy!r} but the OutcomeLog was made with {outcome_log.privacy!r}"
                )
            self.outcome_log: OutcomeLog | None = outcome_log
        elif outcome_log is not None:
            if not isinstance(outcome_log, (str, Path)) or not str(outcome_log):
                raise ConfigError(f"outcome_log must be a path or an OutcomeLog, got {outcome_log!r}")
            self.outcome_log = OutcomeLog(outcome_log, privacy=privacy or "text")
        else:
            if privacy is not None:
                raise ConfigError("privacy= says what the outcome log keeps: give outcome_log= too")
            self.outcome_log = None
        if isinstance(explore, bool) or not isinstance(explore, numbers.Real) or not 0.0 <= explore < 1.0:
            raise ConfigError(f"explore must be a share in [0, 1), got {explore!r}")
        if explore and self.outcome_log is None:
            raise ConfigError("explore= only makes sense with outcome_log= (it buys feedback, at a price)")
        self.explore: float = float(explore)
        self._rng: random.Random = random.Random(seed)
        self._issued: OrderedDict[str, str] = OrderedDict()
        self._issued_lock: threading.Lock = threading.Lock()
        #: Provenance of a trained or loaded router (rows, data, time); saved with it.
        self.info: dict[str, Any] = {}

    @property
    def privacy(self) -> str | None:
        return None if self.outcome_log is None else self.outcome_log.privacy

    # -- fitting ------------------------------------------------------------------------------------

    def fit(
        self,
        prompts: Sequence[str] | None,
        strong_score: Sequence[float] | np.ndarray,
        weak_score: Sequence[float] | np.ndarray,
        *,
        vectors: np.ndarray | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
        allow_missing: bool = False,
    ) -> LearnedRouter:
        """Fit the scorer on each prompt's strong and weak outcome (0/1 or any score scale).

        Outcome scorers (``needs_outcomes``) get both qualities scaled together to [0, 1].
        Classifiers get label = strong beats weak (ties count half, as RouteLLM's win-rate
        labels do), samples weighted by how much the choice matters (|strong - weak|, ties
        kept at a small weight) so the model spends its capacity where routing changes quality.

        ``prompts=None`` with ``vectors`` and ``lengths`` fits on feature vectors alone (privacy
        mode; the word-based ``lexical`` member then sits out). ``allow_missing=True`` lets a
        NaN stand for "this model's outcome is not known" (feedback from routed traffic knows
        one model per call): ``gap`` learns each model's quality from the rows where it is
        known; the ensemble's members that need both outcomes use the complete rows only.
        """
        try:
            s = np.asarray(strong_score, dtype=np.float64)
            w = np.asarray(weak_score, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError("outcomes must be numbers") from None
        texts = None if prompts is None else list(prompts)
        if texts is None and (vectors is None or lengths is None):
            raise ConfigError("without prompts, give vectors= (router.embed output) and lengths=")
        n = len(texts) if texts is not None else len(np.asarray(vectors))
        if n == 0:
            raise EmptyInputError("no outcome rows to fit a router on")
        if s.ndim != 1 or w.ndim != 1 or not (n == len(s) == len(w)):
            raise ConfigError("prompts, strong_score and weak_score must have the same length")
        if np.isinf(s).any() or np.isinf(w).any():
            raise ConfigError("outcomes must be finite numbers")
        missing = np.isnan(s) | np.isnan(w)
        if missing.any():
            if not allow_missing:
                raise ConfigError(
                    "outcomes must be finite numbers (drop rows with a missing outcome, or pass "
                    "allow_missing=True to let NaN mean 'not known')"
                )
            if (np.isnan(s) & np.isnan(w)).any():
                raise ConfigError("a row with neither outcome known says nothing: drop it")
            if not getattr(self.scorer, "accepts_missing", False):
                raise ConfigError(
                    f"the {getattr(self.scorer, 'kind', 'given')} scorer needs both outcomes on every row "
                    f"({int(missing.sum())} rows have one): use scorer='ensemble' or 'gap'"
                )
        self._center = None  # re-estimated from these prompts
        self._mu = self._sd = None
        self.info = {"rows": n, "partial_rows": int(missing.sum()), "text": texts is not None}
        if getattr(self.scorer, "needs_outcomes", False):
            lo, hi = float(np.nanmin(np.r_[s, w])), float(np.nanmax(np.r_[s, w]))
            span = (hi - lo) or 1.0
            s_q, w_q = (s - lo) / span, (w - lo) / span
            if getattr(self.scorer, "uses_text", False):  # words only: no embedding needed
                if texts is None:
                    raise ConfigError("the lexical scorer learns from prompt texts; feature rows have none")
                self.scorer.fit_outcomes(texts, s_q, w_q)
                return self
            x = self._fit_features(texts, vectors, lengths)
            if getattr(self.scorer, "takes_texts", False):
                self.scorer.fit_outcomes(x, s_q, w_q, texts=texts)
            else:
                self.scorer.fit_outcomes(x, s_q, w_q)
            return self
        x = self._fit_features(texts, vectors, lengths, standardize=getattr(self.scorer, "kind", "") != "knn")
        gap = s - w
        y = np.where(gap > 0, 1.0, np.where(gap < 0, 0.0, 0.5))
        scale = np.abs(gap).max() or 1.0
        weight = 0.25 + np.abs(gap) / scale
        self.scorer.fit(x, y, weight)
        return self

    def fit_table(self, table: OutcomeTable) -> LearnedRouter:
        """Fit on an outcome file or log read by ``tokenlean.routing.outcomes.read_outcomes``.

        Rows where only one of the two models' outcome is known are used as ``fit`` does with
        ``allow_missing=True``; rows where neither is known are dropped.
        """
        s, w = table.pair(self.strong, self.weak)
        keep = ~(np.isnan(s) & np.isnan(w))
        if not keep.any():
            raise EmptyInputError(
                f"{table.source}: no row has an outcome of {self.strong!r} or {self.weak!r}"
            )
        if not keep.all():
            table = table.subset(np.flatnonzero(keep))
            s, w = table.pair(self.strong, self.weak)
        texts, vectors = self._table_inputs(table)
        self.fit(
            texts,
            s,
            w,
            vectors=vectors,
            lengths=None if texts is not None else table.lengths,
            allow_missing=True,
        )
        self.info.update({"source": Path(table.source).name, "sha256": table.sha256})
        return self

    # -- scoring and deciding ---------------------------------------------------------------------------

    def score(
        self,
        prompts: Sequence[str] | None,
        *,
        vectors: np.ndarray | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        texts = None if prompts is None else list(prompts)
        if getattr(self.scorer, "uses_text", False):
            if texts is None:
                raise ConfigError("the lexical scorer scores prompt texts; give prompts")
            return np.asarray(self.scorer.predict(texts), dtype=np.float64)
        x = self._norm(self.features(texts, vectors, lengths))
        if getattr(self.scorer, "takes_texts", False):
            return np.asarray(self.scorer.predict(x, texts=texts), dtype=np.float64)
        return np.asarray(self.scorer.predict(x), dtype=np.float64)

    def score_table(self, table: OutcomeTable) -> np.ndarray:
        """Scores of an outcome table's rows (text rows embedded, privacy rows as given)."""
        texts, vectors = self._table_inputs(table)
        return self.score(texts, vectors=vectors, lengths=None if texts is not None else table.lengths)

    def calibrate(
        self,
        prompts: Sequence[str],
        *,
        strong_share: float | None = None,
        budget: float | None = None,
        weak_cost: float | None = None,
        strong_cost: float | None = None,
        vectors: np.ndarray | None = None,
    ) -> float:
        """Set ``threshold`` for a target strong share, or the share a per-call budget affords."""
        if strong_share is None:
            if budget is None or weak_cost is None or strong_cost is None:
                raise ConfigError("give strong_share, or budget with weak_cost and strong_cost")
            strong_share = share_for_budget(budget, weak_cost, strong_cost)
        self.threshold = calibrate_threshold(self.score(prompts, vectors=vectors), strong_share)
        return self.threshold

    def decide(self, request: Request) -> Decision | None:
        text = prompt_text(request)
        if not text.strip():
            return None
        vec = None
        if self.outcome_log is not None and not getattr(self.scorer, "uses_text", False):
            vec = self.embed([text])  # embedded once: scored, and logged in privacy mode
        p = float(self.score([text], vectors=vec)[0])
        what = "strong-model gain" if getattr(self.scorer, "needs_outcomes", False) else "P(strong wins)"
        strong = p >= self.threshold
        reason = (
            f"learned ({self.scorer.kind}): {what}={p:.2f} {'>=' if strong else '<'} {self.threshold:.2f}"
        )
        if self.outcome_log is None:
            return Decision(
                self.strong if strong else self.weak,
                reason,
                self.name,
                score=p,
                output=self.strong_output if strong else self.weak_output,
            )
        explored = bool(self.explore) and self._rng.random() < self.explore
        if explored:
            strong = not strong
            reason += f"; exploring: sent to the {'strong' if strong else 'weak'} model instead"
        target = self.strong if strong else self.weak
        cid = request.metadata.get("call_id")
        call_id = cid if isinstance(cid, str) and cid else uuid.uuid4().hex
        record: dict[str, Any] = {
            "type": "decision",
            "call_id": call_id,
            "router": self.name,
            "strong": self.strong,
            "weak": self.weak,
            "target": target,
            "score": p if math.isfinite(p) else None,
            "threshold": self.threshold if math.isfinite(self.threshold) else None,
            "explore": explored,
        }
        if self.outcome_log.privacy == "features":
            vector = vec[0] if vec is not None else self.embed([text])[0]
            record["features"] = encode_features(vector, embedder=self.embedder.name, chars=len(text))
        else:
            record["prompt"] = text
        self.outcome_log.write(record, strict=False)
        with self._issued_lock:
            self._issued[call_id] = target
            self._issued.move_to_end(call_id)
            while len(self._issued) > self.remember_calls:
                self._issued.popitem(last=False)
        return Decision(
            target,
            reason,
            self.name,
            score=p,
            output=self.strong_output if strong else self.weak_output,
            extra={"call_id": call_id, **({"explore": True} if explored else {})},
        )

    def feedback(
        self,
        call_id: str,
        ok: bool | None = None,
        *,
        score: float | None = None,
        model: str | None = None,
    ) -> None:
        """Record how a routed call's answer did: ``ok=True/False`` or a judge ``score``.

        ``model`` defaults to the model this router sent the call to (give it when the call
        fell back to another model, when the router has restarted since, or to add the other
        model's outcome, e.g. from an offline judge of both answers). Appended to the outcome
        log; ``tokenlean route train`` joins it to the decision by call id.
        """
        if self.outcome_log is None:
            raise ConfigError("feedback needs an outcome log: LearnedRouter(..., outcome_log=PATH)")
        if not isinstance(call_id, str) or not call_id:
            raise InputError(f"call_id must be the non-empty id of a routed call, got {call_id!r}")
        if (ok is None) == (score is None):
            raise InputError("give ok=True/False or score=NUMBER (one of them)")
        record: dict[str, Any] = {"type": "feedback", "call_id": call_id}
        if ok is not None:
            if not isinstance(ok, bool):
                raise InputError(f"ok must be True or False, got {ok!r}")
            value = 1.0 if ok else 0.0
        else:
            if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
                raise InputError(f"score must be a finite number, got {score!r}")
            value = float(score)
        if model is None:
            with self._issued_lock:
                model = self._issued.get(call_id)
            if model is None:
                raise InputError(
                    f"call id {call_id!r} was not routed by this router since it started: pass model="
                )
        if model not in (self.strong, self.weak):
            raise InputError(f"model must be {self.strong!r} or {self.weak!r}, got {model!r}")
        record.update({"model": model, "score": value})
        if ok is not None:
            record["ok"] = ok
        self.outcome_log.write(record)

    # -- persistence ----------------------------------------------------------------------------------

    def save(self, path: str | Path, *, compact: bool = False) -> Path:
        """Write the fitted router to the folder ``path``: ``router.json`` + ``arrays.npz``.

        No pickle: every array is a plain numeric numpy array (read back with
        ``allow_pickle=False``), everything else JSON. ``compact=True`` stores the large arrays
        in 16 bits (and the ``knn-gap`` neighbours' unit vectors in 8 bits with a per-row scale),
        about a third of the size. A compact router's scores are not bit-identical to this
        one's (on RouteLLM's data they correlate at 0.9998 and held-out APGR moves by < 0.001),
        so a few prompts at the threshold may flip; a router loaded from a compact file scores
        exactly as the file says and saves to the same file again. The embedder the
        router expects is recorded (name, dimension, a SHA-256 of the static embedder's table,
        and its vectors for a few probe texts), and the router's own scores of those probes, so
        ``load`` can refuse an embedder that would route differently.
        """
        from tokenlean.routing.persist import save_router

        return save_router(self, Path(path), compact=compact)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        strong: str | None = None,
        weak: str | None = None,
        embedder: Any = None,
        strict: bool = False,
        check_embedder: bool = True,
        **options: Any,
    ) -> LearnedRouter:
        """A router saved by ``save``; ``strong``/``weak`` rename its targets.

        The embedder (default: the static one) must be the one it was trained on: same name
        and dimension, and the same vectors for the saved probe texts (to 2e-3; else
        ``EmbedderMismatchError``). A static table whose SHA-256 differs but whose vectors
        agree (a rebuild on another CPU may differ in the last bits) loads with a warning, or
        raises with ``strict=True``. ``options`` are the runtime ones of the constructor
        (``outcome_log``, ``privacy``, ``explore``, ``seed``, ``threshold``, ``strong_output``,
        ``weak_output``). A missing, corrupt or newer-format file raises ``RouterFileError``.
        """
        from tokenlean.routing.persist import load_router

        return load_router(
            cls,
            Path(path),
            strong=strong,
            weak=weak,
            embedder=embedder,
            strict=strict,
            check_embedder=check_embedder,
            options=options,
        )

    @classmethod
    def default(cls, strong: str, weak: str, **options: Any) -> LearnedRouter:
        """The router shipped with tokenlean, routing between your ``strong`` and ``weak`` models.

        Trained on all of RouteLLM's GSM8K, MMLU and MT-Bench outcomes (GPT-4 vs Mixtral-8x7B,
        contaminated prompts excluded; ``scripts/train_default_router.py`` rebuilds it), with
        the threshold set so half of those prompts go strong. It ranks prompts by how much a
        strong model tends to help; set the share for *your* traffic with
        ``router.calibrate(your_prompts, strong_share=...)`` (no outcomes needed), and retrain
        on your own outcomes (``tokenlean route train``) when you have them. Needs the
        ``embeddings`` extra (the static embedder is distilled from MiniLM on first use).
        ``options`` as for ``load``.
        """
        from tokenlean.routing.persist import DEFAULT_ROUTER_DIR

        if not (DEFAULT_ROUTER_DIR / "router.json").is_file():
            raise RouterFileError(
                f"the default router is not installed at {DEFAULT_ROUTER_DIR}; "
                "build it with scripts/train_default_router.py"
            )
        return cls.load(DEFAULT_ROUTER_DIR, strong=strong, weak=weak, **options)


# -- N endpoints: the cheapest adequate one -------------------------------------------------------------


class CheapestAdequateRouter(_PromptFeatures):
    """Among N models, the cheapest one whose predicted quality is adequate for this prompt.

    **Not benchmarked.** The provided outcome data has two models per set, so this is tested
    on generated outcomes only (``tests/core/routing/test_outcomes.py``); measure it on your
    own outcomes (``route eval`` of each pair, or your held-out traffic) before relying on it.

    Training: one quality predictor per model (a logistic head on the router's features, like
    the ``gap`` scorer's two, outcomes scaled together to [0, 1]), each fitted on the rows where
    that model's outcome is known, so outcomes need not cover every model on every prompt.
    Adequacy compares *absolute* predicted qualities, so the heads are regularised ten times
    less than the ``gap`` scorer's (``c=1.0``, sklearn's ``C``): a strongly shrunk head pulls every
    prediction towards the model's mean quality and calls a cheap model inadequate on prompts
    it handles well.
    Deciding: predicted quality ``q_m`` per model; a model is *adequate* when ``q_m >=
    max(q) - tolerance`` (and ``q_m >= min_quality`` when given); the cheapest adequate model
    wins (ties: the better one), and when none reaches ``min_quality`` the best one does.
    ``tolerance=0`` always picks the best predicted model, ``1`` always the cheapest.

    Cost per call: ``costs`` ({model: cost}, any unit) or, by default, the price table
    (``PriceTable.default()``, or the one given as ``prices``): input price x the prompt's
    estimated tokens (characters / 4) + output price x ``output_tokens``. A model without a
    price raises ``UnknownModelError`` at construction.
    """

    name = "cheapest-adequate"

    def __init__(
        self,
        models: Sequence[str],
        *,
        prices: Any = None,
        costs: Mapping[str, float] | None = None,
        tolerance: float = 0.05,
        min_quality: float | None = None,
        output_tokens: int = 256,
        embedder: Any = None,
        segments: bool = True,
        c: float = 1.0,
        outputs: Mapping[str, OutputControl] | None = None,
    ) -> None:
        names = list(models) if not isinstance(models, str) else []
        if (
            len(names) < 2
            or len(set(names)) != len(names)
            or not all(isinstance(m, str) and m for m in names)
        ):
            raise ConfigError(f"give at least two distinct model names, got {models!r}")
        self.models = names
        for label, v, lo in (("tolerance", tolerance, 0.0), ("min_quality", min_quality, 0.0)):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not lo <= v <= 1.0:
                raise ConfigError(f"{label} must be in [0, 1], got {v!r}")
        self.tolerance = float(tolerance)
        self.min_quality = None if min_quality is None else float(min_quality)
        check_count(output_tokens, "output_tokens", minimum=0)
        self.output_tokens = int(output_tokens)
        if not (isinstance(c, numbers.Real) and c > 0):
            raise ConfigError(f"c must be > 0, got {c!r}")
        self.c: float = float(c)
        self.outputs: dict[str, OutputControl] = dict(outputs or {})
        self._fixed: dict[str, float] | None = None
        self._prices: dict[str, tuple[float, float]] = {}
        if costs is not None:
            if prices is not None:
                raise ConfigError("give costs= or prices=, not both")
            if set(costs) != set(names):
                raise ConfigError(f"costs must name exactly the models {names}, got {sorted(costs)}")
            fixed = {}
            for m, v in costs.items():
                if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                    raise ConfigError(f"cost of {m!r} must be a finite number >= 0, got {v!r}")
                fixed[m] = float(v)
            self._fixed = fixed
        else:
            from tokenlean.metering.prices import PriceTable

            table = PriceTable.default() if prices is None else prices
            if not isinstance(table, PriceTable):
                raise ConfigError("prices must be a tokenlean PriceTable (or give costs={model: cost})")
            for m in names:
                p = table.price(m)  # UnknownModelError for a model without a price
                self._prices[m] = (float(p.input), float(p.output))
        self._init_features(embedder, segments)
        self.heads: dict[str, LogisticScorer] = {}

    def call_cost(self, model: str, chars: int) -> float:
        """Estimated cost of one call of ``model`` on a prompt of ``chars`` characters."""
        if self._fixed is not None:
            return self._fixed[model]
        p_in, p_out = self._prices[model]
        return (p_in * math.ceil(chars / 4) + p_out * self.output_tokens) / 1e6

    def fit(
        self,
        prompts: Sequence[str] | None,
        outcomes: Mapping[str, Sequence[float] | np.ndarray],
        *,
        vectors: np.ndarray | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
    ) -> CheapestAdequateRouter:
        """Fit one quality predictor per model; ``outcomes[model][i]`` is NaN where not known."""
        texts = None if prompts is None else list(prompts)
        if texts is None and (vectors is None or lengths is None):
            raise ConfigError("without prompts, give vectors= (router.embed output) and lengths=")
        n = len(texts) if texts is not None else len(np.asarray(vectors))
        if n == 0:
            raise EmptyInputError("no outcome rows to fit a router on")
        missing = [m for m in self.models if m not in outcomes]
        if missing:
            raise ConfigError(f"no outcomes for {missing}")
        ys: dict[str, np.ndarray] = {}
        for m in self.models:
            try:
                y = np.asarray(outcomes[m], dtype=np.float64)
            except (TypeError, ValueError):
                raise ConfigError(f"outcomes of {m!r} must be numbers") from None
            if y.shape != (n,):
                raise ConfigError(f"outcomes of {m!r}: {y.shape[0] if y.ndim else 0} values for {n} prompts")
            if np.isinf(y).any():
                raise ConfigError(f"outcomes of {m!r} must be finite (NaN = not known)")
            if not np.isfinite(y).any():
                raise ConfigError(f"no known outcome of {m!r}: it cannot be predicted")
            ys[m] = y
        allv = np.concatenate(list(ys.values()))
        lo, hi = float(np.nanmin(allv)), float(np.nanmax(allv))
        span = (hi - lo) or 1.0
        self._center = None
        x = self._fit_features(texts, vectors, lengths)
        self.heads = {}
        for m, y in ys.items():
            known = np.isfinite(y)
            q = (y[known] - lo) / span
            self.heads[m] = LogisticScorer(l2=1.0 / (self.c * int(known.sum()))).fit(x[known], q)
        return self

    def fit_table(self, table: OutcomeTable) -> CheapestAdequateRouter:
        """Fit on an outcome table whose score columns include every model."""
        for m in self.models:
            if m not in table.scores:
                raise OutcomeFormatError(f"{table.source}: no outcomes for model {m!r} (have {table.models})")
        texts, vectors = self._table_inputs(table)
        return self.fit(
            texts,
            {m: table.scores[m] for m in self.models},
            vectors=vectors,
            lengths=None if texts is not None else table.lengths,
        )

    def quality(
        self,
        prompts: Sequence[str] | None,
        *,
        vectors: np.ndarray | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Predicted quality in [0, 1], one row per prompt, one column per model (``models`` order)."""
        if not self.heads:
            raise ConfigError("fit() the router first")
        x = self._norm(self.features(None if prompts is None else list(prompts), vectors, lengths))
        return np.stack([self.heads[m].predict(x) for m in self.models], axis=1)

    def choose(self, quality: np.ndarray, chars: Sequence[int] | np.ndarray) -> list[str]:
        """The model each prompt goes to, from its predicted qualities and length."""
        q = np.atleast_2d(np.asarray(quality, dtype=np.float64))
        out = []
        for row, n in zip(q, chars, strict=True):
            best = float(row.max())
            ok = row >= best - self.tolerance - 1e-12
            if self.min_quality is not None:
                ok &= row >= self.min_quality
            if not ok.any():
                out.append(self.models[int(row.argmax())])
                continue
            cands = [i for i in range(len(self.models)) if ok[i]]
            pick = min(cands, key=lambda i: (self.call_cost(self.models[i], int(n)), -row[i]))
            out.append(self.models[pick])
        return out

    def route(self, prompts: Sequence[str]) -> list[str]:
        """The chosen model for each prompt (batch form of ``decide``)."""
        texts = list(prompts)
        return self.choose(self.quality(texts), [len(t) for t in texts])

    def decide(self, request: Request) -> Decision | None:
        text = prompt_text(request)
        if not text.strip():
            return None
        row = self.quality([text])[0]
        target = self.choose(row[None, :], [len(text)])[0]
        i = self.models.index(target)
        best = self.models[int(row.argmax())]
        cost = self.call_cost(target, len(text))
        reason = (
            f"cheapest adequate: {target} (predicted quality {row[i]:.2f}; best {best} {row.max():.2f}, "
            f"tolerance {self.tolerance:.2f}; est. cost {cost:.3g}/call)"
        )
        return Decision(
            target,
            reason,
            self.name,
            score=float(row[i]),
            output=self.outputs.get(target),
            extra={
                "predicted_quality": {m: round(float(q), 4) for m, q in zip(self.models, row, strict=True)}
            },
        )
