"""Budgeted unit selection: which units of the old messages (or texts) stay, within a budget.

Units are scored against the query (``scoring.py``) and chosen by a greedy that fills the token
budget in order of priority (score, optionally per token): protected units first (with a share of
the budget still reserved for the best-scored units, so paths in every observation cannot crowd
out the line the user asks about), near-duplicates skipped (MMR-style), and the rest of a sentence
promoted once one of its clauses is kept. Output keeps the original order; runs of dropped units
become one marker each (or vanish without a marker template). ``SelectUnits`` (``steps.py``) is
the step that runs it.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tokenlean.compaction.compacted import Omission, Piece
from tokenlean.compaction.omissions import make_handle
from tokenlean.compaction.protect import ProtectedPatterns
from tokenlean.compaction.scoring import (
    AGENT_WEIGHTS,
    DEFAULT_WEIGHTS,
    DOCUMENT_WEIGHTS,
    LEXICAL_DOCUMENT_WEIGHTS,
    LEXICAL_WEIGHTS,
    STOPWORDS,
    EmbeddingAbandoned,
    UnitFeatures,
    features,
    tokenize,
)
from tokenlean.compaction.state import Item, OutOfTime, Services, Session

if TYPE_CHECKING:
    from tokenlean.embeddings import Embedder

__all__ = ["keywords", "select_units"]

log = logging.getLogger("tokenlean.compaction")

WS = re.compile(r"\s+")


def weights_for(
    weights: Mapping[str, float] | None, chat: bool, passages: bool, embedded: bool
) -> dict[str, float]:
    """The scorer weights for this kind of input: the user's, else agent / passages / document."""
    if weights is not None:
        return dict(weights)
    if chat:
        return AGENT_WEIGHTS
    if passages:
        return DEFAULT_WEIGHTS if embedded else LEXICAL_WEIGHTS
    return DOCUMENT_WEIGHTS if embedded else LEXICAL_DOCUMENT_WEIGHTS


