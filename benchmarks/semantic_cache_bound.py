"""The semantic cache's error bound on held-out pairs: the ``"error_bound"`` block of semantic_cache.py.

Usage (alone; ``semantic_cache.py`` runs it too)::

    python benchmarks/semantic_cache_bound.py [--data DIR] [--json OUT] [--quick]

A user sets ``max_false_hit_rate`` (delta) and the cache learns its threshold online from audited
lookups (:class:`tokenlean.cache.bound.ErrorBound`). Here the calibration half of the question-group
split is the *stream* that gives feedback, in a shuffled order: each pair is a lookup whose one
candidate is the pair's cached question; the bound's coin decides whether it is audited; an audited
lookup's label (the answer-equivalence oracle) goes to the bound, and an audit of a lookup the cache
would have served counts as a model call (``model_calls``, the exploration cost). The report half
gives no feedback: it is answered at the threshold the stream ended with, and its realised false-hit
rate (hits among non-duplicates) is what the bound promised to keep <= delta.

The single-threshold baseline gets the same labelled lookups (the same audits) and picks the lowest
cosine threshold whose false-hit rate *on them* is <= delta, the way one tunes a threshold on a
labelled sample. Each setting runs over ``--seeds`` stream orders; reported: the share of orders
whose report-half rate exceeded delta (the bound promises <= 1 - confidence), the mean rate, true
hits, the bound's own 95% upper bound from its audits, and the model calls.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import semantic_cache as sc  # (puts core/ and the integrations on sys.path)

DELTAS = (0.005, 0.01, 0.02)
EXPLORE = (0.05, 0.2, 1.0)


def decision_scores(cache: Any, pairs: list[tuple[str, str, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """``(score, exact)`` per pair, as ``SemanticCache.lookup`` computes them for that candidate.

    The score is the scorer's on the pair's features; ``-inf`` where a guard vetoes the pair or its
    cosine is under the cache's floor (never served). ``exact``: the exact tier answers it (the same
    normalised text), outside the bound.
    """
    from tokenlean.cache.scope import normalize_text
    from tokenlean.cache.scoring import LabelledPair

    x, _, vetoes = cache.pair_scores([LabelledPair(q, c, d) for c, q, d in pairs])
    scores = cache.scorer.score_matrix(x).astype(np.float64)
    dead = np.array([v is not None for v in vetoes]) | (x[:, 0] < cache.min_cosine)
    scores[dead] = -math.inf
    exact = np.array([normalize_text(c) == normalize_text(q) for c, q, _ in pairs])
    return scores, exact


def stream(
    scores: np.ndarray, labels: np.ndarray, exact: np.ndarray, delta: float, explore: float, seed: int
) -> tuple[Any, np.ndarray]:
    """Run the calibration stream once: the bound after it, and which pairs were audited."""
    from tokenlean.cache.bound import ErrorBound

    bound = ErrorBound(delta, explore=explore, seed=seed)
    order = list(range(len(scores)))
    random.Random(seed).shuffle(order)
    audited = np.zeros(len(scores), dtype=bool)
    for i in order:
        if exact[i]:
            continue  # the exact tier serves it; the bound never sees it
        if bound.audit():
            audited[i] = True
            bound.observe(float(scores[i]), bool(labels[i]), would_serve=bool(scores[i] >= bound.threshold))
    return bound, audited


def _rates(hit: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    return float(hit[labels].mean()), float(hit[~labels].mean())


def error_bound_block(
    calib: list[tuple[str, str, bool]],
    report: list[tuple[str, str, bool]],
    emb: dict[str, np.ndarray],
    embedder: Any,
    args: argparse.Namespace,
    console: Any,
) -> dict[str, Any]:
    """The ``"error_bound"`` block: ``{delta: {explore: {...}}}`` plus how it was measured."""
    from rich.table import Table

    from tokenlean.cache import SemanticCache
    from tokenlean.cache.scoring import _threshold_for

    table_embedder = sc._VectorTable(len(next(iter(emb.values()))))  # the vectors already computed
    table_embedder.vectors = emb
    table_embedder.name = getattr(embedder, "name", "table")  # type: ignore[misc]  # same scorer as the model's
    cache = SemanticCache(embedder=table_embedder)
    c_scores, c_exact = decision_scores(cache, calib)
    r_scores, r_exact = decision_scores(cache, report)
    c_labels = np.array([d for _, _, d in calib])
    r_labels = np.array([d for _, _, d in report])
    c_cos = np.array([float(emb[c] @ emb[q]) for c, q, _ in calib])
    r_cos = np.array([float(emb[c] @ emb[q]) for c, q, _ in report])
    seeds = getattr(args, "seeds", 0) or (3 if args.quick else 20)
    out: dict[str, Any] = {
        "protocol": (
            "calibration half = feedback stream (shuffled, one order per seed); audited lookups are "
            "labelled by the pairs' labels (answer-equivalence oracle); report half gets no feedback "
            "and is answered at the stream's final threshold. Baseline: one cosine threshold chosen "
            "on the same audited lookups (empirical rate <= delta)."
        ),
        "seeds": seeds,
        "report_pairs": len(report),
        "report_non_duplicates": int((~r_labels).sum()),
        "results": {},
    }
    table = Table(title=f"Error bound on the report half ({seeds} stream orders; bound at 95%)")
    for col in (
        "delta", "explore", "model calls", "audits", "threshold", "bound UB", "realised fh",
        "orders > delta", "true hits", "baseline fh", "baseline > delta", "baseline true hits",
    ):  # fmt: skip
        table.add_column(col, justify="right")
    for delta in DELTAS:
        for explore in EXPLORE:
            rows = []
            for seed in range(seeds):
                bound, audited = stream(c_scores, c_labels, c_exact, delta, explore, seed)
                rep = bound.report()
                hit = r_exact | (r_scores >= bound.threshold)
                tpr, fpr = _rates(hit, r_labels)
                # the single threshold sees the same labelled lookups
                a = audited & ~c_exact
                base_t = _threshold_for(c_cos[a], c_labels[a], delta) if (~c_labels[a]).any() else math.inf
                base_hit = r_exact | (r_cos >= base_t)
                b_tpr, b_fpr = _rates(base_hit, r_labels)
                rows.append(
                    {
                        "model_calls": rep["model_calls"],
                        "audits": rep["audits"],
                        "threshold": rep["threshold"],
                        "upper_bound": rep["false_hit_upper_bound"],
                        "stream_realised": rep["realised_false_hit_rate"],
                        "report_false_hit_rate": fpr,
                        "report_true_hit_rate": tpr,
                        "baseline_threshold": base_t if math.isfinite(base_t) else None,
                        "baseline_false_hit_rate": b_fpr,
                        "baseline_true_hit_rate": b_tpr,
                    }
                )

            def mean(key: str, rows: list[dict[str, Any]] = rows) -> float:
                vals = [r[key] for r in rows if r[key] is not None and math.isfinite(r[key])]
                return float(np.mean(vals)) if vals else float("nan")

            cell = {
                "model_calls_mean": mean("model_calls"),
                "audits_mean": mean("audits"),
                "threshold_mean": mean("threshold"),
                "upper_bound_mean": mean("upper_bound"),
                "report_false_hit_rate_mean": mean("report_false_hit_rate"),
                "report_false_hit_rate_max": max(r["report_false_hit_rate"] for r in rows),
                "share_of_orders_over_delta": float(
                    np.mean([r["report_false_hit_rate"] > delta for r in rows])
                ),
                "report_true_hit_rate_mean": mean("report_true_hit_rate"),
                "baseline_false_hit_rate_mean": mean("baseline_false_hit_rate"),
                "baseline_share_over_delta": float(
                    np.mean([r["baseline_false_hit_rate"] > delta for r in rows])
                ),
                "baseline_true_hit_rate_mean": mean("baseline_true_hit_rate"),
                "runs": rows,
            }
            out["results"].setdefault(str(delta), {})[str(explore)] = cell
            table.add_row(
                f"{delta:.1%}",
                f"{explore:.0%}",
                f"{cell['model_calls_mean']:.0f}",
                f"{cell['audits_mean']:.0f}",
                f"{cell['threshold_mean']:.3f}",
                f"{cell['upper_bound_mean']:.2%}",
                f"{cell['report_false_hit_rate_mean']:.2%}",
                f"{cell['share_of_orders_over_delta']:.0%}",
                f"{cell['report_true_hit_rate_mean']:.1%}",
                f"{cell['baseline_false_hit_rate_mean']:.2%}",
                f"{cell['baseline_share_over_delta']:.0%}",
                f"{cell['baseline_true_hit_rate_mean']:.1%}",
            )
    console.print(table)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=sc.DEFAULT_DATA)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=0, help="stream orders per setting (0: 20, --quick 3)")
    args = ap.parse_args(argv)
    from rich.console import Console

    console = Console(width=200)  # the table is wide; a pipe would wrap it at 80
    path = args.data / "semantic_cache" / "meancache" / "val.csv"
    if not path.exists():
        console.print(f"[red]pairs file {path} not found[/]: pass --data DIR (the shared datasets folder)")
        return 2
    pairs = sc.load_pairs(path)
    if args.quick:
        pairs = random.Random(0).sample(pairs, 1500)
    calib_idx, report_idx = sc.group_split(pairs)
    calib, report = [pairs[i] for i in calib_idx], [pairs[i] for i in report_idx]
    from tokenlean.embeddings import get_default_embedder

    embedder = get_default_embedder()
    texts = sorted({t for c, q, _ in pairs for t in (c, q)})
    emb = dict(zip(texts, embedder.embed(texts), strict=True))
    block = error_bound_block(calib, report, emb, embedder, args, console)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"error_bound": block, "quick": args.quick}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
