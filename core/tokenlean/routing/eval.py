"""Offline evaluation of routers from outcome data, with RouteLLM's metrics.

Outcome data says, per prompt, how well a strong and a weak model answered (0/1 correctness or
a judge score). A router is a *score* per prompt (higher = send to strong); sweeping its
threshold from "never strong" to "always strong" traces the **cost-quality curve**: the share of
strong calls against the average quality reached. From the curve (RouteLLM, Ong et al. 2024):

* **PGR** at a point = (quality - weak) / (strong - weak): the share of the strong-weak gap won.
* **APGR** = area under the PGR curve over strong-call share in [0, 1] (random routing: 0.5).
* **CPT(x%)** = the smallest strong-call share whose quality recovers x% of the gap.

The curve here is exact (one point per distinct score, ties routed together) rather than
RouteLLM's ten quantile bins, so small sets are not quantised. Baselines: ``random`` (expected
curve, the diagonal), ``length`` (longer prompt goes strong) and ``oracle`` (sends exactly the
prompts where strong beats weak first).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokenlean.errors import ConfigError, EmptyInputError, InputError
from tokenlean.routing.datasets import OutcomeData

__all__ = [
    "CurvePoint",
    "PolicyResult",
    "apgr",
    "baseline_scores",
    "cached_embeddings",
    "cost_quality_curve",
    "cpt",
    "crossfit_scores",
    "evaluate_random",
    "evaluate_scores",
    "fold_ids",
    "offline_report",
    "router_vectors",
]

log = logging.getLogger("tokenlean.routing.eval")


@dataclass(frozen=True, slots=True)
class CurvePoint:
    strong_share: float
    quality: float


@dataclass
class PolicyResult:
    policy: str
    apgr: float
    cpt50: float
    cpt80: float
    curve: list[CurvePoint] = field(default_factory=list)

    def to_dict(self, with_curve: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"apgr": self.apgr, "cpt50": self.cpt50, "cpt80": self.cpt80}
        if with_curve:
            out["curve"] = [[p.strong_share, p.quality] for p in self.curve]
        return out


# -- metrics ------------------------------------------------------------------------------------------


def cost_quality_curve(
    scores: Sequence[float] | np.ndarray, strong: np.ndarray, weak: np.ndarray
) -> list[CurvePoint]:
    """Quality at every threshold: prompts sorted by score, strong for the top ones.

    Prompts with equal scores cannot be separated by any threshold, so they switch together
    (one curve point per distinct score), which keeps constant-score routers honest.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    if n == 0:
        raise EmptyInputError("no outcomes to evaluate")
    if np.isnan(s).any():
        raise InputError("router scores contain NaN")
    order = np.argsort(-s, kind="stable")
    gain = (strong - weak)[order]
    cum = np.concatenate([[0.0], np.cumsum(gain)])
    sorted_s = s[order]
    # boundaries: after the last index of each run of equal scores
    ends = np.flatnonzero(np.diff(sorted_s) != 0) + 1
    cuts = np.concatenate([[0], ends, [n]])
    base = float(weak.sum())
    return [CurvePoint(float(k) / n, (base + float(cum[k])) / n) for k in cuts]


def _pgr(q: float, strong_q: float, weak_q: float) -> float:
    gap = strong_q - weak_q
    if gap == 0:
        raise ConfigError("strong and weak models have the same quality: the gap is undefined")
    return (q - weak_q) / gap


def apgr(curve: Sequence[CurvePoint], strong_q: float, weak_q: float) -> float:
    """Area under the PGR curve over strong-call share (trapezoids between curve points)."""
    xs = np.array([p.strong_share for p in curve])
    ys = np.array([_pgr(p.quality, strong_q, weak_q) for p in curve])
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def cpt(curve: Sequence[CurvePoint], strong_q: float, weak_q: float, fraction: float) -> float:
    """Smallest strong-call share reaching ``fraction`` of the gap (linear between curve points)."""
    target = weak_q + fraction * (strong_q - weak_q)
    prev = curve[0]
    if prev.quality >= target:
        return prev.strong_share
    for p in curve[1:]:
        if p.quality >= target:
            span = p.quality - prev.quality
            t = 1.0 if span <= 0 else (target - prev.quality) / span
            return prev.strong_share + t * (p.strong_share - prev.strong_share)
        prev = p
    return 1.0


def evaluate_scores(policy: str, scores: Sequence[float] | np.ndarray, data: OutcomeData) -> PolicyResult:
    curve = cost_quality_curve(scores, data.strong, data.weak)
    sq, wq = data.strong_quality, data.weak_quality
    return PolicyResult(policy, apgr(curve, sq, wq), cpt(curve, sq, wq, 0.5), cpt(curve, sq, wq, 0.8), curve)