def select_units(
    items: list[Item],
    query: str,
    budget: int,
    *,
    services: Services,
    patterns: ProtectedPatterns,
    template: str | None,
    weights: Mapping[str, float] | None,
    embedder: Embedder | None,
    novelty: float | None,
    length_exponent: float,
    sibling_bonus: float,
    relevance_reserve: float,
    session: Session | None = None,
    chat: bool = False,
    deadline: float | None = None,
) -> tuple[list[list[Piece]], list[Omission], int, bool]:
    """Choose units across ``items`` to fit ``budget`` tokens; build pieces and markers."""
    flat: list[tuple[int, int]] = []  # (item index, unit index)
    texts: list[str] = []
    groups: list[int] = []
    kinds: list[str] = []
    sents: list[int] = []
    costs: list[int] = []
    toks: list[list[str]] = []
    g0 = 0
    s0 = 0
    for k, it in enumerate(items):
        for j, u in enumerate(it.units):
            flat.append((k, j))
            texts.append(u.text)
            groups.append(g0 + u.group)
            kinds.append(u.kind)
            sents.append(s0 + u.sentence)
            c, t = services.unit_info(u.text)
            costs.append(c)
            toks.append(t)
            if deadline is not None and not len(flat) % 1024 and time.monotonic() > deadline:
                raise OutOfTime(f"deadline passed while tokenising ({len(flat)} units so far)")
        g0 += (it.units[-1].group + 1) if it.units else 0
        s0 += (it.units[-1].sentence + 1) if it.units else 0
    nu = len(flat)
    if session is not None:
        session.bm25.add(toks)
        bm25 = session.bm25
    else:
        bm25 = None
    emb = embedder
    if deadline is not None and time.monotonic() > deadline:
        raise OutOfTime("deadline passed before scoring")
    passages = _passages(items)
    mask: np.ndarray | None = None
    lex: UnitFeatures | None = None
    lex_score = np.zeros(0)
    if emb is not None and services.embed_max_tokens is not None and sum(costs) > services.embed_max_tokens:
        # Too much to embed within a call: rank lexically, embed only the best units.
        lex = features(
            texts, groups, kinds, query, token_counts=costs, bm25=bm25, unit_tokens=toks, sentences=sents
        )
        lex_score = lex.score(weights_for(weights, chat, passages, embedded=False))
        mask = _embed_mask(lex_score, sents, costs, services.embed_max_tokens)
        services.stats["embedding_preselected"] += 1
    try:
        feats = features(
            texts,
            groups,
            kinds,
            query,
            token_counts=costs,
            embedder=emb,
            bm25=bm25,
            unit_tokens=toks,
            sentences=sents,
            deadline=deadline,
            embed_mask=mask,
        )
    except EmbeddingAbandoned as exc:
        services.stats["lexical_fallbacks"] += 1
        log.warning("compaction scores %d units lexically this call: %s", nu, exc)
        emb = None
        # the lexical pre-pass, when there was one, is this very matrix
        feats = (
            lex
            if lex is not None
            else features(
                texts,
                groups,
                kinds,
                query,
                token_counts=costs,
                bm25=bm25,
                unit_tokens=toks,
                sentences=sents,
            )
        )
    score = feats.score(weights_for(weights, chat, passages, embedded=emb is not None))
    if mask is not None and emb is not None and mask.any() and not mask.all():
        # Two stages, as a retriever and its re-ranker: the lexically best units (the ones
        # embedded) re-ranked by the full scorer, all above the rest in their lexical order.
        score = np.where(mask, score - score[mask].min() + lex_score[~mask].max() + 1.0, lex_score)
    cost_arr = np.asarray(costs, dtype=np.float64)
    priority = score - length_exponent * np.log(np.maximum(cost_arr, 1.0))
    match = patterns.matcher(query)
    protected = np.zeros(nu, dtype=bool)
    base = 0
    for it in items:
        if it.units:
            ends = [u.end for u in it.units]
            for a, b in match.spans(it.text):
                k = bisect.bisect_right(ends, a)
                while k < len(ends) and it.units[k].start < b:
                    protected[base + k] = True
                    k += 1
        base += len(it.units)

    marker_cost = 0
    if template is not None:
        marker_cost = services.counter.count(template.format(tokens=999, handle=make_handle(""), what="")) + 1
    keep = [False] * nu
    prot = protected.tolist()
    # unit position within its item, for run accounting
    first_of = [0] * nu
    last_of = [0] * nu
    starts: list[int] = []
    pos = 0
    for it in items:
        starts.append(pos)
        pos += len(it.units)
    for k, it in enumerate(items):
        for j in range(len(it.units)):
            first_of[starts[k] + j] = starts[k]
            last_of[starts[k] + j] = starts[k] + len(it.units) - 1
    used = marker_cost * len(items)  # every item starts as one dropped run
    vecs = feats.embeddings
    twins = _near_duplicates(vecs, sents, novelty) if novelty is not None else {}
    seen_text: set[str] = set()
    met = True
    # Max-heap on priority (protected first). Keeping a clause raises its sibling clauses by
    # ``sibling_bonus``: the rest of a sentence that was worth quoting is the likeliest next
    # unit to matter ("It was published ..." -> "... in 1997").
    boosted = [float(x) for x in priority]
    heap = [(not prot[i], -boosted[i], i) for i in range(nu)]
    heapq.heapify(heap)
    done = [False] * nu
    by_sentence: dict[int, list[int]] = {}
    for i in range(nu):
        by_sentence.setdefault(sents[i], []).append(i)
    # Protected units are kept whatever they cost, but they must not crowd out the units
    # that answer the request: a share of the budget stays reserved for the best-scored ones.
    # (set when the first unprotected unit comes up, i.e. after protected units and the
    # markers they split off have been paid for)
    limit: int | None = None
    skipped: set[int] = set()  # did not fit: would have split a dropped run (another marker)

    def requeue_neighbours(i: int) -> None:
        """A kept unit makes its skipped neighbours cheaper (no marker between): queue them again."""
        for j in (i - 1, i + 1):
            if j in skipped and first_of[i] <= j <= last_of[i]:
                skipped.discard(j)
                done[j] = False
                heapq.heappush(heap, (not prot[j], -boosted[j], j))

    while heap:
        _p, negp, i = heapq.heappop(heap)
        if done[i] or -negp != boosted[i]:
            continue  # stale entry: the unit was boosted and re-queued
        done[i] = True
        left_dropped = i > first_of[i] and not keep[i - 1]
        right_dropped = i < last_of[i] and not keep[i + 1]
        delta = costs[i] + marker_cost * (int(left_dropped) + int(right_dropped) - 1)
        if prot[i]:
            keep[i] = True
            used += delta
            if used > budget:
                met = False
            requeue_neighbours(i)
            continue
        if limit is None:
            limit = max(budget, used + int(relevance_reserve * budget))
        if used + delta > limit:
            skipped.add(i)
            continue
        if costs[i] >= 8 and kinds[i] in ("sentence", "list_item", "line"):
            key = WS.sub(" ", texts[i]).strip()
            if key in seen_text:
                continue  # the same sentence from an overlapping chunk: keep it once
            seen_text.add(key)
        if i in twins and any(keep[j] for j in twins[i]):
            continue  # a near-duplicate of what is already kept adds nothing (MMR)
        keep[i] = True
        used += delta
        requeue_neighbours(i)
        if sibling_bonus:
            for j in by_sentence[sents[i]]:
                if not done[j]:
                    boosted[j] += sibling_bonus
                    heapq.heappush(heap, (not prot[j], -boosted[j], j))

    out_pieces: list[list[Piece]] = []
    out_om: list[Omission] = []
    dropped_tokens = 0
    for k, it in enumerate(items):
        pcs: list[Piece] = []
        run: list[int] = []
        base = starts[k]

        def flush(run: list[int], pcs: list[Piece], k: int = k, base: int = base) -> int:
            """Replace a dropped run by its marker; return the tokens it removed (0: kept)."""
            if not run:
                return 0
            units = items[k].units
            a, b = units[run[0]].start, units[run[-1]].end
            ntok = sum(costs[base + j] for j in run)
            if marker_cost and ntok <= marker_cost:
                # a marker that costs more than the text it replaces saves nothing
                if pcs and not isinstance(pcs[-1], str) and pcs[-1][1] == a:
                    pcs[-1] = (pcs[-1][0], b)
                else:
                    pcs.append((a, b))
                return 0
            omitted = items[k].text[a:b]
            handle = services.store.put(omitted)
            if template is not None:
                lead = " " if omitted[:1] in (" ", "\t") else ""
                tail = omitted[len(omitted.rstrip()) :]
                tail = "\n" if "\n" in tail else ""
                marker = lead + template.format(tokens=ntok, handle=handle, what="") + tail
                pcs.append(marker)
            else:
                marker = ""
            out_om.append(Omission(handle, items[k].index, ((a, b),), ntok, "select", marker))
            return ntok

        for j, u in enumerate(it.units):
            if keep[base + j]:
                dropped_tokens += flush(run, pcs)
                run = []
                if pcs and not isinstance(pcs[-1], str) and pcs[-1][1] == u.start:
                    pcs[-1] = (pcs[-1][0], u.end)
                else:
                    pcs.append((u.start, u.end))
            else:
                run.append(j)
        dropped_tokens += flush(run, pcs)
        out_pieces.append(pcs)
    return out_pieces, out_om, dropped_tokens, met


