"""Unit scoring: how likely is a unit to matter for the query?

A unit is judged by itself *and by its neighbourhood*. Plain sentence-vs-question similarity
(what LlamaIndex's ``SentenceEmbeddingOptimizer`` does) misses the answer sentence whenever it
does not repeat the question's words ("He was awarded it in 1901." after a paragraph about the
prize), so the score is a blend of:

* BM25 of the unit and of its group (the passage / section it sits in): the passage that answers a
  question tends to be relevant as a whole, and rare query terms are strong evidence;
* embedding similarity (sentence-transformers, when the ``embeddings`` extra is installed) of the
  unit, of its group (mean of its units' vectors) and of the group's heading (a passage title);
* the answer type the question asks for: a "when" question wants a sentence with a year or a
  date, "how many" a number, "who"/"where" a capitalised name that is not in the question;
* structure: headings and signatures, and the first sentence of a passage (where encyclopaedic
  text states its topic).

Every feature is standardised *within the request* (z-scores), so the weights transfer between a
20-passage RAG context and an agent transcript. The default weights were fitted by logistic
regression on examples of the first half of the NQ multi-document set (``benchmarks/compaction.py
--fit``); the benchmark reports on the second half only.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tokenlean._text import COMMON_STOPWORDS, WORD_PATTERN, word_set

if TYPE_CHECKING:
    from tokenlean.embeddings import Embedder

__all__ = [
    "AGENT_WEIGHTS",
    "BM25",
    "DEFAULT_WEIGHTS",
    "FEATURES",
    "LEXICAL_WEIGHTS",
    "Scorer",
    "UnitFeatures",
    "features",
    "query_terms",
    "tokenize",
]

_WORD = re.compile(WORD_PATTERN + r"|[^\W\d]\w*", re.UNICODE)
# The common core plus words that never carry a question's topic ("name the first ...").
STOPWORDS = COMMON_STOPWORDS | word_set(
    """
    against between during before after above below off further no nor not than don now him
    his her us first name
    """
)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (letters/digits), the vocabulary of BM25 and term overlap."""
    return _WORD.findall(text.lower())


def query_terms(query: str) -> list[str]:
    """Distinct content words of the query, in order."""
    seen: dict[str, None] = {}
    for w in tokenize(query):
        if w not in STOPWORDS and w not in seen:
            seen[w] = None
    return list(seen)


@dataclass
class BM25:
    """Okapi BM25 restricted to the query's terms (all a ranking needs), over token lists.

    ``df`` counts are kept so an incremental session can add documents without re-reading the
    earlier ones.
    """

    k1: float = 1.2
    b: float = 0.75
    n_docs: int = 0
    total_len: int = 0
    df: dict[str, int] = field(default_factory=dict)

    def add(self, docs: Sequence[Sequence[str]]) -> None:
        for toks in docs:
            self.n_docs += 1
            self.total_len += len(toks)
            for w in set(toks):
                self.df[w] = self.df.get(w, 0) + 1

    @classmethod
    def for_terms(cls, docs: Sequence[Sequence[str]], terms: Sequence[str]) -> BM25:
        """Statistics over ``docs`` for ``terms`` only: all a one-off ranking needs, much cheaper."""
        bm = cls()
        want = set(terms)
        df = dict.fromkeys(want, 0)
        total = 0
        for toks in docs:
            total += len(toks)
            for w in want.intersection(toks):
                df[w] += 1
        bm.n_docs, bm.total_len, bm.df = len(docs), total, df
        return bm

    def idf(self, term: str) -> float:
        n = self.df.get(term, 0)
        return math.log(1.0 + (self.n_docs - n + 0.5) / (n + 0.5))

    def scores_tf(
        self, tfs: Sequence[Mapping[str, int]], lengths: Sequence[int], terms: Sequence[str]
    ) -> np.ndarray:
        """Scores from precomputed term frequencies (query terms only) and document lengths."""
        out = np.zeros(len(tfs), dtype=np.float64)
        if not terms:
            return out
        avg = (self.total_len / self.n_docs) if self.n_docs else 1.0
        idf = {t: self.idf(t) for t in terms}
        k1, b = self.k1, self.b
        for i, tf in enumerate(tfs):
            if not tf:
                continue
            norm = k1 * (1.0 - b + b * lengths[i] / max(avg, 1e-9))
            out[i] = sum(idf[w] * f * (k1 + 1.0) / (f + norm) for w, f in tf.items())
        return out

    def scores(self, docs: Sequence[Sequence[str]], terms: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(docs), dtype=np.float64)
        if not terms or not docs:
            return out
        avg = (self.total_len / self.n_docs) if self.n_docs else 1.0
        idf = {t: self.idf(t) for t in terms}
        for i, toks in enumerate(docs):
            if not toks:
                continue
            tf: dict[str, int] = {}
            for w in toks:
                if w in idf:
                    tf[w] = tf.get(w, 0) + 1
            if not tf:
                continue
            norm = self.k1 * (1.0 - self.b + self.b * len(toks) / max(avg, 1e-9))
            s = 0.0
            for w, f in tf.items():
                s += idf[w] * f * (self.k1 + 1.0) / (f + norm)
            out[i] = s
        return out


