#!/usr/bin/env python
"""Build the learned router shipped with tokenlean (``LearnedRouter.default``; issue 18, item 5).

Usage::

    python scripts/train_default_router.py [--data DIR] [--out DIR] [--full] [--cache-dir DIR]

**Data.** All of RouteLLM's outcome data in ``DIR/routing/routellm`` (default ``../shared/datasets``;
lm-sys/RouteLLM at 0b64fdaf, Apache-2.0): GSM8K (1,319 questions) and MMLU (14,042, 57 subjects),
0/1 correctness of GPT-4 (``gpt-4-1106-preview``) and Mixtral-8x7B-Instruct, and MT-Bench (80
questions), the GPT-4 judge's 1-10 scores of both. Prompts RouteLLM lists as contaminated (in its
own training data) are left out, as ``tokenlean.routing.datasets.load_routellm`` always does. MT-Bench
scores are put on GSM8K/MMLU's 0-1 scale (``(score - 1) / 9``) before the sets are pooled, so one
set's scale does not swamp the others.

**Recipe.** The default ``LearnedRouter`` and nothing tuned here: the ``ensemble`` scorer
(``gap`` + ``knn-gap`` + ``lexical``) on the static MiniLM embedding of each prompt whole and in two
halves, plus its length. The threshold sends half of the training prompts to the strong model
(MMLU is 91% of them); users set their own share with ``router.calibrate(prompts,
strong_share=...)``. How well this recipe generalises to sets it was not trained on is measured by
``benchmarks/routing.py`` (leave-one-dataset-out), not here.

**Output.** ``--out`` (default ``core/tokenlean/routing/data/default_router``): ``router.json`` +
``arrays.npz`` written by ``LearnedRouter.save(compact=True)`` (16-bit arrays, the ``knn-gap``
neighbours in 8 bits; ``--full`` keeps every array at full precision, about 3x larger). The file
records the data (rows per set, the sha256 of every source file), the recipe, the training time,
and the embedder it expects (name, dimension, SHA-256 of the static table, probe vectors), so
``load`` refuses another embedder. Deterministic for a given machine (fixed seeds, no sampling);
another BLAS may change the last digits. About 40 s to embed the 15k prompts (cached under
``--cache-dir``) and 40-90 s to fit on one core.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))

import numpy as np  # noqa: E402

from tokenlean.routing.datasets import ROUTELLM_STRONG, ROUTELLM_WEAK, load_routellm  # noqa: E402
from tokenlean.routing.eval import cached_embeddings  # noqa: E402
from tokenlean.routing.learned import LearnedRouter  # noqa: E402

#: Each set's score range, mapped to [0, 1] before pooling.
SCALES = {"gsm8k": (0.0, 1.0), "mmlu": (0.0, 1.0), "mt_bench": (1.0, 10.0)}
STRONG_SHARE = 0.5


def _file_hashes(root: Path) -> dict[str, str]:
    out = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in (".csv", ".jsonl"):
            out[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets"), help="datasets folder")
    ap.add_argument("--out", default=str(ROOT / "core" / "tokenlean" / "routing" / "data" / "default_router"))
    ap.add_argument("--full", action="store_true", help="full-precision arrays (about 3x larger)")
    ap.add_argument("--cache-dir", help="where prompt embeddings are cached (default: temp dir)")
    args = ap.parse_args(argv)

    root = Path(args.data) / "routing" / "routellm"
    if not root.is_dir():
        print(
            f"no RouteLLM data under {root}: pass --data DIR (laid out as ../shared/datasets)",
            file=sys.stderr,
        )
        return 2
    sets = load_routellm(root)
    router = LearnedRouter(ROUTELLM_STRONG, ROUTELLM_WEAK)
    t0 = time.perf_counter()
    prompts: list[str] = []
    strong, weak, vectors = [], [], []
    for name, data in sets.items():
        lo, hi = SCALES[name]
        prompts += data.prompts
        strong.append((data.strong - lo) / (hi - lo))
        weak.append((data.weak - lo) / (hi - lo))
        vectors.append(cached_embeddings(data.prompts, router.embedder, args.cache_dir))
        print(f"{name}: {len(data)} prompts (contaminated ones excluded), {data.skipped} skipped")
    x = np.vstack(vectors)
    t_embed = time.perf_counter() - t0
    t1 = time.perf_counter()
    router.fit(prompts, np.concatenate(strong), np.concatenate(weak), vectors=x)
    router.calibrate(prompts, strong_share=STRONG_SHARE, vectors=x)
    t_fit = time.perf_counter() - t1
    router.info = {
        "trained_on": {
            "source": "lm-sys/RouteLLM at 0b64fdaf, routellm/evals (Apache-2.0)",
            "rows": {k: len(v) for k, v in sets.items()},
            "contaminated_prompts": "excluded",
            "scales": {k: list(v) for k, v in SCALES.items()},
            "files_sha256": _file_hashes(root),
        },
        "recipe": {"scorer": "ensemble", "active_members": router.scorer.active, "segments": True},
        "threshold": f"strong share {STRONG_SHARE} of the training prompts",
        "seconds": {"embed": round(t_embed, 1), "fit_and_calibrate": round(t_fit, 1)},
        "script": "scripts/train_default_router.py",
    }
    out = router.save(args.out, compact=not args.full)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    check = LearnedRouter.load(out)  # refuses a mismatched embedder; reproduces its probe scores
    agree = float(
        np.mean(
            (check.score(prompts[:2000], vectors=x[:2000]) >= check.threshold)
            == (router.score(prompts[:2000], vectors=x[:2000]) >= router.threshold)
        )
    )
    print(f"members: {router.scorer.active}; threshold {router.threshold:.4f}")
    print(f"embedding {t_embed:.1f} s, fit + calibrate {t_fit:.1f} s")
    print(
        f"wrote {out} ({size / 1e6:.2f} MB); decisions of the saved router agree with the fitted one on "
        f"{agree:.2%} of the first 2,000 prompts"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
