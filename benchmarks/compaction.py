"""Compaction benchmark: answer retention at a token cut, side by side with peers and baselines.

    python benchmarks/compaction.py [--data DIR] [--json OUT] [--ratio 0.9] [--quick]
                                    [--set nq|squad_long] [--qa FILE] [--split test] [--limit N]
                                    [--ratios 0.75,0.95] [--methods a,b,...]

Metric (no LLM needed): **answer retention**, the share of questions whose gold answer string still
occurs in the compacted context, at the achieved **reduction** (1 - tokens after / tokens before,
over the rows the method answered), plus **tokens_per_s** (context tokens in / seconds inside the
method, at the first cut; later cuts reuse the method's caches and report ``tokens_per_s_warm``),
**errors** (calls that raised: counted as lost answers, never as empty output) and, for the text
each method returns, **verbatim_lines** (share of non-empty output lines byte-identical to an input
line) and **verbatim_sentences** (share of output sentences that occur verbatim in the input:
methods that keep whole sentences but join them score 100% here and less on lines; methods that
keep clauses of a sentence score less).

Data (``--set``): ``nq``, the NQ 20-document set (``compaction/nq_multidoc_dev.jsonl.gz``;
lost-in-the-middle's layout, the LongLLMLingua setting), split in two halves: ``dev`` (first half,
used to fit the scorer's weights with ``--fit``) and ``test`` (second half, the default, never used
for fitting); ``squad_long`` (``compaction/squad_long_dev.jsonl.gz``): one whole Wikipedia article
per question, the answer one span. Or any JSONL of ``{"context", "question", "answers"}`` with
``--qa``.

Every method gets the same rows and the same target cut ``--ratio`` (share of tokens removed; the
extra cuts in ``--ratios``, default 0.75 and 0.95, are measured in the same run):
``tokenlean-lexical`` and ``tokenlean-embedding`` (this package), ``truncate-recent`` (keep the most
recent tokens), ``langchain-trim_messages`` (one message per passage, ``strategy="last"``),
``llamaindex-SentenceEmbeddingOptimizer`` (same MiniLM model, ``percentile_cutoff = 1 - ratio``,
no context sentences), ``llamaindex-SentenceEmbeddingOptimizer-defaults`` (the same cutoff, context
window at its defaults: one sentence either side of each kept one), ``random-drop`` (random units
until the budget holds), and the peers and RAG baselines of ``benchmarks/compaction_peers.py``
(headroom-ai ``compress()`` and ``TextCrusher``, distil-llm ``compress_messages`` default and
``verbatim=True``, top-k chunks by MiniLM embedding and by BM25 up to the budget). Methods that take
no target (distil, headroom's ``compress()``) report the reduction they chose. A peer that is not
installed, or needs a model that cannot be downloaded here (LongLLMLingua, LLMLingua-2), is listed
under ``"not_run"`` with the reason. Each embedding method has its own embedder instance, so no
method profits from another's cache. tokenlean's compactors run with ``deadline=None`` (the
per-call deadline is a safety net that trades quality for latency on huge inputs: the benchmark
measures the method) and an in-memory omission store.

Also measured on ``nq``: ``incremental`` (context tokens per second per call over a 30-call
SWE-agent session with ``incremental=True`` and embeddings) and ``needles`` (a fact planted in an
old observation of each SWE-agent trajectory must survive a 90% cut when the last turn asks for it),
and ``sessions`` (``benchmarks/compaction_sessions.py``: every method's input cost per agent session
under OpenAI's and Anthropic's prompt caching, action evidence kept, verbatim lines).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
NQ_FILE = Path("compaction") / "nq_multidoc_dev.jsonl.gz"
SQUAD_LONG_FILE = Path("compaction") / "squad_long_dev.jsonl.gz"
TRACES = Path("agent_traces") / "swe-agent"

Method = Callable[[str, str, float], str]


# -- data ------------------------------------------------------------------------------------


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for line in fh:
            if line.strip():
                row = json.loads(line)
                if not {"context", "question", "answers"} <= row.keys():
                    raise SystemExit(f"{path}: every line needs context, question and answers")
                rows.append(row)
    return rows


def nq_split(rows: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    half = len(rows) // 2
    return {"dev": rows[:half], "test": rows[half:], "all": rows}[split]


def retained(text: str, answers: list[str]) -> bool:
    return any(a and a in text for a in answers)


# -- methods ---------------------------------------------------------------------------------


def _budget(tokens: int, ratio: float) -> int:
    return int(tokens * (1.0 - ratio))


def make_tokenlean(mode: str, embedder: Any = None) -> Method:
    from tokenlean.compaction import Compactor

    compactors: dict[float, Compactor] = {}

    def run(context: str, question: str, ratio: float) -> str:
        comp = compactors.get(ratio)
        if comp is None:
            comp = compactors[ratio] = Compactor(
                ratio=ratio, mode=mode, embedder=embedder, marker=None, store="memory", deadline=None
            )  # type: ignore[arg-type]
        return comp.compact(context, query=question).text

    return run


def make_truncate() -> Method:
    from tokenlean.tokens import count_tokens

    def run(context: str, question: str, ratio: float) -> str:
        budget = _budget(count_tokens(context), ratio)
        lo, hi = 0, len(context)  # smallest start whose suffix fits
        while lo < hi:
            mid = (lo + hi) // 2
            if count_tokens(context[mid:]) <= budget:
                hi = mid
            else:
                lo = mid + 1
        return context[lo:]

    return run


def _passages(context: str) -> list[str]:
    from tokenlean.compaction.segment import segment

    out: list[str] = []
    group = -1
    for u in segment(context, clauses=False):
        if u.group != group:
            out.append("")
            group = u.group
        out[-1] += u.text
    return out


def make_trim_messages() -> Method:
    from langchain_core.messages import HumanMessage, trim_messages

    from tokenlean.tokens import count_tokens

    def counter(msgs: list[Any]) -> int:
        return sum(count_tokens(m.content) for m in msgs)

    def run(context: str, question: str, ratio: float) -> str:
        budget = _budget(count_tokens(context), ratio)
        msgs = [HumanMessage(p) for p in _passages(context)]
        kept = trim_messages(
            msgs, max_tokens=budget, token_counter=counter, strategy="last", allow_partial=False
        )
        return "".join(m.content for m in kept)

    return run


def make_optimizer(embedder: Any, context_window: bool = False) -> Method:
    """LlamaIndex's optimizer at ``percentile_cutoff = 1 - ratio``.

    ``context_window=False``: no neighbour sentences (the budget holds); ``True``: the context
    window at its defaults (one sentence before and after each kept one). Its errors ("Optimizer
    returned zero sentences.") propagate and are counted as errors by :func:`evaluate`.
    """
    from llama_index.core.postprocessor import SentenceEmbeddingOptimizer
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from llama_index.postprocessor.tokenlean.compaction import TokenleanEmbedding

    model = TokenleanEmbedding(embedder)
    window: dict[str, int] = {} if context_window else {"context_before": 0, "context_after": 0}

    def run(context: str, question: str, ratio: float) -> str:
        opt = SentenceEmbeddingOptimizer(embed_model=model, percentile_cutoff=1.0 - ratio, **window)
        nodes = [NodeWithScore(node=TextNode(text=context), score=1.0)]
        out = opt.postprocess_nodes(nodes, query_bundle=QueryBundle(question))
        return out[0].node.get_content()

    return run


def make_random(seed: int = 0) -> Method:
    from tokenlean.compaction.segment import segment
    from tokenlean.tokens import count_tokens

    rng = random.Random(seed)

    def run(context: str, question: str, ratio: float) -> str:
        units = segment(context, clauses=True)
        costs = [count_tokens(u.text) for u in units]
        budget = _budget(sum(costs), ratio)
        order = list(range(len(units)))
        rng.shuffle(order)
        keep, used = set(), 0
        for i in order:
            if used + costs[i] <= budget:
                keep.add(i)
                used += costs[i]
        return "".join(u.text for i, u in enumerate(units) if i in keep)

    return run


# -- evaluation ------------------------------------------------------------------------------


WARM_UP = "".join(
    f"Document [{i}](Title: Warm up {i}) Warm-up passage {i} is not part of the data.\n" for i in range(1, 41)
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def verbatim_counts(out: str, context: str) -> tuple[int, int, int, int]:
    """(output lines, of them byte-identical input lines, output sentences, of them in the input)."""
    in_lines = set(context.splitlines())
    lines = [ln for ln in out.splitlines() if ln.strip()]
    sentences = [s.strip() for s in _SENTENCE_END.split(out) if s.strip()]
    return (
        len(lines),
        sum(ln in in_lines for ln in lines),
        len(sentences),
        sum(s in context for s in sentences),
    )


def evaluate(method: Method, rows: list[dict[str, Any]], ratio: float) -> dict[str, Any]:
    """Run ``method`` on every row at ``ratio``.

    A call that raises counts as an error and a lost answer; its row is left out of the reduction
    (there is no output to measure) but its time still counts.
    """
    from tokenlean.tokens import count_tokens

    before = after = hits = errors = 0
    lines = lines_ok = sents = sents_ok = 0
    first_error: str | None = None
    elapsed = 0.0
    # warm-up (model loads, tokenizer files, lazy imports behind a size threshold) on text that
    # shares nothing with the rows; a warm-up failure is not a row's error (the rows show it)
    with contextlib.suppress(Exception):
        method(WARM_UP, "warm up?", ratio)
    for row in rows:
        t0 = time.perf_counter()
        try:
            out = method(row["context"], row["question"], ratio)
        except Exception as exc:
            elapsed += time.perf_counter() - t0
            errors += 1
            if first_error is None:
                first_error = f"{type(exc).__name__}: {exc}"[:300]
            continue
        elapsed += time.perf_counter() - t0
        before += count_tokens(row["context"])
        after += count_tokens(out)
        hits += retained(out, row["answers"])
        n_lines, n_lines_ok, n_sents, n_sents_ok = verbatim_counts(out, row["context"])
        lines += n_lines
        lines_ok += n_lines_ok
        sents += n_sents
        sents_ok += n_sents_ok
    total_in = sum(count_tokens(r["context"]) for r in rows) if errors else before
    res: dict[str, Any] = {
        "reduction": round(1.0 - after / max(before, 1), 4),
        "answer_retention": round(hits / max(len(rows), 1), 4),
        "tokens_per_s": round(total_in / max(elapsed, 1e-9), 1),
        "n": len(rows),
        "errors": errors,
        "verbatim_lines": round(lines_ok / lines, 4) if lines else None,
        "verbatim_sentences": round(sents_ok / sents, 4) if sents else None,
    }
    if first_error is not None:
        res["first_error"] = first_error
    return res


def fit_weights(
    rows: list[dict[str, Any]], embedder: Any, iters: int = 1500, lexical: bool = False
) -> dict[str, float]:
    """Logistic regression of 'this unit contains the answer' on the scorer's features (dev only)."""
    import numpy as np

    from tokenlean.compaction.scoring import features
    from tokenlean.compaction.segment import segment
    from tokenlean.tokens import get_counter

    counter = get_counter(None)
    xs, ys = [], []
    names: tuple[str, ...] = ()
    for row in rows:
        units = segment(row["context"], clauses=True)
        texts = [u.text for u in units]
        f = features(
            texts,
            [u.group for u in units],
            [u.kind for u in units],
            row["question"],
            token_counts=[counter.count(t) for t in texts],
            embedder=None if lexical else embedder,
            sentences=[u.sentence for u in units],
        )
        names = f.names
        xs.append(f.matrix)
        ys.append(np.array([retained(t, row["answers"]) for t in texts], dtype=np.float64))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    w = np.zeros(x.shape[1])
    b = 0.0
    pos = max(y.mean(), 1e-6)
    sw = np.where(y > 0, 0.5 / pos, 0.5 / (1 - pos))  # balance the rare positives
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        g = (sw * (p - y)) @ x / len(y) + 1e-3 * w
        w -= 0.5 * g
        b -= 0.5 * float((sw * (p - y)).mean())
    return {n: round(float(v), 3) for n, v in zip(names, w, strict=True)}


def _trajectories(data: Path) -> list[list[dict[str, Any]]]:
    out = []
    for path in sorted((data / TRACES).glob("*.traj")):
        hist = json.loads(path.read_text()).get("history") or []
        msgs = [
            {"role": m["role"], "content": m["content"]}
            for m in hist
            if m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        ]
        if len(msgs) >= 8:
            out.append(msgs)
    return out


NEEDLES = (
    (
        "The staging server for this task is named bluefinch-17.",
        "What is the staging server for this task named?",
        "bluefinch-17",
    ),
    (
        "Note: the rollback token issued by ops is QZ-48213.",
        "Which rollback token did ops issue?",
        "QZ-48213",
    ),
    (
        "The on-call reviewer this week is Marguerite Okonkwo.",
        "Who is the on-call reviewer this week?",
        "Marguerite Okonkwo",
    ),
)


def needle_retention(data: Path, mode: str, embedder: Any, ratio: float) -> dict[str, float]:
    from tokenlean.compaction import Compactor

    trajs = _trajectories(data)
    hits = before = after = 0
    for k, msgs in enumerate(trajs):
        fact, question, answer = NEEDLES[k % len(NEEDLES)]
        msgs = [dict(m) for m in msgs]
        obs = [i for i, m in enumerate(msgs) if m["role"] == "user"][1:]  # observations
        target = obs[len(obs) // 3] if obs else len(msgs) // 2
        msgs[target]["content"] = msgs[target]["content"] + "\n" + fact
        msgs.append({"role": "user", "content": question})
        comp = Compactor(ratio=ratio, mode=mode, embedder=embedder, store="memory", deadline=None)  # type: ignore[arg-type]
        res = comp.compact(msgs)
        res.verify()
        before += res.tokens_before
        after += res.tokens_after
        hits += any(answer in m.text for m in res.messages[:-1])
    return {
        "needle_retention": round(hits / max(len(trajs), 1), 4),
        "reduction": round(1.0 - after / max(before, 1), 4),
        "n": len(trajs),
    }


def incremental_throughput(
    data: Path, embedder: Any, calls: int = 30, ratio: float = 0.6
) -> dict[str, float]:
    """Context tokens per second per call over a growing session (the agent-loop workload)."""
    from tokenlean.compaction import Compactor

    trajs = sorted(_trajectories(data), key=len, reverse=True)
    session = [m for t in trajs[:3] for m in t if m["role"] != "system"]
    session = [trajs[0][0], *session]
    comp = Compactor(
        ratio=ratio, mode="embedding", embedder=embedder, incremental=True, store="memory", deadline=None
    )
    rates, total_tokens, total_time = [], 0, 0.0
    step = max(1, (len(session) - 2) // calls)
    for k in range(calls):
        prefix = session[: 2 + (k + 1) * step]
        if prefix[-1]["role"] != "user":
            prefix = [*prefix, {"role": "user", "content": "Continue."}]
        t0 = time.perf_counter()
        res = comp.compact(prefix)
        dt = time.perf_counter() - t0
        rates.append(res.tokens_before / max(dt, 1e-9))
        total_tokens += res.tokens_before
        total_time += dt
    return {
        "calls": calls,
        "context_tokens_last_call": res.tokens_before,
        "tokens_per_s": round(total_tokens / max(total_time, 1e-9), 1),
        "median_call_tokens_per_s": round(sorted(rates)[len(rates) // 2], 1),
        "reduction_last_call": round(res.reduction, 4),
    }


# -- main ------------------------------------------------------------------------------------


def _builders(embedder: Callable[[], Any]) -> dict[str, Callable[[], Method]]:
    """Every method by name, in table order; a builder may raise ``NotRun`` with its reason."""
    import compaction_peers as peers

    def not_runnable(reason: str) -> Callable[[], Method]:
        def build() -> Method:
            raise peers.NotRun(reason)

        return build

    builders: dict[str, Callable[[], Method]] = {
        "tokenlean-lexical": lambda: make_tokenlean("lexical"),
        "tokenlean-embedding": lambda: make_tokenlean("embedding", embedder()),
        "truncate-recent": make_truncate,
        "langchain-trim_messages": make_trim_messages,
        "llamaindex-SentenceEmbeddingOptimizer": lambda: make_optimizer(embedder()),
        "llamaindex-SentenceEmbeddingOptimizer-defaults": lambda: make_optimizer(
            embedder(), context_window=True
        ),
        "random-drop": make_random,
        "topk-chunks-embedding": lambda: peers.make_topk("embedding", embedder()),
        "topk-chunks-bm25": lambda: peers.make_topk("bm25"),
        "headroom-compress": peers.make_headroom_compress,
        "headroom-TextCrusher": peers.make_headroom_textcrusher,
        "distil-compress_messages": lambda: peers.make_distil(verbatim=False),
        "distil-compress_messages-verbatim": lambda: peers.make_distil(verbatim=True),
    }
    for name, reason in peers.NOT_RUNNABLE.items():
        builders[name] = not_runnable(reason)
    return builders


# methods that take no target ratio: their reduction is their own choice
OWN_RATIO = frozenset({"headroom-compress", "distil-compress_messages", "distil-compress_messages-verbatim"})

NOTES = {
    "llamaindex-SentenceEmbeddingOptimizer-defaults": (
        "percentile_cutoff = 1 - ratio with the context window at its defaults (1 sentence before "
        "and after each kept one): the output overshoots the budget"
    ),
    "distil-compress_messages": "takes no target ratio; the passages are a tool result",
    "distil-compress_messages-verbatim": "takes no target ratio; lossless transforms only",
    "headroom-TextCrusher": "target_ratio = 1 - ratio, the question as context",
    "topk-chunks-embedding": "passages (long ones cut at sentences, <= 200 tokens), MiniLM cosine",
    "topk-chunks-bm25": "passages (long ones cut at sentences, <= 200 tokens), Okapi BM25",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="datasets folder (default ../shared/datasets)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    ap.add_argument(
        "--set",
        dest="dataset",
        choices=("nq", "squad_long"),
        default="nq",
        help="nq: NQ 20 documents (default); squad_long: one whole article per question",
    )
    ap.add_argument(
        "--qa", type=Path, default=None, help="JSONL of {context, question, answers} instead of --set"
    )
    ap.add_argument(
        "--ratio", type=float, default=0.9, help="target cut: share of tokens removed (default 0.9)"
    )
    ap.add_argument(
        "--ratios",
        default=None,
        help="extra cuts measured in the same run (default 0.75,0.95; none with --quick; '' for none)",
    )
    ap.add_argument("--split", choices=("dev", "test", "all"), default="test", help="NQ half (--set nq)")
    ap.add_argument("--limit", type=int, default=None, help="first N examples of the split")
    ap.add_argument("--quick", action="store_true", help="20 examples, one cut, no extras (for tests)")
    ap.add_argument("--methods", default=None, help="comma-separated subset of methods")
    ap.add_argument("--fit", action="store_true", help="fit scorer weights on the dev split and print them")
    ap.add_argument("--no-extras", action="store_true", help="skip the needle and incremental measurements")
    args = ap.parse_args(argv)

    if not 0.0 <= args.ratio < 1.0:
        ap.error("--ratio must be in [0, 1)")
    if args.qa is not None:
        if not args.qa.exists():
            ap.error(f"--qa file not found: {args.qa}")
        rows = load_jsonl(args.qa)
        source = str(args.qa)
    else:
        path = args.data / (NQ_FILE if args.dataset == "nq" or args.fit else SQUAD_LONG_FILE)
        if not path.exists():
            print(
                f"dataset not found: {path}\npass --data DIR (the folder holding compaction/ and agent_traces/) or --qa FILE",
                file=sys.stderr,
            )
            return 2
        rows = load_jsonl(path)
        if args.dataset == "nq" or args.fit:
            split = "dev" if args.fit else args.split
            rows = nq_split(rows, split)
            source = f"{path} [{split}]"
        else:
            source = str(path)
    limit = 20 if args.quick and args.limit is None else args.limit
    if limit is not None:
        rows = rows[:limit]

    from tokenlean.embeddings import SentenceTransformerEmbedder

    if args.fit:
        emb = SentenceTransformerEmbedder(cache_size=200_000)
        weights = {"embedding": fit_weights(rows, emb), "lexical": fit_weights(rows, emb, lexical=True)}
        print(json.dumps(weights, indent=2))
        if args.json:
            args.json.write_text(json.dumps({"weights": weights, "n": len(rows)}, indent=2))
        return 0

    def embedder() -> Any:
        # the model of tokenlean.embeddings.get_default_embedder(), one fresh instance per method
        return SentenceTransformerEmbedder(cache_size=200_000)

    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)  # compaction_peers.py sits next to this file
    import compaction_peers as peers

    builders = _builders(embedder)
    wanted = [m for m in args.methods.split(",") if m] if args.methods else list(builders)
    for name in wanted:
        if name not in builders:
            ap.error(f"unknown method {name!r}; choose from {', '.join(builders)}")
    extra = args.ratios if args.ratios is not None else ("" if args.quick else "0.75,0.95")
    ratios = [args.ratio]
    for r in (float(x) for x in extra.split(",") if x.strip()):
        if not 0.0 <= r < 1.0:
            ap.error("--ratios must be in [0, 1)")
        if r not in ratios:
            ratios.append(r)
    results: dict[str, Any] = {
        "methods": {},
        "by_ratio": {},
        "not_run": {},
        "source": source,
        "n": len(rows),
        "ratio": args.ratio,
        "ratios": ratios,
    }
    for name in wanted:
        try:
            method = builders[name]()
        except peers.NotRun as exc:
            results["not_run"][name] = str(exc)
            print(f"{name:48s} NOT RUN: {exc}", file=sys.stderr, flush=True)
            continue
        by_cut = {}
        for r in ratios:
            res = evaluate(method, rows, r)
            if r != ratios[0]:
                # the first cut filled the method's caches (embeddings): later cuts' speed is not
                # a cold figure, so it is reported apart
                res["tokens_per_s_warm"] = res.pop("tokens_per_s")
            results["by_ratio"].setdefault(str(r), {})[name] = res
            by_cut[str(r)] = {k: res[k] for k in ("answer_retention", "reduction", "errors")}
            print(f"{name:48s} ratio={r:.2f} {res}", file=sys.stderr, flush=True)
        row = dict(results["by_ratio"][str(args.ratio)][name])
        row["follows_cut"] = name not in OWN_RATIO
        row["by_cut"] = by_cut
        note = NOTES.get(name)
        if isinstance(method, peers.HeadroomCompress):
            note = method.note()
        if note:
            row["note"] = note
        results["methods"][name] = row
    if args.qa is None and args.dataset == "nq":
        results["published"] = peers.PUBLISHED

    if not (args.quick or args.no_extras or args.qa or args.dataset != "nq"):
        emb = embedder()
        results["needles"] = {
            "tokenlean-lexical": needle_retention(args.data, "lexical", None, args.ratio),
            "tokenlean-embedding": needle_retention(args.data, "embedding", emb, args.ratio),
        }
        # a fresh embedder: the needle run above must not warm the session's cache
        results["incremental"] = incremental_throughput(args.data, embedder())
        # part 3 of the same report: agent sessions under prompt caching (compaction_sessions.py)
        import compaction_sessions

        results["sessions"] = compaction_sessions.run(
            args.data, list(compaction_sessions.METHODS), quick=False, tune=False
        )["sessions"]

    _print_table(results, ratios)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _print_table(results: dict[str, Any], ratios: list[float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"compaction: answer retention on {results['source']} (n={results['n']})")
    table.add_column("method")
    for r in ratios:
        table.add_column(f"cut {r:.0%}: retention / reduction", justify="right")
    table.add_column(f"tok/s @ {ratios[0]:.0%}", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("verbatim lines / sentences", justify="right")
    for name, res in results["methods"].items():
        cells = []
        for r in ratios:
            x = results["by_ratio"][str(r)][name]
            cells.append(f"{x['answer_retention']:.1%} / {x['reduction']:.1%}")
        errors = sum(results["by_ratio"][str(r)][name]["errors"] for r in ratios)
        vl, vs = res["verbatim_lines"], res["verbatim_sentences"]
        verbatim = f"{'-' if vl is None else f'{vl:.0%}'} / {'-' if vs is None else f'{vs:.0%}'}"
        label = name if res["follows_cut"] else f"{name} (own ratio)"
        table.add_row(label, *cells, f"{res['tokens_per_s']:,.0f}", str(errors), verbatim)
    console = Console()
    console.print(table)
    for name, res in results["methods"].items():
        if "note" in res:
            console.print(f"  {name}: {res['note']}")
    for name, reason in results["not_run"].items():
        console.print(f"  not run: {name}: {reason}")
    if "needles" in results:
        console.print(f"needles (SWE-agent, planted facts): {results['needles']}")
    if "incremental" in results:
        console.print(f"incremental embedding session: {results['incremental']}")


if __name__ == "__main__":
    sys.exit(main())