#: The embedding model reads at most this many tokens of a text (256 word pieces, about as many
#: BPE tokens): what embedding one sentence costs at most, whatever its length.
_EMBED_READS_TOKENS = 256


def _embed_mask(score: np.ndarray, sents: Sequence[int], costs: Sequence[int], cap: int) -> np.ndarray:
    """The units to embed: whole sentences (they are embedded whole), best lexical score first,
    until their cost (each sentence's tokens, at most what the model reads) reaches ``cap``."""
    sid, inv = np.unique(np.asarray(sents, dtype=np.int64), return_inverse=True)
    best = np.full(len(sid), -np.inf)
    np.maximum.at(best, inv, score)
    cost = np.zeros(len(sid), dtype=np.int64)
    np.add.at(cost, inv, np.asarray(costs, dtype=np.int64))
    order = np.argsort(-best, kind="stable")
    within = np.cumsum(np.minimum(cost[order], _EMBED_READS_TOKENS)) <= cap
    chosen = np.zeros(len(sid), dtype=bool)
    chosen[order[within]] = True
    return chosen[inv]


def _near_duplicates(vecs: np.ndarray | None, sents: Sequence[int], novelty: float) -> dict[int, list[int]]:
    """For each unit, the units of *other* sentences whose vectors are at least ``novelty`` alike.

    Computed once per call in blocks (matrix products), so the selection loop checks a short list
    instead of comparing each candidate with everything kept so far. Units without a vector (left
    out of embedding) have a zero row and are nobody's twin. Clauses of one sentence share its
    vector and are never each other's duplicates.
    """
    if vecs is None or not len(vecs):
        return {}
    live = np.flatnonzero(np.any(vecs != 0, axis=1))
    if len(live) < 2:
        return {}
    v = np.ascontiguousarray(vecs[live], dtype=np.float32)
    sid = np.asarray(sents, dtype=np.int64)[live]
    out: dict[int, list[int]] = {}
    block = 1024
    for a in range(0, len(live), block):
        sims = v[a : a + block] @ v.T
        rows, cols = np.nonzero(sims >= novelty)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i, j = a + r, c
            if sid[i] != sid[j]:
                out.setdefault(int(live[i]), []).append(int(live[j]))
    return out


def _passages(items: Sequence[Item]) -> bool:
    """Whether the texts are separate passages (retrieved chunks) rather than one document.

    Several texts given together are passages; one text is when most of its blocks open with a
    title of their own (``Document [3](Title: ...)``, a heading per chunk). Passage priors (the
    best passage, its first sentence) help there and mislead inside one long document.
    """
    if sum(1 for it in items if it.units) > 1:
        return True
    blocks = titled = 0
    for it in items:
        last = None
        for u in it.units:
            if u.group != last:
                last = u.group
                blocks += 1
                titled += u.kind == "heading"
    return blocks >= 3 and titled * 2 >= blocks


def keywords(text: str, k: int = 24) -> str:
    """Without a query, compact towards the text's own most frequent content words."""
    freq: dict[str, int] = {}
    for w in tokenize(text):
        if w not in STOPWORDS and len(w) > 2 and not w.isdigit():
            freq[w] = freq.get(w, 0) + 1
    return " ".join(sorted(freq, key=lambda w: -freq[w])[:k])