# -- answer-type cues ------------------------------------------------------------------------

_YEAR = re.compile(r"\b(?:1[0-9]|20)\d{2}s?\b")
_DATE = re.compile(
    r"\b(?:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\b|\b\d{1,2}(?:st|nd|rd|th)\b|\bcentury\b"
)
_NUMBER = re.compile(
    r"\b\d[\d,.]*\b|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
    r"twenty|thirty|forty|fifty|hundred|thousand|million|billion|dozen)\b",
    re.I,
)
_CAP = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:\s+(?:[A-Z][a-z]+|of|de|van|von|the))*")


def _qtype(query: str) -> str:
    q = query.lower().strip()
    if re.search(r"\b(when|what year|which year|what date|how long ago|since when)\b", q):
        return "when"
    if re.search(
        r"\b(how many|how much|how old|how long|how far|how tall|how big|what percentage|number of)\b", q
    ):
        return "number"
    if re.search(r"\b(who|whom|whose)\b", q):
        return "who"
    if re.search(r"\b(where|what country|what city|which country|which city|what state)\b", q):
        return "where"
    return "other"


def _type_match(text: str, qtype: str, qwords: frozenset[str]) -> float:
    if qtype == "when":
        return 1.0 if (_YEAR.search(text) or _DATE.search(text)) else 0.0
    if qtype == "number":
        return 1.0 if _NUMBER.search(text) else 0.0
    if qtype in ("who", "where"):
        for m in _CAP.finditer(text):
            words = {w.lower() for w in m.group().split()}
            if not words <= qwords:
                return 1.0
        return 0.0
    return 0.0


# -- features --------------------------------------------------------------------------------

FEATURES: tuple[str, ...] = (
    "bm25_unit",
    "bm25_group",
    "coverage",
    "rare_term",
    "type_match",
    "heading",
    "first_in_group",
    "emb_unit",
    "emb_group",
    "emb_title",
    "emb_neighbours",
    "emb_group_max",
    "bm25_neighbours",
    "log_tokens",
    "group_top1",
    "group_top3",
    "type_x_group",
)

#: Fitted weights (see module docstring): class-balanced logistic regression of "this unit
#: contains the answer" on examples of the NQ dev half (``benchmarks/compaction.py --fit``).
#: Negative BM25 of the unit itself is not a bug: with passage-level relevance in the model, the
#: unit that repeats the question's words is usually *not* the one holding the answer.
DEFAULT_WEIGHTS: dict[str, float] = {
    "bm25_unit": -0.637,
    "bm25_group": 0.17,
    "coverage": 0.218,
    "rare_term": 0.297,
    "type_match": 1.239,
    "heading": 0.084,
    "first_in_group": 0.749,
    "emb_unit": 0.543,
    "emb_group": 0.477,
    "emb_title": 0.039,
    "emb_neighbours": 0.09,
    "emb_group_max": 0.458,
    "bm25_neighbours": -0.067,
    "log_tokens": 0.325,
    "group_top1": 1.184,
    "group_top3": -0.246,
    "type_x_group": -0.29,
}

#: Weights used when no embedder is available (fitted the same way, lexical features only).
LEXICAL_WEIGHTS: dict[str, float] = {
    "bm25_unit": -0.482,
    "bm25_group": 0.151,
    "coverage": 0.407,
    "rare_term": 0.173,
    "type_match": 0.922,
    "heading": -0.155,
    "first_in_group": 0.74,
    "bm25_neighbours": 0.122,
    "log_tokens": 0.317,
    "group_top1": 2.091,
    "group_top3": 1.604,
    "type_x_group": -0.082,
}


