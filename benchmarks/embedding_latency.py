"""What one query's embedding costs, and how far each faster path moves the vectors.

A semantic-cache lookup embeds one short, never-seen query on the request path, so the figure
that matters is the latency of a *single* text on *one* core (target: p50 <= 10 ms), not batch
throughput; the LRU of recent texts is off here (``cache_size=0``), so every call runs the model.
A faster path is only useful if the vectors keep their meaning: the cache's thresholds and guards
are calibrated on the reference model's cosines. Options, each timed on the same queries with the
calls interleaved (query 1 on every option, then query 2, ...; the option order rotates) so
that load drifting on a shared machine hits all of them alike:

- ``sentence-transformers``: ``SentenceTransformer.encode``, the reference (``backend=
  "sentence-transformers"``).
- ``fast-float32`` / ``fast-bfloat16``: tokenlean's direct forward pass (``backend="fast"``) in
  either precision; ``precision="auto"`` (the default) picks bfloat16 only where the CPU
  multiplies it natively (on other CPUs that row is emulated and slow).
- ``torch-int8-dynamic``: ``torch.ao.quantization.quantize_dynamic`` on the Linear layers, run
  without sentence-transformers' per-call overhead (tokenizer + model + pooling directly).
- ``onnxruntime-float32`` / ``onnxruntime-int8``: the model exported with ``torch.onnx`` and run
  by ONNX Runtime (dynamic int8 by ``onnxruntime.quantization``); only when ``onnxruntime`` and
  ``onnx`` are installed (they are not tokenlean dependencies).

Quality per option: cosine between its vector and the reference's for the agreement texts (Quora
questions plus longer Natural Questions passages, so truncation is exercised), mean and min; and,
on labelled Quora duplicate pairs from the *calibration* half of ``meancache/val.csv`` (the same
split as ``benchmarks/semantic_cache.py``), the duplicate-vs-not ROC AUC of the pair cosine and
the largest change of a pair's cosine against the reference's. Timed queries come from that half too.

Usage: ``python benchmarks/embedding_latency.py [--data DIR] [--json OUT] [--quick] [--no-onnx]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import json
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "core") not in sys.path:
    sys.path.insert(0, str(ROOT / "core"))

import numpy as np  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets"
TARGET_P50_MS = 10.0
MIN_AGREEMENT = 0.99

#: One text in, one L2-normalised float32 row out.
EmbedOne = Callable[[str], np.ndarray]


# -- data ------------------------------------------------------------------------------------------
def load_pairs(data: Path) -> list[tuple[str, str, bool]]:
    """Calibration-half pairs ``(cached, query, duplicate)`` of ``meancache/val.csv``."""
    from tokenlean.cache.cli import read_pairs

    path = data / "semantic_cache" / "meancache" / "val.csv"
    if not path.exists():
        sys.exit(f"{path} not found: pass --data DIR (the folder holding semantic_cache/)")
    from semantic_cache import group_split  # the same calibration / report split, by question group

    pairs = [(q1, q2, dup) for q2, q1, dup in read_pairs(path)]
    return [pairs[i] for i in group_split(pairs)[0]]


def load_passages(data: Path, n: int, rng: random.Random) -> list[str]:
    """``n`` Wikipedia passages (60-250 words) from the NQ compaction set: long inputs, some
    past the model's 256-token window."""
    path = data / "compaction" / "nq_multidoc_dev.jsonl.gz"
    if not path.exists() or n <= 0:
        return []
    out: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            for doc in json.loads(line)["context"].split("\nDocument ["):
                body = doc.split(")", 1)[-1].strip()
                if 60 <= len(body.split()) <= 250:
                    out.append(body)
            if len(out) >= 20 * n:
                break
    rng.shuffle(out)
    return out[:n]


def query_texts(pairs: list[tuple[str, str, bool]], rng: random.Random) -> list[str]:
    """Distinct questions of typical cache-query length (5-40 words), shuffled."""
    texts = list(dict.fromkeys(t for a, b, _ in pairs for t in (a, b) if 5 <= len(t.split()) <= 40))
    rng.shuffle(texts)
    return texts


# -- options ---------------------------------------------------------------------------------------
def tokenlean_option(
    backend: str, precision: str = "auto"
) -> tuple[EmbedOne, Callable[[list[str]], np.ndarray]]:
    """tokenlean's embedder with the LRU off: ``(one text, a batch)``."""
    from tokenlean.embeddings import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder(cache_size=0, backend=backend, precision=precision)  # type: ignore[arg-type]
    emb.embed(["warm up"])
    return emb.embed_one, emb.embed


