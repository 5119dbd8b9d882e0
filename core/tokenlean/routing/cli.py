"""``tokenlean route ...``: train a router on your outcomes, and evaluate routers offline.

``tokenlean route train OUTCOMES --strong M --weak M [--out DIR]`` fits a ``LearnedRouter`` on an
outcome file (CSV or JSONL: a prompt, or a feature vector in privacy mode, and one score column per
model) or on an outcome log (``LearnedRouter(..., outcome_log=PATH)``, which names its models), and
saves it (``router.json`` + ``arrays.npz``). ``tokenlean route eval OUTCOMES --router DIR`` prints the
saved router's APGR, CPT(50%)/CPT(80%), its strong-call share at its threshold and the share of the
strong-weak gap it wins there, next to the random / length / oracle baselines (``--json OUT`` writes
them). ``tokenlean route eval --csv outcomes.csv --strong M --weak M`` (or ``--data DIR`` for
RouteLLM's sets) cross-validates every learned scorer instead. File formats:
``tokenlean.routing.outcomes``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["register_cli"]


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    route = subparsers.add_parser(
        "route", help="routing: train a router on outcomes, evaluate routers offline"
    )
    sub = route.add_subparsers(dest="route_command", metavar="COMMAND")

    tr = sub.add_parser("train", help="fit a learned router on an outcome file or outcome log, and save it")
    tr.add_argument("outcomes", help="outcome CSV / JSONL, or an outcome log (.jsonl)")
    tr.add_argument("--strong", help="the strong model (its score column; a log names it itself)")
    tr.add_argument("--weak", help="the weak model (its score column; a log names it itself)")
    tr.add_argument("--out", default="router", help="folder to save the router in (default: ./router)")
    tr.add_argument(
        "--scorer",
        default="ensemble",
        help="ensemble (default), gap, knn-gap, lexical, logistic, knn or mf",
    )
    tr.add_argument(
        "--strong-share",
        type=float,
        default=0.5,
        help="threshold: send this share of the training prompts to the strong model (default 0.5)",
    )
    tr.add_argument("--compact", action="store_true", help="16/8-bit arrays: a smaller file, not bit-exact")
    tr.set_defaults(func=_train)

    ev = sub.add_parser(
        "eval",
        help="APGR / CPT / strong share of a saved router on outcomes (or cross-validate scorers: --csv/--data)",
    )
    ev.add_argument("outcomes", nargs="?", help="outcome CSV / JSONL or outcome log to evaluate --router on")
    ev.add_argument("--router", help="a router saved by `tokenlean route train` or LearnedRouter.save")
    ev.add_argument(
        "--csv", action="append", help="outcome CSV (repeatable): a prompt column and one column per model"
    )
    ev.add_argument("--strong", help="the strong model's outcome column")
    ev.add_argument("--weak", help="the weak model's outcome column")
    ev.add_argument("--data", help="folder holding routing/routellm (RouteLLM's GSM8K, MMLU, MT-Bench)")
    ev.add_argument("--folds", type=int, default=5)
    ev.add_argument(
        "--policies",
        default="",
        help="learned scorers, comma-separated (default: all but mf; choose from "
        "ensemble,gap,knn-gap,lexical,logistic,knn,mf)",
    )
    ev.add_argument("--cache-dir", help="where prompt embeddings are cached (default: temp dir)")
    ev.add_argument("--json", help="write the report here")
    ev.set_defaults(func=_eval)
    route.set_defaults(func=lambda args: (route.print_help(), 0)[1])


def _train(args: argparse.Namespace) -> int:
    from tokenlean.errors import ConfigError
    from tokenlean.routing.learned import LearnedRouter
    from tokenlean.routing.outcomes import read_outcomes
    from tokenlean.routing.scorers import calibrate_threshold

    if not 0.0 <= args.strong_share <= 1.0:
        raise ConfigError(f"--strong-share must be in [0, 1], got {args.strong_share}")
    if (args.strong is None) != (args.weak is None):
        raise ConfigError("give both --strong and --weak, or neither (an outcome log names its models)")
    table = read_outcomes(args.outcomes, strong=args.strong, weak=args.weak)
    if args.strong is None:
        if "models" not in table.info:
            raise ConfigError("--strong M and --weak M name the outcome file's score columns")
        strong, weak = table.info["models"]
    else:
        strong, weak = args.strong, args.weak
    router = LearnedRouter(strong, weak, scorer=args.scorer)
    t0 = time.perf_counter()
    router.fit_table(table)
    # the threshold: this share of the training prompts goes strong (a traffic sample is all it needs)
    router.threshold = calibrate_threshold(router.score_table(table), args.strong_share)
    seconds = time.perf_counter() - t0
    router.info.update(
        {
            "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "skipped_rows": table.skipped,
            "threshold": f"strong share {args.strong_share} of the training prompts",
            "seconds": round(seconds, 2),
            **({"log": table.info} if table.info else {}),
        }
    )
    out = router.save(args.out, compact=args.compact)
    info = router.info
    kind = getattr(router.scorer, "kind", "?")
    members = getattr(router.scorer, "active", None)
    detail = f"{kind}: " + ", ".join(members) if members else kind
    print(f"trained a router ({detail}) on {args.outcomes}:")
    print(
        f"  {info['rows']} rows ({info['partial_rows']} with one model's outcome only), "
        f"{table.skipped} skipped (no outcome){'' if info['text'] else '; privacy-mode feature vectors'}"
    )
    if table.info:
        li = table.info
        print(
            f"  log: {li['decisions']} decisions, {li['without_feedback']} without feedback, "
            f"{li['unmatched_feedback']} feedback records without a decision"
        )
    print(
        f"  strong={strong} weak={weak}; threshold {router.threshold:.4f} (strong share {args.strong_share:g})"
    )
    print(
        f"  saved to {out} in {seconds:.1f} s; evaluate it on outcomes it did not see: tokenlean route eval FILE --router {out}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from tokenlean.errors import ConfigError

    if args.router or args.outcomes:
        if not (args.router and args.outcomes):
            raise ConfigError(
                "give both OUTCOMES and --router DIR (or --csv/--data to cross-validate scorers)"
            )
        if args.csv or args.data:
            raise ConfigError(
                "--csv/--data cross-validate scorers; OUTCOMES --router evaluates a saved router"
            )
        return _eval_router(args)
    return _eval_scorers(args)


def _at_share(curve: Any, share: float, strong_q: float, weak_q: float) -> float:
    """Share of the strong-weak gap won at a strong-call share (linear between curve points)."""
    import numpy as np

    q = float(np.interp(share, [p.strong_share for p in curve], [p.quality for p in curve]))
    return (q - weak_q) / (strong_q - weak_q)


def _eval_router(args: argparse.Namespace) -> int:
    import numpy as np

    from tokenlean.errors import ConfigError, EmptyInputError
    from tokenlean.routing.datasets import OutcomeData
    from tokenlean.routing.eval import baseline_scores, evaluate_random, evaluate_scores
    from tokenlean.routing.learned import LearnedRouter
    from tokenlean.routing.outcomes import read_outcomes

    if (args.strong is None) != (args.weak is None):
        raise ConfigError(
            "give both --strong and --weak (the file's columns for the router's two models), or neither"
        )
    router = LearnedRouter.load(args.router, strong=args.strong, weak=args.weak)
    table = read_outcomes(args.outcomes, strong=router.strong, weak=router.weak)
    s, w = table.pair(router.strong, router.weak)
    both = np.flatnonzero(~np.isnan(s) & ~np.isnan(w))
    partial = len(table) - len(both)
    if len(both) == 0:
        raise EmptyInputError(f"{args.outcomes}: no row has both models' outcomes: APGR needs both")
    sub = table.subset(both)
    s, w = sub.pair(router.strong, router.weak)
    if float(s.mean()) == float(w.mean()):
        raise ConfigError(
            f"{args.outcomes}: both models have the same mean quality: there is no gap to recover"
        )
    scores = router.score_table(sub)
    lengths = sub.lengths.astype(np.float64)
    prompts = [p or "" for p in sub.prompts]
    data = OutcomeData(Path(args.outcomes).stem, prompts, s, w, router.strong, router.weak)
    share = float(np.mean(scores >= router.threshold))
    results = {"router": evaluate_scores("router", scores, data), "random": evaluate_random(data)}
    base = baseline_scores(data)
    base["length"] = lengths  # privacy-mode rows have no text, but their length is known
    for name, sc in base.items():
        results[name] = evaluate_scores(name, sc, data)
    sq, wq = data.strong_quality, data.weak_quality
    rows: dict[str, dict[str, float]] = {}
    for name, res in results.items():
        rows[name] = {**res.to_dict(), "pgr_at_share": _at_share(res.curve, share, sq, wq)}
    in_sample = bool(table.sha256) and router.info.get("sha256") == table.sha256
    print(
        f"{args.outcomes}: {len(both)} rows with both outcomes ({partial} with one only, left out; "
        f"{table.skipped} skipped); strong {router.strong} {sq:.3f}, weak {router.weak} {wq:.3f}"
    )
    if in_sample:
        print("  warning: this is the file the router was trained on: in-sample figures flatter it")
    print(f"  router threshold {router.threshold:.4f}: strong-call share {share:.1%}")
    print(f"  {'policy':<8} {'APGR':>6} {'CPT(50%)':>9} {'CPT(80%)':>9} {'PGR@share':>10}")
    for name, m in rows.items():
        print(
            f"  {name:<8} {m['apgr']:>6.3f} {m['cpt50'] * 100:>8.1f}% {m['cpt80'] * 100:>8.1f}% "
            f"{m['pgr_at_share'] * 100:>9.1f}%"
        )
    if args.json:
        report = {
            "outcomes": str(args.outcomes),
            "router": str(args.router),
            "rows": len(both),
            "partial_rows": partial,
            "skipped": table.skipped,
            "strong_quality": sq,
            "weak_quality": wq,
            "threshold": router.threshold,
            "strong_share": share,
            "in_sample": in_sample,
            "policies": rows,
        }
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _eval_scorers(args: argparse.Namespace) -> int:
    from tokenlean.routing.datasets import load_outcomes
    from tokenlean.routing.eval import DEFAULT_KINDS, offline_report, router_vectors

    datasets = load_outcomes(args.csv, args.strong, args.weak, args.data)
    kinds = tuple(k.strip() for k in args.policies.split(",") if k.strip()) or DEFAULT_KINDS
    vectors = router_vectors(datasets, args.cache_dir)
    folds = max(2, min(args.folds, min(len(v) for v in datasets.values()) // 4))
    report = offline_report(datasets, vectors, kinds=kinds, folds=folds)
    for name, pols in report["datasets"].items():
        meta = report["meta"][name]
        print(f"{name}: {meta['rows']} rows, {meta['skipped']} skipped (missing outcome)")
        print(f"  {'policy':<18} {'APGR':>7} {'CPT(50%)':>9} {'CPT(80%)':>9}")
        for pol, m in sorted(pols.items(), key=lambda kv: -kv[1]["apgr"]):
            print(f"  {pol:<18} {m['apgr']:>7.3f} {m['cpt50'] * 100:>8.1f}% {m['cpt80'] * 100:>8.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
