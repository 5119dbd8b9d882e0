"""Peers and strong baselines for ``benchmarks/compaction.py``, each run for real on the same rows.

Every adapter returns a ``Method``: ``(context, question, ratio) -> compacted text``. Peers are
optional benchmark extras (``pip install -r requirements/bench.txt``), never runtime dependencies:
a builder raises :class:`NotRun` with the reason when its package (or the model it needs) is not
available here, and the benchmark reports it under ``"not_run"`` instead of skipping it silently.

Peers
-----
``headroom-compress``
    ``headroom.compress(messages)`` (headroom-ai) at its defaults on the agent layout below. Its
    prose path is the Kompress model (ModernBERT, from the Hugging Face hub); with no hub access
    that path fails open and passes prose through, while its non-ML routes (a log compressor, JSON
    crushing) still run: the row measures exactly that, and its ``note`` says so.
``headroom-TextCrusher``
    headroom's offline, query-aware extractive prose compressor (BM25 sentence scoring in its Rust
    core), ``TextCrusher().compress(context, context=question, target_ratio=1 - ratio)``.
``distil-compress_messages`` / ``distil-compress_messages-verbatim``
    ``distil.compress_messages(messages)`` (distil-llm) at its defaults and with ``verbatim=True``.
    Neither takes a target: the row reports the reduction it chose.

Both message-list peers see the layout an agent sends after a retrieval tool call: the user's
question, the assistant's tool call, and the passages as the tool result. The compacted context is
the tool result's content after compression (the question is not counted as context).

Baselines
---------
``topk-chunks-embedding`` / ``topk-chunks-bm25``
    What a RAG user does with a reranker's cut: the context is split into passages (its
    ``Document [i]`` blocks or paragraphs, via the same segmenter the benchmark uses), passages
    longer than ``CHUNK_TOKENS`` into sentence-aligned chunks; chunks are ranked by cosine
    similarity to the question under the MiniLM embedder (the model of
    ``tokenlean.embeddings.get_default_embedder()``, a fresh instance) or by Okapi BM25, and
    taken best first while they fit the token budget of the cut, then put back in input order.

Not runnable here
-----------------
LongLLMLingua and LLMLingua-2 need their models from the Hugging Face hub (a LLaMA-2-7B scorer by
default, ``microsoft/llmlingua-2-xlm-roberta-large-meetingbank``); they are listed
in :data:`NOT_RUNNABLE` and their *published* NQ figures in :data:`PUBLISHED` (quoted in the
README, marked as not measured here).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from typing import Any

Method = Callable[[str, str, float], str]

CHUNK_TOKENS = 200  # keeps >95% of the NQ documents whole (their 95th percentile is ~160 tokens)


class NotRun(Exception):
    """This peer cannot run here; ``str(exc)`` says why."""


# -- shared helpers --------------------------------------------------------------------------


def tool_messages(context: str, question: str) -> list[dict[str, Any]]:
    """The agent layout: question, a retrieval tool call, the passages as the tool result."""
    call = {
        "id": "call_0",
        "type": "function",
        "function": {"name": "search", "arguments": json.dumps({"query": question})},
    }
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": context},
    ]


def _budget(tokens: int, ratio: float) -> int:
    return int(tokens * (1.0 - ratio))


def _require(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NotRun(f"{package} is not installed (pip install -r requirements/bench.txt): {exc}") from exc


# -- headroom-ai -----------------------------------------------------------------------------


_STATE_DIR: str | None = None


def _isolate() -> None:
    """Offline, no telemetry, the peers' on-disk stores in a throwaway folder (before they import)."""
    global _STATE_DIR
    if _STATE_DIR is None:
        _STATE_DIR = tempfile.mkdtemp(prefix="tokenlean-compaction-peers-")
        atexit.register(shutil.rmtree, _STATE_DIR, ignore_errors=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # headroom's own air-gap switch: refuse network access cleanly instead of retrying downloads
    os.environ.setdefault("HEADROOM_OFFLINE", "1")
    os.environ.setdefault("HEADROOM_TELEMETRY", "off")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HEADROOM_WORKSPACE_DIR", os.path.join(_STATE_DIR, "headroom"))
    # distil persists the originals behind its digest handles under $DISTIL_HOME (default ~/.distil)
    os.environ.setdefault("DISTIL_HOME", os.path.join(_STATE_DIR, "distil"))


def _headroom_setup() -> None:
    _require("headroom", "headroom-ai")
    _isolate()
    logging.getLogger("headroom").setLevel(logging.ERROR)  # "Kompress not ready" on every call


def headroom_kompress_status() -> str | None:
    """Why headroom's Kompress model cannot run here (None when it is available)."""
    try:
        from headroom.transforms.kompress_compressor import HF_MODEL_ID, is_kompress_available
    except ImportError:  # pragma: no cover - layout of another headroom version
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(HF_MODEL_ID, "config.json"), str)
    except Exception:
        cached = False
    if cached and is_kompress_available():
        return None
    return (
        f"its ML prose compressor (Kompress, {HF_MODEL_ID}) needs a model from the Hugging Face hub "
        "that is not cached and cannot be downloaded here: prose routed to it passes through "
        "unchanged; its non-ML routes (e.g. the log compressor) still run"
    )