def _average_curves(curves: Sequence[Sequence[CurvePoint]], grid: int = 201) -> list[CurvePoint]:
    xs = np.linspace(0, 1, grid)
    ys = np.mean([np.interp(xs, [p.strong_share for p in c], [p.quality for p in c]) for c in curves], axis=0)
    return [CurvePoint(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]


def evaluate_random(data: OutcomeData, seeds: int = 20) -> PolicyResult:
    """Random routing, averaged over ``seeds`` draws (its expectation is the diagonal: APGR 0.5)."""
    rng = np.random.default_rng(0)
    curves = [cost_quality_curve(rng.random(len(data)), data.strong, data.weak) for _ in range(seeds)]
    curve = _average_curves(curves)
    sq, wq = data.strong_quality, data.weak_quality
    return PolicyResult(
        "random", apgr(curve, sq, wq), cpt(curve, sq, wq, 0.5), cpt(curve, sq, wq, 0.8), curve
    )


def baseline_scores(data: OutcomeData) -> dict[str, np.ndarray]:
    """Scores of the deterministic baselines: ``length`` (longer goes strong) and ``oracle``."""
    return {
        "length": np.array([len(p) for p in data.prompts], dtype=np.float64),
        "oracle": data.strong - data.weak,
    }


# -- fitting without peeking --------------------------------------------------------------------------


def fold_ids(n: int, folds: int, seed: int = 0, groups: Sequence[str] | None = None) -> np.ndarray:
    """Fold of each row: shuffled, and stratified by ``groups`` (e.g. subject) when given."""
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.int64)
    if groups is None:
        perm = rng.permutation(n)
        out[perm] = np.arange(n) % folds
        return out
    by: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    offset = 0
    for g in sorted(by):
        idx = np.array(by[g])
        perm = rng.permutation(len(idx))
        out[idx[perm]] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)
    return out