def direct_torch(model: Any, tokenizer: Any) -> EmbedOne:
    """A transformers model run on one text with no sentence-transformers in between."""
    import torch

    def embed_one(text: str) -> np.ndarray:
        ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.inference_mode():
            hidden = model(
                input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids)
            ).last_hidden_state[0]
            vec = hidden.float().mean(0)
            return (vec / vec.norm()).numpy()

    return embed_one


def rust_tokenizer(st: Any) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(st.tokenizer.backend_tokenizer.to_str())
    tok.no_padding()
    tok.enable_truncation(st.max_seq_length)
    return tok


def int8_option(st: Any) -> EmbedOne:
    import torch

    with warnings.catch_warnings():  # eager-mode quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        model = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(st[0].auto_model).eval(), {torch.nn.Linear}, dtype=torch.qint8
        )
    return direct_torch(model, rust_tokenizer(st))


def onnx_options(st: Any, workdir: Path) -> dict[str, EmbedOne]:
    """ONNX Runtime on an export of the same weights (float32, and dynamic int8); ``{}`` when
    onnxruntime / onnx are not installed or the export fails."""
    try:
        import onnxruntime as ort
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        print(f"(ONNX Runtime rows skipped: {exc})", file=sys.stderr)
        return {}

    class Hidden(torch.nn.Module):
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    f32, i8 = workdir / "model.onnx", workdir / "model-int8.onnx"
    ids = torch.ones((1, 12), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Hidden(st[0].auto_model).eval(),
                (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                str(f32),
                input_names=names,
                output_names=["hidden"],
                dynamic_axes={k: {0: "batch", 1: "seq"} for k in [*names, "hidden"]},
                opset_version=17,
                dynamo=False,
            )
            quantize_dynamic(str(f32), str(i8), weight_type=QuantType.QInt8)
    except Exception as exc:  # an exporter change must not cost the other rows
        print(f"(ONNX Runtime rows skipped: export failed: {exc!r})", file=sys.stderr)
        return {}
    tok = rust_tokenizer(st)
    out: dict[str, EmbedOne] = {}
    for name, path in (("onnxruntime-float32", f32), ("onnxruntime-int8", i8)):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

        def embed_one(text: str, sess: Any = sess) -> np.ndarray:
            ids = np.array([tok.encode(text).ids], dtype=np.int64)
            feed = {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids),
            }
            vec = sess.run(None, feed)[0][0].mean(0)
            return (vec / np.linalg.norm(vec)).astype(np.float32)

        out[name] = embed_one
    return out