class HeadroomCompress:
    """``headroom.compress(messages)`` at its defaults; counts the transforms it reports."""

    def __init__(self) -> None:
        _headroom_setup()
        from headroom import compress

        self._compress = compress
        self.transforms: Counter[str] = Counter()

    def __call__(self, context: str, question: str, ratio: float) -> str:
        res = self._compress(tool_messages(context, question))  # its default model, too
        for t in res.transforms_applied or ():
            self.transforms[":".join(t.split(":")[:2])] += 1
        content = res.messages[-1]["content"]
        if not isinstance(content, str):
            raise TypeError(f"headroom returned non-text tool content: {type(content).__name__}")
        return content

    def note(self) -> str:
        top = ", ".join(f"{k} x{v}" for k, v in self.transforms.most_common(4)) or "none"
        status = headroom_kompress_status()
        return f"defaults; {status + '; ' if status else ''}transforms reported (all cuts): {top}"


def make_headroom_compress() -> Method:
    return HeadroomCompress()


def make_headroom_textcrusher() -> Method:
    _headroom_setup()
    try:
        from headroom.transforms.text_crusher import TextCrusher
    except ImportError as exc:
        raise NotRun(f"headroom-ai has no TextCrusher here: {exc}") from exc
    crusher = TextCrusher()

    def run(context: str, question: str, ratio: float) -> str:
        return crusher.compress(context, context=question, target_ratio=1.0 - ratio).compressed

    return run


# -- distil-llm ------------------------------------------------------------------------------


def make_distil(verbatim: bool) -> Method:
    _require("distil", "distil-llm")
    _isolate()
    from distil import compress_messages

    def run(context: str, question: str, ratio: float) -> str:
        res = compress_messages(tool_messages(context, question), verbatim=verbatim)
        content = res.messages[-1]["content"]
        if not isinstance(content, str):
            raise TypeError(f"distil returned non-text tool content: {type(content).__name__}")
        return content

    return run


# -- top-k passages / chunks (RAG baseline) --------------------------------------------------


def chunks(context: str, max_tokens: int = CHUNK_TOKENS) -> list[tuple[str, int]]:
    """``(text, tokens)`` pieces that tile ``context``: its passages, long ones cut at sentences."""
    from tokenlean.compaction.segment import segment
    from tokenlean.tokens import count_tokens

    out: list[tuple[str, int]] = []
    text, tokens, group = "", 0, None
    for u in segment(context, clauses=False):
        n = count_tokens(u.text)
        if text and (u.group != group or tokens + n > max_tokens):
            out.append((text, tokens))
            text, tokens = "", 0
        text += u.text
        tokens += n
        group = u.group
    if text:
        out.append((text, tokens))
    return out


_WORD = re.compile(r"\w+")


