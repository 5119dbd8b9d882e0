"""A false-hit rate the user sets, held by a threshold learned online from audited lookups.

A calibrated threshold (``SemanticCache.calibrate``) promises its rate on the pairs it was fitted
to; traffic that differs from them breaks the promise silently. :class:`ErrorBound` learns the
threshold from the cache's own traffic instead, the idea of verified semantic caching (vCache,
arXiv 2502.03771), implemented here from the statistics rather than from its code:

* **Audits.** Each lookup that has a candidate is *audited* with probability ``explore``, decided
  by a coin flipped before its score is known. An audited lookup is answered by the model even
  when the cache would have served it (that is the exploration cost: ``model_calls``); the fresh
  answer is compared with the candidate's cached one (``SemanticCache`` does this when the answer
  is stored, or the caller labels it with ``SemanticCache.feedback``). Until a threshold is
  certified nothing is served semantically, every lookup is a miss anyway, so every lookup is
  audited at no extra cost.
* **The bound.** The audited lookups whose candidate answer was wrong are a uniform sample of the
  wrong-candidate traffic. With ``n`` of them, the threshold is placed just above the
  ``(k + 1)``-th highest of their scores, ``k`` the largest count with
  ``P(Binomial(n, delta) <= k) <= 1 - confidence``. For that order statistic the share of *all*
  wrong-candidate lookups scoring above the threshold exceeds ``delta`` with probability at most
  ``1 - confidence`` (the distribution-free tolerance bound; no model of the scores is assumed).
  Too few audits certify nothing and the semantic tier stays shut.
* **Per entry.** An audit that finds an entry's answer wrong raises that entry's own threshold
  above the score it reached, as ``report_wrong`` does for a served hit.

The rate is over lookups whose best candidate would be a wrong answer: of those, at most
``max_false_hit_rate`` are served it. It assumes the traffic the audits saw is like the traffic
to come (a shift is caught only as fast as new audits arrive).
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import threading
from bisect import bisect_left, insort
from collections import deque
from typing import Any

from tokenlean._checks import check_number
from tokenlean.errors import ConfigError

__all__ = ["ErrorBound", "binomial_upper_bound", "max_allowed_exceedances"]


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def _binom_cdf(k: int, n: int, p: float) -> float:
    """``P(Binomial(n, p) <= k)``, summed in log space (stable for large ``n``)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    logs = [_log_binom_pmf(j, n, p) for j in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs))


def max_allowed_exceedances(n: int, rate: float, confidence: float = 0.95) -> int:
    """The largest ``k`` with ``P(Binomial(n, rate) <= k) <= 1 - confidence`` (-1: none).

    Placing a threshold just above the ``(k + 1)``-th highest of ``n`` sampled wrong-candidate
    scores keeps the true rate above it ``<= rate`` with probability ``>= confidence``.
    """
    if n <= 0:
        return -1
    log_alpha = math.log(1.0 - confidence)
    acc = -math.inf  # log P(X <= k), grown one term at a time (k stays near n * rate)
    for k in range(n + 1):
        term = _log_binom_pmf(k, n, rate)
        hi, lo = max(acc, term), min(acc, term)
        acc = hi + math.log1p(math.exp(lo - hi)) if lo > -math.inf else hi
        if acc > log_alpha:
            return k - 1
    return n


