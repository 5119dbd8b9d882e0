"""Compaction speed on one core, and what the fast routes cost in kept answers.

Usage::

    python benchmarks/compaction_speed.py [--data DIR] [--json OUT] [--quick] [--size BYTES]

JSON ``{"speed": {"input": ..., "lexical": ..., "auto": ..., "incremental": {route: ...},
"retention": {...}}}``:

* ``lexical`` — a 5 MB tool output (``--size``; unique text: the SWE-agent trajectories'
  observations, then Python sources of the installed packages, sorted, until the size) compacted
  at a 50% cut in lexical mode: tokens per second.
* ``auto`` — the same input in ``auto`` mode, embedding model already loaded (its load time is
  reported apart: a process pays it once): end-to-end seconds, and how many tokens were embedded
  (above ``embed_max_tokens`` the units are ranked lexically and only the best are embedded).
* ``incremental`` — an agent session replayed call by call (the three longest trajectories,
  30 calls) in incremental mode per route: MiniLM (the ``embeddings`` extra), the static
  embedder, lexical. Steady state = median context tokens per second over the calls after the
  first; the first call is reported on its own (it pays for the whole history).
* ``retention`` — what those routes keep: gold answers still in the context on the long-document
  set (whole Wikipedia articles) and on the NQ test half, at 90% and 95% cuts, per route, and for
  the embedding cap at the share of a 5 MB input it embeds (the cost of the ``auto`` budget).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "core") not in sys.path:
    sys.path.insert(0, str(ROOT / "core"))

DEFAULT_DATA = ROOT.parent / "shared" / "datasets"
QUERY = "why does the test fail with a TypeError in the parser"
CUTS = (0.9, 0.95)


def big_input(data: Path, size: int) -> str:
    """``size`` characters of unique tool-output-like text (observations, then package sources)."""
    parts: list[str] = []
    seen: set[str] = set()
    total = 0
    for path in sorted((data / "agent_traces" / "swe-agent").glob("*.traj")):
        for step in json.loads(path.read_text()).get("trajectory", []):
            obs = step.get("observation") or ""
            if obs and obs not in seen:
                seen.add(obs)
                parts.append(obs)
                total += len(obs) + 1
    site = Path(sysconfig.get_paths()["purelib"])
    for path in sorted(site.rglob("*.py")):
        if total >= size:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text and text not in seen:
            seen.add(text)
            parts.append(f"$ cat {path.relative_to(site)}\n{text}")
            total += len(parts[-1]) + 1
    return "\n".join(parts)[:size]


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def speed_lexical(text: str) -> dict[str, Any]:
    from tokenlean.compaction import Compactor

    comp = Compactor(mode="lexical", ratio=0.5, deadline=None, store="memory", marker=None)
    res, dt = _timed(lambda: comp.compact_documents([text], query=QUERY))
    return {
        "tokens": res.tokens_before,
        "seconds": round(dt, 2),
        "tokens_per_s": round(res.tokens_before / dt),
    }


def speed_auto(text: str, embedder: Any, load_s: float) -> dict[str, Any]:
    from tokenlean.compaction import Compactor

    comp = Compactor(mode="auto", embedder=embedder, ratio=0.5, deadline=None, store="memory", marker=None)
    res, dt = _timed(lambda: comp.compact_documents([text], query=QUERY))
    return {
        "tokens": res.tokens_before,
        "seconds": round(dt, 2),
        "tokens_per_s": round(res.tokens_before / dt),
        "embed_max_tokens": comp.embed_max_tokens,
        "preselected": comp.stats["embedding_preselected"] == 1,
        "lexical_fallbacks": comp.stats["lexical_fallbacks"],
        "model_load_s": round(load_s, 2),
    }


def _session(data: Path) -> list[dict[str, Any]]:
    trajs = []
    for path in sorted((data / "agent_traces" / "swe-agent").glob("*.traj")):
        hist = json.loads(path.read_text()).get("history") or []
        msgs = [
            {"role": m["role"], "content": m["content"] if isinstance(m.get("content"), str) else ""}
            for m in hist
            if m.get("role") in ("system", "user", "assistant")
        ]
        if msgs:
            trajs.append(msgs)
    trajs.sort(key=len, reverse=True)
    return [trajs[0][0], *[m for t in trajs[:3] for m in t if m["role"] != "system"]]


def speed_incremental(data: Path, route: str, embedder: Any, calls: int) -> dict[str, Any]:
    from tokenlean.compaction import Compactor

    session = _session(data)
    comp = Compactor(
        ratio=0.6,
        mode="lexical" if route == "lexical" else "embedding",
        embedder=embedder,
        incremental=True,
        store="memory",
        deadline=None,
    )
    step = max(1, (len(session) - 2) // calls)
    rates, first = [], None
    for k in range(calls):
        prefix = session[: 2 + (k + 1) * step]
        if prefix[-1]["role"] != "user":
            prefix = [*prefix, {"role": "user", "content": "Continue."}]
        res, dt = _timed(lambda prefix=prefix: comp.compact(prefix, session="bench"))
        rate = res.tokens_before / max(dt, 1e-9)
        if first is None:
            first = {"tokens": res.tokens_before, "seconds": round(dt, 3), "tokens_per_s": round(rate)}
        else:
            rates.append(rate)
    return {
        "calls": calls,
        "context_tokens_last_call": res.tokens_before,
        "first_call": first,
        "steady_tokens_per_s_median": round(statistics.median(rates)) if rates else None,
        "steady_tokens_per_s_min": round(min(rates)) if rates else None,
    }


def _rows(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def retention(
    rows: list[dict[str, Any]], mode: str, embedder: Any, cap_share: float | None
) -> dict[str, float]:
    """Gold answers kept at each cut; ``cap_share``: embed at most that share of each context."""
    from tokenlean.compaction import Compactor
    from tokenlean.tokens import count_tokens

    out = {}
    for cut in CUTS:
        hits = 0
        for row in rows:
            cap = None if cap_share is None else max(1, int(cap_share * count_tokens(row["context"])))
            comp = Compactor(
                ratio=cut,
                mode=mode,  # type: ignore[arg-type]
                embedder=embedder,
                marker=None,
                store="memory",
                deadline=None,
                embed_max_tokens=cap,
            )
            text = comp.compact(row["context"], query=row["question"]).text
            hits += any(a and a in text for a in row["answers"])
        out[str(cut)] = round(hits / len(rows), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="a 200 kB input, 6 calls, small retention samples")
    ap.add_argument("--size", type=int, default=0, help="input size in characters (default 5,000,000)")
    args = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    if not (args.data / "agent_traces" / "swe-agent").is_dir():
        console.print(
            f"[red]{args.data}/agent_traces not found[/]: pass --data DIR (the shared datasets folder)"
        )
        return 2
    import torch

    torch.set_num_threads(1)
    from tokenlean.embeddings import get_default_embedder, get_static_embedder

    size = args.size or (200_000 if args.quick else 5_000_000)
    text = big_input(args.data, size)
    t0 = time.perf_counter()
    minilm = get_default_embedder()
    minilm.embed(["warm up the model"])
    load_s = time.perf_counter() - t0
    static = get_static_embedder()
    result: dict[str, Any] = {
        "input": {"characters": len(text), "what": "unique observations + package sources"}
    }
    result["lexical"] = speed_lexical(text)
    result["auto"] = speed_auto(text, minilm, load_s)
    calls = 6 if args.quick else 30
    result["incremental"] = {
        route: speed_incremental(args.data, route, emb, calls)
        for route, emb in (("minilm", minilm), ("static", static), ("lexical", None))
    }
    long_rows = _rows(args.data / "compaction" / "squad_long_dev.jsonl.gz")
    nq = _rows(args.data / "compaction" / "nq_multidoc_dev.jsonl.gz")
    nq_test = nq[len(nq) // 2 :]  # the benchmark's test half (compaction.py nq_split)
    rng = random.Random(0)
    n_long, n_nq = (10, 15) if args.quick else (len(long_rows), 300)
    long_rows = rng.sample(long_rows, min(n_long, len(long_rows)))
    nq_test = rng.sample(nq_test, min(n_nq, len(nq_test)))
    share = result["auto"]["embed_max_tokens"] / max(result["auto"]["tokens"], 1)
    routes = {
        "minilm": ("embedding", minilm, None),
        "static": ("embedding", static, None),
        "lexical": ("lexical", None, None),
        f"minilm, embedding cap at {share:.1%} of the text": ("embedding", minilm, share),
    }
    result["retention"] = {
        "sets": {"long_documents": len(long_rows), "nq_test": len(nq_test)},
        "cap_share": share,
        "routes": {
            name: {
                "long_documents": retention(long_rows, mode, emb, cap),
                "nq_test": retention(nq_test, mode, emb, cap),
            }
            for name, (mode, emb, cap) in routes.items()
        },
    }
    t = Table(
        title=f"Compaction speed, one core ({len(text) / 1e6:.1f} MB input, {result['lexical']['tokens']:,} tokens)"
    )
    for col in ("what", "seconds", "tokens/s", "note"):
        t.add_column(col)
    t.add_row(
        "lexical, 50% cut", str(result["lexical"]["seconds"]), f"{result['lexical']['tokens_per_s']:,}", ""
    )
    a = result["auto"]
    t.add_row(
        "auto, 50% cut",
        str(a["seconds"]),
        f"{a['tokens_per_s']:,}",
        f"embeds <= {a['embed_max_tokens']:,} tokens; model load {a['model_load_s']} s apart",
    )
    for route, r in result["incremental"].items():
        t.add_row(
            f"incremental ({route}), steady",
            "",
            f"{r['steady_tokens_per_s_median']:,}",
            f"first call {r['first_call']['tokens_per_s']:,} tok/s over {r['first_call']['tokens']:,} tokens",
        )
    console.print(t)
    rt = Table(title="Answers kept per route (long documents / NQ test half)")
    rt.add_column("route")
    for cut in CUTS:
        rt.add_column(f"long @{cut:.0%}")
        rt.add_column(f"NQ @{cut:.0%}")
    for name, r in result["retention"]["routes"].items():
        cells = []
        for cut in CUTS:
            cells += [f"{r['long_documents'][str(cut)]:.1%}", f"{r['nq_test'][str(cut)]:.1%}"]
        rt.add_row(name, *cells)
    console.print(rt)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"speed": result, "quick": args.quick}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
