"""N models: the cheapest one whose predicted quality is adequate for the prompt."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tokenlean.errors import ConfigError, EmptyInputError, OutcomeFormatError
from tokenlean.routing.decision import Decision, OutputControl, check_count, prompt_text
from tokenlean.routing.features import PromptFeatures
from tokenlean.routing.outcomes import OutcomeTable
from tokenlean.routing.scorers import LogisticScorer
from tokenlean.types import Request

__all__ = ["CheapestAdequateRouter"]


class CheapestAdequateRouter(PromptFeatures):
    """Among N models, the cheapest one whose predicted quality is adequate for this prompt.

    **Not benchmarked.** The provided outcome data has two models per set, so this is tested
    on generated outcomes only (``tests/core/routing/test_outcomes.py``); measure it on your
    own outcomes (``route eval`` of each pair, or your held-out traffic) before relying on it.

    Training: one quality predictor per model (a logistic head on the router's features, like
    the ``gap`` scorer's two, outcomes scaled together to [0, 1]), each fitted on the rows where
    that model's outcome is known, so outcomes need not cover every model on every prompt.
    Adequacy compares *absolute* predicted qualities, so the heads are regularised
    less than the ``gap`` scorer's (``c=1.0`` against its ``0.1``, sklearn's ``C``): a strongly shrunk head pulls every
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