#: Weights for one long document (an article, a report: paragraphs, not separately titled
#: passages), set by reasoning and checked on long Wikipedia articles. The passage priors of
#: ``DEFAULT_WEIGHTS`` (the best passage, its first sentence) are right when the context is twenty
#: retrieved passages of which one answers; inside one article every paragraph is on topic, the
#: answer sentence can sit anywhere, and those priors pick the wrong paragraph's opening instead.
#: Here the unit's own similarity to the query decides, with its answer type, rare query terms and
#: its neighbours as support.
DOCUMENT_WEIGHTS: dict[str, float] = {
    "emb_unit": 1.0,
    "emb_neighbours": 0.2,
    "type_match": 0.5,
    "bm25_unit": 0.2,
    "rare_term": 0.2,
}

#: ``DOCUMENT_WEIGHTS`` without an embedder: the unit's own BM25 takes the embedding's place.
LEXICAL_DOCUMENT_WEIGHTS: dict[str, float] = {
    "bm25_unit": 1.0,
    "bm25_neighbours": 0.2,
    "type_match": 0.5,
    "rare_term": 0.2,
}

#: Weights for chat histories (agent sessions), set by reasoning rather than fitted: there the
#: query is the user's latest request and the units that *match* it (the log line naming the
#: failing job, the fact asked about) are the ones to keep, so unit-level match counts most;
#: passages and answer types matter less than in open-domain QA. Embedding features are simply
#: absent in lexical mode.
AGENT_WEIGHTS: dict[str, float] = {
    "bm25_unit": 1.0,
    "coverage": 0.6,
    "rare_term": 0.6,
    "emb_unit": 1.0,
    "emb_group": 0.3,
    "emb_group_max": 0.2,
    "bm25_group": 0.3,
    "type_match": 0.3,
    "heading": 0.3,
    "first_in_group": 0.1,
    "bm25_neighbours": 0.1,
    "emb_neighbours": 0.1,
}


MAX_QUERY_EMBED_CHARS = 600
EMBED_CHUNK = 64  # texts per embedder call when a deadline is set: the granularity of giving up


class EmbeddingAbandoned(Exception):
    """Embedding stopped: past the call's deadline, or the embedder itself failed.

    Internal: the compactor catches it and scores lexically instead, so a slow or broken embedder
    costs quality on one call, never the user's chain.
    """


def _embed(embedder: Embedder, texts: list[str], deadline: float | None) -> np.ndarray:
    """``embedder.embed(texts)`` in chunks, giving up (``EmbeddingAbandoned``) past ``deadline``."""
    try:
        if deadline is None:
            return np.asarray(embedder.embed(texts), dtype=np.float32)
        parts = []
        for a in range(0, len(texts), EMBED_CHUNK):
            if time.monotonic() > deadline:
                raise EmbeddingAbandoned(f"deadline passed after {a} of {len(texts)} texts")
            parts.append(np.asarray(embedder.embed(texts[a : a + EMBED_CHUNK]), dtype=np.float32))
        return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
    except EmbeddingAbandoned:
        raise
    except Exception as exc:  # the embedder is third-party code (torch, tokenizers): any failure
        raise EmbeddingAbandoned(f"embedder failed: {type(exc).__name__}: {exc}") from exc


def _z(x: np.ndarray) -> np.ndarray:
    if x.size == 0:
        return x
    sd = float(x.std())
    if sd < 1e-9:
        return np.zeros_like(x)
    return (x - float(x.mean())) / sd


