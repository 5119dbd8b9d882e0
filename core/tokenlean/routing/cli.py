"""``tokenlean route ...``: offline evaluation of routing policies from outcome data.

``tokenlean route eval --csv outcomes.csv --strong gpt-4o --weak llama-3-8b`` prints APGR and
CPT(50%)/CPT(80%) for the learned routers, ``tokenlean-best`` and the random / length /
oracle baselines (``--json OUT`` writes them). ``--data DIR`` evaluates RouteLLM's sets instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register_cli"]


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    route = subparsers.add_parser("route", help="routing: evaluate policies offline")
    sub = route.add_subparsers(dest="route_command", metavar="COMMAND")
    ev = sub.add_parser("eval", help="APGR / CPT of routing policies on outcome data")
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


def _eval(args: argparse.Namespace) -> int:
    from tokenlean.routing.eval import DEFAULT_KINDS, load_outcomes, offline_report, router_vectors

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