def _terms(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def bm25_scores(query: str, docs: list[str], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Okapi BM25 of ``query`` against ``docs`` (IDF over ``docs``; Lucene's non-negative IDF)."""
    toks = [_terms(d) for d in docs]
    n = len(docs)
    avgdl = sum(len(t) for t in toks) / max(n, 1) or 1.0
    df: Counter[str] = Counter()
    for t in toks:
        df.update(set(t))
    q = set(_terms(query))
    idf = {w: math.log(1.0 + (n - df[w] + 0.5) / (df[w] + 0.5)) for w in q}
    scores = []
    for t in toks:
        tf = Counter(t)
        norm = k1 * (1.0 - b + b * len(t) / avgdl)
        scores.append(sum(idf[w] * tf[w] * (k1 + 1.0) / (tf[w] + norm) for w in q if tf[w]))
    return scores


def _fill(pieces: list[tuple[str, int]], scores: list[float], budget: int) -> str:
    """Best-scored pieces first while they fit the budget, emitted in input order."""
    order = sorted(range(len(pieces)), key=lambda i: (-scores[i], i))
    keep, used = set(), 0
    for i in order:
        if used + pieces[i][1] <= budget:
            keep.add(i)
            used += pieces[i][1]
    return "".join(p[0] for i, p in enumerate(pieces) if i in keep)


def make_topk(scorer: str, embedder: Any = None, max_tokens: int = CHUNK_TOKENS) -> Method:
    if scorer not in ("embedding", "bm25"):
        raise ValueError(f"unknown scorer {scorer!r}")
    if scorer == "embedding" and embedder is None:
        raise ValueError("the embedding scorer needs an embedder")

    def run(context: str, question: str, ratio: float) -> str:
        pieces = chunks(context, max_tokens)
        budget = _budget(sum(p[1] for p in pieces), ratio)
        if scorer == "bm25":
            scores = bm25_scores(question, [p[0] for p in pieces])
        else:
            vecs = embedder.embed([question, *(p[0] for p in pieces)])
            scores = [float(s) for s in vecs[1:] @ vecs[0]]
        return _fill(pieces, scores, budget)

    return run


# -- not runnable offline: published numbers only --------------------------------------------

NOT_RUNNABLE: dict[str, str] = {
    "longllmlingua": (
        "needs the llmlingua package and a causal LM from the Hugging Face hub as its scorer (its "
        "default is NousResearch/Llama-2-7b-hf); no model hub access here. Published NQ figures "
        "quoted in the README (not measured here)."
    ),
    "llmlingua-2": (
        "needs microsoft/llmlingua-2-xlm-roberta-large-meetingbank from the Hugging Face hub; no "
        "model hub access here. Published NQ figures quoted in the README (not measured here)."
    ),
}

# Quoted, not measured: GPT-3.5-Turbo answer accuracy (%) on NaturalQuestions with 20 documents
# (lost-in-the-middle's set, the one this benchmark uses) at the papers' "4x constraint", by the
# position of the gold document; "tokens" is the mean prompt length after compression. Source:
# LLMLingua-2 (Pan et al., Findings of ACL 2024, arXiv:2403.12968), Table 11 (Appendix K); its
# LongLLMLingua row is marked as the number reported in LongLLMLingua (Jiang et al., arXiv:2310.06839).
# An LLM's accuracy, not this benchmark's answer retention: an upper bound on one is not the other.
PUBLISHED: dict[str, Any] = {
    "source": "LLMLingua-2, arXiv:2403.12968, Table 11 (NaturalQuestions, 20 documents, GPT-3.5-Turbo)",
    "metric": "LLM answer accuracy (%) by gold-document position; not answer retention",
    "constraint": "4x (about a 74% cut)",
    "rows": {
        "original prompt": {
            "1st": 75.7,
            "5th": 57.3,
            "10th": 54.1,
            "15th": 55.4,
            "20th": 63.1,
            "tokens": 2946,
        },
        "LongLLMLingua": {
            "1st": 75.0,
            "5th": 71.8,
            "10th": 71.2,
            "15th": 71.2,
            "20th": 74.7,
            "tokens": 748,
            "ratio": "3.9x",
        },
        "LLMLingua-2 + LongLLMLingua coarse": {
            "1st": 74.0,
            "5th": 70.4,
            "10th": 67.0,
            "15th": 66.9,
            "20th": 65.3,
            "tokens": 739,
            "ratio": "3.9x",
        },
        "LLMLingua-2": {
            "1st": 48.6,
            "5th": 44.5,
            "10th": 43.6,
            "15th": 40.9,
            "20th": 39.9,
            "tokens": 748,
            "ratio": "3.9x",
        },
    },
    "measured_here": False,
}