def binomial_upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen as ``k`` events in ``n`` trials."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    alpha = 1.0 - confidence
    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _binom_cdf(k, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


class ErrorBound:
    """The online threshold of a :class:`~tokenlean.cache.SemanticCache` with a user-set false-hit rate.

    ``max_false_hit_rate``: the most a lookup whose best candidate is wrong may be served it.
    ``explore``: the audit probability once a threshold is certified (each audit of a lookup the
    cache would have served costs one model call). ``confidence``: how sure the bound is.
    ``path``: a JSON file the audits are kept in (written atomically every ``save_every`` audits
    and on ``save()``), so a restart does not begin again from a shut semantic tier.
    ``max_audits``: the most recent audits kept (older ones are forgotten, so the threshold follows
    traffic that drifts).
    """

    def __init__(
        self,
        max_false_hit_rate: float,
        *,
        explore: float = 0.05,
        confidence: float = 0.95,
        path: str | os.PathLike[str] | None = None,
        save_every: int = 50,
        max_audits: int = 100_000,
        seed: int | None = None,
    ) -> None:
        check_number(max_false_hit_rate, "max_false_hit_rate", above=0, below=1)
        check_number(explore, "explore", minimum=0, maximum=1)
        check_number(confidence, "confidence", above=0, below=1)
        check_number(save_every, "save_every", minimum=1, integer=True)
        check_number(max_audits, "max_audits", minimum=1, integer=True)
        self.max_false_hit_rate = float(max_false_hit_rate)
        self.explore = float(explore)
        self.confidence = float(confidence)
        self.path = None if path is None else os.fspath(path)
        self.save_every = save_every
        self.max_audits = max_audits
        self._order: deque[tuple[float, bool]] = deque()  # audits in arrival order
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._wrong: list[float] = []  # audited wrong-candidate scores, ascending
        self._right: list[float] = []  # audited right-candidate scores, ascending
        self.model_calls = 0  # audits of lookups that would have been served
        self.audits = 0
        self._unsaved = 0
        self._threshold = math.inf
        self._k_cache: dict[int, int] = {}
        if self.path is not None and os.path.exists(self.path):
            self._load(self.path)

    # -- the decision ------------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """Scores at or above it may be served; ``inf`` while nothing is certified."""
        return self._threshold

    @property
    def certified(self) -> bool:
        """Whether the audits certify some threshold (``-inf``: every unvetoed candidate may be served)."""
        return self._threshold < math.inf

    def audit(self) -> bool:
        """Whether the next lookup with a candidate is audited (always, until a threshold is certified)."""
        if not self.certified:
            return True
        with self._lock:
            return self._rng.random() < self.explore

    def observe(self, score: float, correct: bool, *, would_serve: bool = False) -> None:
        """Record one audited lookup: its candidate's ``score`` (``-inf`` if a guard vetoed it) and
        whether the candidate's answer was right. ``would_serve``: the audit overrode a hit (a
        model call the cache would otherwise have saved)."""
        if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
            raise ConfigError(f"score must be a number, got {score!r}")
        with self._lock:
            self._add(float(score), bool(correct))
            self.audits += 1
            self.model_calls += bool(would_serve)
            self._unsaved += 1
            self._recompute()
            save = self.path is not None and self._unsaved >= self.save_every
        if save:
            self.save()

    def _add(self, score: float, correct: bool) -> None:
        insort(self._right if correct else self._wrong, score)
        self._order.append((score, correct))
        while len(self._order) > self.max_audits:
            old, was_right = self._order.popleft()
            side = self._right if was_right else self._wrong
            del side[bisect_left(side, old)]

    def _allowed(self, n: int) -> int:
        k = self._k_cache.get(n)
        if k is None:
            k = max_allowed_exceedances(n, self.max_false_hit_rate, self.confidence)
            self._k_cache[n] = k
        return k

    def _recompute(self) -> None:
        n = len(self._wrong)
        k = self._allowed(n)
        if k < 0:
            self._threshold = math.inf
            return
        # just above the (k + 1)-th highest wrong score: at most k audited wrong ones pass
        pivot = self._wrong[n - 1 - k]
        self._threshold = math.nextafter(pivot, math.inf) if math.isfinite(pivot) else -math.inf

    # -- the report --------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """What the audits say: the threshold, the realised rate among them and its upper bound."""
        with self._lock:
            t = self._threshold
            n_wrong, n_right = len(self._wrong), len(self._right)
            k = sum(1 for s in self._wrong if s >= t and s > -math.inf)  # vetoed ones never serve
            served_right = sum(1 for s in self._right if s >= t)
            return {
                "max_false_hit_rate": self.max_false_hit_rate,
                "confidence": self.confidence,
                "certified": t < math.inf,
                "threshold": t if math.isfinite(t) else None,
                "audits": self.audits,
                "audited_wrong_candidates": n_wrong,
                "audited_right_candidates": n_right,
                "model_calls": self.model_calls,
                "realised_false_hit_rate": k / n_wrong if n_wrong else None,
                # nothing is served while uncertified: the rate is then exactly zero
                "false_hit_upper_bound": (
                    binomial_upper_bound(k, n_wrong, self.confidence) if t < math.inf else 0.0
                ),
                "true_hit_rate": served_right / n_right if n_right else None,
            }

    # -- persistence -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "version": 1,
                "max_false_hit_rate": self.max_false_hit_rate,
                "confidence": self.confidence,
                "audits_kept": [[s if math.isfinite(s) else None, ok] for s, ok in self._order],
                "model_calls": self.model_calls,
                "audits": self.audits,
            }

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write the audits to ``path`` (default the ``path`` given) atomically."""
        target = os.fspath(path) if path is not None else self.path
        if target is None:
            raise ConfigError("save() needs a path (none was given to ErrorBound)")
        data = self.to_dict()
        folder = os.path.dirname(os.path.abspath(target))
        fd, tmp = tempfile.mkstemp(prefix=".bound-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        with self._lock:
            self._unsaved = 0

    def _load(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            kept = [(-math.inf if s is None else float(s), bool(ok)) for s, ok in data["audits_kept"]]
            model_calls, audits = int(data.get("model_calls", 0)), int(data.get("audits", len(kept)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"error-bound file {path} is unreadable: {exc}") from exc
        for score, ok in kept:
            self._add(score, ok)
        self.model_calls, self.audits = model_calls, audits
        self._recompute()