def crossfit_scores(
    data: OutcomeData,
    fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Out-of-fold scores: each row is scored by a model fitted on the *other* folds only.

    ``fit_predict(train_idx, test_idx)`` fits on the rows ``train_idx`` and returns scores for
    ``test_idx``. Every reported score therefore comes from a model that never saw that row:
    fit on one split, report on another, for every row (which matters on small sets such as
    MT-Bench's 80 questions).
    """
    if folds < 2:
        raise ConfigError("need at least 2 folds")
    f = fold_ids(len(data), folds, seed, data.groups)
    out = np.empty(len(data), dtype=np.float64)
    for k in range(folds):
        test = np.flatnonzero(f == k)
        train = np.flatnonzero(f != k)
        out[test] = fit_predict(train, test)
    return out


def summarize(results: Mapping[str, PolicyResult]) -> dict[str, dict[str, float]]:
    return {k: v.to_dict() for k, v in results.items()}


# -- embeddings, computed once per dataset ------------------------------------------------------------


def cached_embeddings(texts: Sequence[str], embedder: Any, cache_dir: str | Path | None = None) -> np.ndarray:
    """Embed ``texts``, reusing an ``.npy`` under ``cache_dir`` keyed by model and content hash.

    Offline evaluation embeds the same thousands of prompts on every run; on a small CPU that is
    minutes, so the matrix is stored once (``tempdir/tokenlean-embeddings`` by default) and any
    change to the texts or the model changes the key.
    """
    import hashlib
    import tempfile

    h = hashlib.blake2b(digest_size=16)
    h.update(str(getattr(embedder, "name", type(embedder).__name__)).encode())
    for t in texts:
        h.update(b"\x00" + t.encode("utf-8", "surrogatepass"))
    folder = (
        Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "tokenlean-embeddings"
    )
    path = folder / f"{h.hexdigest()}.npy"
    if path.exists():
        try:
            arr = np.load(path)
            if arr.shape[0] == len(texts):
                return arr
        except (OSError, ValueError) as exc:
            log.warning("embedding cache %s unreadable (%s); recomputing", path, exc)
    arr = np.asarray(embedder.embed(list(texts)), dtype=np.float32)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, arr)
        tmp.replace(path)
    except OSError as exc:  # a read-only temp dir only costs speed
        log.warning("could not cache embeddings at %s: %s", path, exc)
    return arr


def router_vectors(
    datasets: Mapping[str, OutcomeData], cache_dir: str | Path | None = None
) -> dict[str, np.ndarray]:
    """The default ``LearnedRouter``'s own vectors (static, whole prompt + two halves) per dataset.

    Taken from the router itself so the offline report always scores the vectors it routes on.
    """
    from tokenlean.routing.learned import LearnedRouter

    embedder = LearnedRouter("strong", "weak").embedder
    return {k: cached_embeddings(v.prompts, embedder, cache_dir) for k, v in datasets.items()}


# -- the full offline report (shared by ``tokenlean route eval`` and ``benchmarks/routing.py``) ---------


def _learned_fit_predict(
    kind: str, data: OutcomeData, vectors: np.ndarray, *, segments: bool = True
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    from tokenlean.routing.learned import LearnedRouter

    def fp(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        r = LearnedRouter("strong", "weak", scorer=kind, embedder=_NoEmbedder(), segments=segments)
        r.fit([data.prompts[i] for i in train], data.strong[train], data.weak[train], vectors=vectors[train])
        return r.score([data.prompts[i] for i in test], vectors=vectors[test])

    return fp


def _verifier_fit_predict(
    data: OutcomeData, vectors: np.ndarray
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Cascade scores: P(weak answer wrong) from the question and the weak model's answer."""
    from tokenlean.routing.cascade import LearnedVerifier

    assert data.weak_responses is not None
    lo, hi = float(data.weak.min()), float(data.weak.max())
    ok = (data.weak - lo) / (hi - lo) if hi > lo else np.ones(len(data))

    def fp(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        v = LearnedVerifier(embedder=_NoEmbedder())
        q, a = data.prompts, data.weak_responses or []
        v.fit([q[i] for i in train], [a[i] for i in train], ok[train], vectors=vectors[train])
        return v.score([q[i] for i in test], [a[i] for i in test], vectors=vectors[test])

    return fp


class _NoEmbedder:
    """Placeholder: offline evaluation always passes precomputed vectors."""

    name = "precomputed"
    dim = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise InputError("offline evaluation passes precomputed vectors")


#: Learned scorers the offline report evaluates by default (``mf`` is slow on MMLU; ask for it).
DEFAULT_KINDS = ("ensemble", "gap", "knn-gap", "lexical", "logistic", "knn")


def candidate_policies(
    data: OutcomeData, vectors: np.ndarray, kinds: Sequence[str] = DEFAULT_KINDS
) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Learned policies to evaluate: the prompt-only routers, plus the cascade when answers exist."""
    from tokenlean.routing.features import whole_prompt_view

    out = {f"learned-{k}": _learned_fit_predict(k, data, vectors) for k in kinds}
    if data.weak_responses is not None and any(data.weak_responses):
        out["cascade-verifier"] = _verifier_fit_predict(data, whole_prompt_view(vectors))
    return out


def offline_report(
    datasets: Mapping[str, OutcomeData],
    vectors: Mapping[str, np.ndarray],
    *,
    kinds: Sequence[str] = DEFAULT_KINDS,
    folds: int = 5,
    extra_vectors: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Every policy on every dataset: ``{"datasets": {name: {policy: {apgr, cpt50, cpt80}}}}``.

    Learned policies are cross-fitted: each row is scored by a model that never saw it (fit on
    one split, report on another, for every row). ``tokenlean-best`` is one fixed recipe on
    every dataset, not a per-dataset pick (picking the best of several policies on the report
    split would flatter it, and picking by inner cross-validation on 80 MT-Bench prompts is
    noise): the ``ensemble`` router, averaged by rank with the cascade verifier where the
    cheap model's answers are in the data. Baselines: ``random``, ``length``, ``oracle``.
    ``vectors`` are the router's (``SegmentedEmbedder``: whole prompt and two halves).
    ``extra_vectors`` ({label: {dataset: vectors}}, whole prompts only) adds
    ``learned-ensemble@label`` rows, e.g. the router on transformer embeddings for comparison.
    ``meta`` records sizes and qualities.
    """
    report: dict[str, Any] = {"datasets": {}, "meta": {}}
    for name, data in datasets.items():
        vec = vectors[name]
        res: dict[str, PolicyResult] = {"random": evaluate_random(data)}
        for b, s in baseline_scores(data).items():
            res[b] = evaluate_scores(b, s, data)
        cands = candidate_policies(data, vec, kinds)
        oof: dict[str, np.ndarray] = {}
        for pname, fp in cands.items():
            oof[pname] = crossfit_scores(data, fp, folds=folds)
            res[pname] = evaluate_scores(pname, oof[pname], data)
        if "learned-ensemble" not in oof:
            oof["learned-ensemble"] = crossfit_scores(
                data, _learned_fit_predict("ensemble", data, vec), folds=folds
            )
        parts = [k for k in ("learned-ensemble", "cascade-verifier") if k in oof]
        blend = np.mean([np.argsort(np.argsort(oof[k])) / len(data) for k in parts], axis=0)
        res["tokenlean-best"] = evaluate_scores("tokenlean-best", blend, data)
        for label, by_set in (extra_vectors or {}).items():
            if name in by_set:
                fp = _learned_fit_predict("ensemble", data, by_set[name], segments=False)
                pname = f"learned-ensemble@{label}"
                res[pname] = evaluate_scores(pname, crossfit_scores(data, fp, folds=folds), data)
        report["datasets"][name] = {k: v.to_dict() for k, v in res.items()}
        report["meta"][name] = {
            "rows": len(data),
            "skipped": data.skipped,
            "strong_model": data.strong_model,
            "weak_model": data.weak_model,
            "strong_quality": data.strong_quality,
            "weak_quality": data.weak_quality,
            "tokenlean_best": parts,
            "folds": folds,
        }
    return report