def _neighbours(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Mean of the previous and next unit's value within the same group (0 at group edges)."""
    n = x.size
    out = np.zeros(n, dtype=np.float64)
    if n < 2:
        return out
    same_prev = np.zeros(n, dtype=bool)
    same_prev[1:] = groups[1:] == groups[:-1]
    same_next = np.zeros(n, dtype=bool)
    same_next[:-1] = groups[:-1] == groups[1:]
    prev = np.zeros(n)
    prev[1:] = x[:-1]
    nxt = np.zeros(n)
    nxt[:-1] = x[1:]
    cnt = same_prev.astype(float) + same_next.astype(float)
    tot = np.where(same_prev, prev, 0.0) + np.where(same_next, nxt, 0.0)
    return np.divide(tot, cnt, out=np.zeros(n), where=cnt > 0)


@dataclass
class UnitFeatures:
    """The feature matrix of one request, kept for inspection and for fitting weights."""

    names: tuple[str, ...]
    matrix: np.ndarray  # (n_units, n_features), standardised within the request
    embeddings: np.ndarray | None = None  # unit vectors when an embedder was used

    def score(self, weights: dict[str, float]) -> np.ndarray:
        w = np.array([weights.get(n, 0.0) for n in self.names], dtype=np.float64)
        return self.matrix @ w if self.matrix.size else np.zeros(self.matrix.shape[0])


def features(
    texts: Sequence[str],
    groups: Sequence[int],
    kinds: Sequence[str],
    query: str,
    *,
    token_counts: Sequence[int] | None = None,
    embedder: Embedder | None = None,
    bm25: BM25 | None = None,
    unit_tokens: Sequence[Sequence[str]] | None = None,
    sentences: Sequence[int] | None = None,
    deadline: float | None = None,
    embed_mask: np.ndarray | None = None,
) -> UnitFeatures:
    """Compute the standardised feature matrix for ``texts`` against ``query``.

    ``deadline`` (a ``time.monotonic()`` instant) bounds the embedding work: past it, or when the
    embedder fails, ``EmbeddingAbandoned`` is raised and the caller scores without embeddings.

    ``bm25`` may carry document frequencies from earlier calls (incremental mode); otherwise the
    units themselves are the corpus. ``unit_tokens`` lets a caller pass cached tokenisations.
    ``embed_mask`` limits embedding to those units (and their sentences): the others get the
    lowest similarity of the embedded ones, as a pre-selection that left them out implies.
    """
    n = len(texts)
    g = np.asarray(groups, dtype=np.int64)
    toks = list(unit_tokens) if unit_tokens is not None else [tokenize(t) for t in texts]
    terms = query_terms(query)
    qset = frozenset(tokenize(query))
    if bm25 is None:
        bm25 = BM25.for_terms(toks, terms)
    cols: dict[str, np.ndarray] = {}
    # one pass over the tokens: per-unit term frequencies of the query terms only
    tset = set(terms)
    tfs: list[dict[str, int]] = []
    for t in toks:
        hit = tset.intersection(t)
        tfs.append({w: t.count(w) for w in hit} if hit else {})
    bu = bm25.scores_tf(tfs, [len(t) for t in toks], terms)
    cols["bm25_unit"] = _z(bu)
    # Group-level BM25 on the concatenated tokens of each group.
    uniq, inv = (
        np.unique(g, return_inverse=True) if n else (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    )
    ng = len(uniq)
    gtf: list[dict[str, int]] = [{} for _ in range(ng)]
    glen = [0] * ng
    for i, tf in enumerate(tfs):
        gi = int(inv[i])
        glen[gi] += len(toks[i])
        d = gtf[gi]
        for w, f in tf.items():
            d[w] = d.get(w, 0) + f
    gb = BM25(n_docs=ng, total_len=sum(glen))
    for d in gtf:
        for w in d:
            gb.df[w] = gb.df.get(w, 0) + 1
    cols["bm25_group"] = _z(gb.scores_tf(gtf, glen, terms)[inv]) if n else np.zeros(0)
    idf = {t: bm25.idf(t) for t in terms}
    max_idf = max(idf.values()) if idf else 1.0
    cov = np.zeros(n)
    rare = np.zeros(n)
    for i, tf in enumerate(tfs):
        present = tf.keys()
        if present and terms:
            cov[i] = len(present) / len(terms)
            rare[i] = max(idf[w] for w in present) / max(max_idf, 1e-9)
    cols["coverage"] = _z(cov)
    cols["rare_term"] = _z(rare)
    qt = _qtype(query)
    cols["type_match"] = _z(np.array([_type_match(t, qt, qset) for t in texts], dtype=np.float64))
    kind_arr = np.array([k in ("heading", "signature") for k in kinds], dtype=np.float64)
    cols["heading"] = kind_arr
    first = np.ones(n)
    if n > 1:
        first[1:] = (g[1:] != g[:-1]).astype(float)
        # the first *sentence* after a heading also counts as first in its passage
        after_head = np.zeros(n)
        after_head[1:] = kind_arr[:-1] * (g[1:] == g[:-1])
        first = np.maximum(first * (1 - kind_arr), after_head)
    cols["first_in_group"] = first
    cols["bm25_neighbours"] = _neighbours(cols["bm25_unit"], g)
    tc = np.asarray(token_counts if token_counts is not None else [len(t) for t in toks], dtype=np.float64)
    cols["log_tokens"] = _z(np.log1p(tc))
    vecs: np.ndarray | None = None
    if embedder is not None and n:
        # clauses of one sentence are embedded together, once: context for the model, and fewer
        # (longer) sequences for the embedder
        if sentences is not None:
            sid, sinv = np.unique(np.asarray(sentences, dtype=np.int64), return_inverse=True)
        else:
            sid, sinv = np.arange(n), np.arange(n)
        want = np.ones(len(sid), dtype=bool)
        if embed_mask is not None:
            want[:] = False
            want[sinv[np.asarray(embed_mask, dtype=bool)]] = True
        joined = [""] * len(sid)
        for i, t in enumerate(texts):
            if want[sinv[i]]:
                joined[sinv[i]] += t
        rows = np.flatnonzero(want)
        svecs: np.ndarray | None = None
        if len(rows):
            got = _embed(embedder, [joined[r] for r in rows], deadline)
            svecs = np.zeros((len(sid), got.shape[1]), dtype=np.float32)
            svecs[rows] = got
        # the model reads at most 256 word pieces anyway; the head of a long query (an agent's
        # latest observation) carries the request, and embedding it is paid on every call
        qv = _embed(embedder, [query[:MAX_QUERY_EMBED_CHARS]], None)[0]
        if svecs is None:  # the pre-selection left nothing to embed: every unit ranks lexically
            svecs = np.zeros((len(sid), qv.shape[0]), dtype=np.float32)
        vecs = svecs[sinv]
        embedded = want[sinv]
        su = vecs @ qv
        floor = float(su[embedded].min()) if embedded.any() else 0.0
        su = np.where(embedded, su, floor)
        cols["emb_unit"] = _z(su.astype(np.float64))
        gsum = np.zeros((len(uniq), vecs.shape[1]), dtype=np.float32)
        np.add.at(gsum, inv, vecs)
        gsum /= np.maximum(np.linalg.norm(gsum, axis=1, keepdims=True), 1e-9)
        gsim = (gsum @ qv).astype(np.float64)
        gseen = np.zeros(len(uniq), dtype=bool)
        np.logical_or.at(gseen, inv, embedded)
        if not gseen.all():
            gsim = np.where(gseen, gsim, gsim[gseen].min() if gseen.any() else 0.0)
        cols["emb_group"] = _z(gsim[inv])
        title = np.full(len(uniq), np.nan)
        for i in range(n):
            if kinds[i] == "heading" and np.isnan(title[inv[i]]):
                title[inv[i]] = su[i]
        title = np.where(np.isnan(title), np.nanmean(title) if np.any(~np.isnan(title)) else 0.0, title)
        cols["emb_title"] = _z(title[inv])
        cols["emb_neighbours"] = _neighbours(cols["emb_unit"], g)
        gmax = np.full(len(uniq), -np.inf)
        np.maximum.at(gmax, inv, su.astype(np.float64))
        cols["emb_group_max"] = _z(gmax[inv])
    # Passage-level interactions a linear model cannot form by itself: is this unit in one of
    # the best passages, and does it have the answer type *and* sit in a relevant passage?
    if n:
        gscore = cols["bm25_group"] + (
            cols["emb_group"] + cols["emb_group_max"] if "emb_group" in cols else 0.0
        )
        per_group = np.full(len(uniq), -np.inf)
        np.maximum.at(per_group, inv, gscore)
        rank = np.empty(len(uniq), dtype=np.int64)
        rank[np.argsort(-per_group, kind="stable")] = np.arange(len(uniq))
        urank = rank[inv]
        cols["group_top1"] = (urank == 0).astype(np.float64)
        cols["group_top3"] = (urank < 3).astype(np.float64)
        cols["type_x_group"] = cols["type_match"] * _z(gscore)
    names = tuple(f for f in FEATURES if f in cols)
    matrix = np.stack([cols[f] for f in names], axis=1) if n else np.zeros((0, len(names)))
    return UnitFeatures(names=names, matrix=matrix, embeddings=vecs)


class Scorer(Protocol):
    """Scores units against a query; higher means keep first. One method, easy to replace."""

    def score(
        self, texts: Sequence[str], groups: Sequence[int], kinds: Sequence[str], query: str
    ) -> np.ndarray: ...