# -- measurement -----------------------------------------------------------------------------------
def interleaved_ms(options: dict[str, EmbedOne], texts: list[str]) -> dict[str, list[float]]:
    """Wall ms of each option on each text, one call each, interleaved with a rotating order."""
    names = list(options)
    out: dict[str, list[float]] = {n: [] for n in names}
    for i, text in enumerate(texts):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            options[name](text)
            out[name].append((time.perf_counter() - t0) * 1000)
    return out


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties averaged)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    s = scores[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def embed_all(fn: EmbedOne, batch: Callable[[list[str]], np.ndarray] | None, texts: list[str]) -> np.ndarray:
    if batch is not None:
        return batch(texts)
    return np.stack([fn(t) for t in texts]) if texts else np.zeros((0, 0), np.float32)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from tokenlean.embeddings import SentenceTransformerEmbedder, _native_bf16

    data = Path(args.data)
    rng = random.Random(0)
    pairs = load_pairs(data)
    n_time, n_agree, n_pairs = (60, 200, 300) if args.quick else (args.queries, 1000, args.pairs)
    queries = query_texts(pairs, rng)
    warm, timed = queries[:10], queries[10 : 10 + n_time]
    n_long = n_agree // 10
    agree = queries[10 + n_time : 10 + n_time + n_agree - n_long] + load_passages(data, n_long, rng)
    rng.shuffle(pairs)
    sample = pairs[:n_pairs]

    batches: dict[str, Callable[[list[str]], np.ndarray] | None] = {}
    options: dict[str, EmbedOne] = {}
    with quiet():
        for name, backend, precision in (
            ("sentence-transformers", "sentence-transformers", "auto"),
            ("fast-float32", "fast", "float32"),
            ("fast-bfloat16", "fast", "bfloat16"),
        ):
            options[name], batches[name] = tokenlean_option(backend, precision)
        st = SentenceTransformerEmbedder(cache_size=0, backend="sentence-transformers")._load()
        options["torch-int8-dynamic"] = int8_option(st)
        if not args.no_onnx:
            with tempfile.TemporaryDirectory() as tmp:
                options.update(onnx_options(st, Path(tmp)))
    for fn in options.values():
        for text in warm:
            fn(text)

    lat = interleaved_ms(options, timed)

    ref_name = "sentence-transformers"
    ref_agree = embed_all(options[ref_name], batches[ref_name], agree)
    pair_texts = [t for a, b, _ in sample for t in (a, b)]
    labels = np.array([d for _, _, d in sample])
    ref_pairs = embed_all(options[ref_name], batches[ref_name], pair_texts)
    ref_cos = (ref_pairs[0::2] * ref_pairs[1::2]).sum(1)
    results: dict[str, dict[str, Any]] = {}
    for name, fn in options.items():
        vecs = embed_all(fn, batches.get(name), agree)
        single = np.stack([fn(t) for t in agree[:50]])  # the one-text path, not only the batch one
        cos = np.concatenate([(vecs * ref_agree).sum(1), (single * ref_agree[:50]).sum(1)])
        pv = embed_all(fn, batches.get(name), pair_texts)
        pair_cos = (pv[0::2] * pv[1::2]).sum(1)
        q = statistics.quantiles(lat[name], n=10)
        results[name] = {
            "p50_ms": round(statistics.median(lat[name]), 3),
            "p90_ms": round(q[8], 3),
            "agreement_mean": round(float(cos.mean()), 6),
            "agreement_min": round(float(cos.min()), 6),
            "pair_auc": round(auc(pair_cos, labels), 5),
            "pair_cos_mean_abs_diff": round(float(np.abs(pair_cos - ref_cos).mean()), 6),
            "pair_cos_max_abs_diff": round(float(np.abs(pair_cos - ref_cos).max()), 5),
        }
    default = SentenceTransformerEmbedder(cache_size=0)
    default.embed(["which backend runs by default"])
    return {
        "target_p50_ms": TARGET_P50_MS,
        "min_agreement": MIN_AGREEMENT,
        "default_backend": default.backend_used,
        "native_bf16": _native_bf16(),
        "threads": torch.get_num_threads(),
        "timed_queries": len(timed),
        "timed_mean_words": round(statistics.mean(len(t.split()) for t in timed), 1),
        "agreement_texts": len(agree),
        "calibration_pairs": len(sample),
        "options": results,
    }


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Embedding one never-seen query, {result['threads']} thread(s)")
    cols = ("option", "p50 ms", "p90 ms", "agree mean", "agree min", "pair AUC", "Δ pair cos mean/max", "ok")
    for col in cols:
        t.add_column(col, justify="left" if col == "option" else "right", no_wrap=True)
    for name, r in result["options"].items():
        ok = r["p50_ms"] <= result["target_p50_ms"] and r["agreement_min"] >= result["min_agreement"]
        t.add_row(
            name,
            f"{r['p50_ms']:.2f}",
            f"{r['p90_ms']:.2f}",
            f"{r['agreement_mean']:.5f}",
            f"{r['agreement_min']:.5f}",
            f"{r['pair_auc']:.4f}",
            f"{r['pair_cos_mean_abs_diff']:.4f}/{r['pair_cos_max_abs_diff']:.4f}",
            "yes" if ok else "no",
        )
    console = Console(width=max(Console().width, 120))
    console.print(t)
    console.print(
        f"{result['timed_queries']} Quora questions (mean {result['timed_mean_words']} words), one call "
        f"each per option, interleaved. agree = cosine to sentence-transformers' vector on "
        f"{result['agreement_texts']} texts; pair AUC / Δ pair cos on {result['calibration_pairs']} "
        f"calibration-split duplicate pairs.\n"
        f"default: {result['default_backend']} (native bfloat16: {result['native_bf16']}); "
        f"ok = p50 <= {result['target_p50_ms']} ms and min agreement >= {result['min_agreement']}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="datasets folder (default ../shared/datasets)")
    p.add_argument("--json", help="write results here")
    p.add_argument("--quick", action="store_true", help="small samples (about a minute)")
    p.add_argument("--queries", type=int, default=300, help="timed queries (without --quick)")
    p.add_argument("--pairs", type=int, default=2000, help="calibration pairs for AUC (without --quick)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    args = p.parse_args(argv)
    result = run(args)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
