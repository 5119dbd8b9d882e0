"""``SemanticCache``: an exact tier, then a semantic tier that refuses to lie.

A lookup runs, in order:

1. **Scope.** The request becomes a namespace (hash of tenant, model, sampling parameters, tools,
   system prompt and the conversation before the last user turn, per :class:`ScopeConfig`) and a
   query text (the last user turn). Entries of another namespace are never even searched. The
   whole key is built in :mod:`tokenlean.cache.scope`.
2. **Exact tier.** The normalised query text (unicode NFKC, case, whitespace) is looked up by hash.
3. **Semantic tier.** The query is embedded and the nearest entries of the namespace are fetched;
   each candidate must pass every guard (numbers, negation, order, quotes, code, dates, entities),
   then the calibrated scorer, then its own per-entry threshold (raised by ``report_wrong``).
   With ``max_false_hit_rate`` set, the scorer's threshold is the one an :class:`ErrorBound`
   learns online from audited lookups instead of the calibrated one.

Every answer is a :class:`~tokenlean.cache.results.CacheResult` that says what happened (tier,
similarity, score, and which guard or threshold rejected the best candidate). A failing backend
never breaks the caller: the lookup is a miss with ``rejected_by="backend_error"`` and a logged
warning (pass-through).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokenlean import events
from tokenlean._checks import check_number, str_items
from tokenlean.cache.backends import CacheBackend, EmbeddedBackend
from tokenlean.cache.bound import ErrorBound
from tokenlean.cache.guards import ALL_GUARDS, DEFAULT_GUARDS, extract, failed_guard
from tokenlean.cache.results import CacheResult, StoreResult, encode_payload
from tokenlean.cache.scope import ScopeConfig, as_request, exact_key, normalize_text, scope_of
from tokenlean.cache.scoring import LabelledPair, PairScorer
from tokenlean.cache.store import CacheEntry
from tokenlean.errors import CacheBackendError, ConfigError, EmptyInputError, InputError
from tokenlean.types import Message, Request, Response

__all__ = ["REPLAYABLE_FINISH_REASONS", "SemanticCache"]

logger = logging.getLogger("tokenlean.cache")

#: Finish reasons of a complete answer. Any other reported reason (``length``/``max_tokens``:
#: truncated; ``content_filter``/``safety``: filtered; ``error``...) is never stored: replaying it
#: would hand a truncated or withheld answer to a request that could have had the whole one.
REPLAYABLE_FINISH_REASONS = frozenset(
    {"stop", "end_turn", "stop_sequence", "tool_calls", "function_call", "tool_use", "eos", "eos_token"}
)

_REFUSAL = re.compile(
    r"^\s*(?:i['’]m sorry|i am sorry|sorry,|i apologi[sz]e|i can(?:not|['’]t) (?:help|assist|provide|comply)|"
    r"i['’]m (?:not able|unable) to|as an ai\b)",
    re.IGNORECASE,
)


@dataclass
class _Stats:
    lookups: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    stores: int = 0
    skipped: int = 0
    backend_errors: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class SemanticCache:
    """Exact + semantic response cache with guards, calibrated scoring and pluggable backends.

    ``backend``: an :class:`~tokenlean.cache.backends.EmbeddedBackend`, a
    :class:`~tokenlean.cache.redis_backend.RedisBackend`, a path to a SQLite file (embedded),
    a ``redis://`` URL, or None for an in-memory cache.

    Only answers that the same request would get again are stored and served. For a model call (a
    ``Request``) that means ``temperature`` is explicitly 0: an unset temperature is the provider's
    default, which samples. ``assume_deterministic=True`` (every model) or a collection of model
    names declares that requests without a temperature may be cached (a local server you run
    greedy, or a team that accepts one sample as *the* answer); ``cache_temperature=True`` caches
    explicitly sampled requests too. Truncated (``finish_reason="length"``), filtered, errored,
    refused and tool-call answers are never stored unless asked for (``cache_*`` options, ``force``).
    """

    def __init__(
        self,
        backend: CacheBackend | str | Path | None = None,
        *,
        embedder: Any = None,
        scorer: PairScorer | None = None,
        guards: Iterable[str] = DEFAULT_GUARDS,
        scope: ScopeConfig | None = None,
        ttl: float | None = None,
        max_entries: int | None = None,
        eviction: str = "lru",
        semantic: bool = True,
        top_k: int = 4,
        min_cosine: float = 0.5,
        max_query_chars: int = 1000,
        cache_temperature: bool = False,
        assume_deterministic: bool | Iterable[str] = False,
        cache_tool_calls: bool = False,
        cache_refusals: bool = False,
        feedback_margin: float = 1e-6,
        max_false_hit_rate: float | ErrorBound | None = None,
        answer_judge: Callable[[str, str], bool] | None = None,
        answer_similarity: float = 0.9,
    ) -> None:
        # Options first, the backend last: a bad option must not leave a store file open.
        self.guards = str_items(guards, "guards")
        unknown = [g for g in self.guards if g not in ALL_GUARDS]
        if unknown:
            raise ConfigError(f"unknown guards {unknown}; known: {sorted(ALL_GUARDS)}")
        if eviction not in ("lru", "lfu"):
            raise ConfigError("eviction must be 'lru' or 'lfu'")
        # NaN passes ``ttl <= 0`` and would make every entry's expiry NaN: checked by name.
        check_number(ttl, "ttl (seconds)", above=0, maximum=1e12, optional=True)
        check_number(max_entries, "max_entries", minimum=1, integer=True, optional=True)
        check_number(top_k, "top_k", minimum=1, maximum=10_000, integer=True)
        check_number(min_cosine, "min_cosine", minimum=-1, maximum=1)
        check_number(max_query_chars, "max_query_chars", minimum=0, integer=True)
        check_number(feedback_margin, "feedback_margin", minimum=0, maximum=1)
        check_number(answer_similarity, "answer_similarity", minimum=-1, maximum=1)
        if answer_judge is not None and not callable(answer_judge):
            raise ConfigError("answer_judge must be a callable (fresh_answer, cached_answer) -> bool")
        bound = (
            max_false_hit_rate
            if isinstance(max_false_hit_rate, ErrorBound) or max_false_hit_rate is None
            else ErrorBound(max_false_hit_rate)
        )
        if scope is not None and not isinstance(scope, ScopeConfig):
            raise ConfigError(f"scope must be a ScopeConfig, got {type(scope).__name__}")
        if not isinstance(assume_deterministic, bool):
            assume_deterministic = frozenset(str_items(assume_deterministic, "assume_deterministic"))
        self.backend: CacheBackend = self._backend(backend)
        self._embedder = embedder
        self._scorer = scorer
        self.scope = scope or ScopeConfig()
        self.ttl = ttl
        self.max_entries = max_entries
        self.eviction = eviction
        self.semantic = semantic
        self.top_k = top_k
        self.min_cosine = min_cosine
        self.max_query_chars = max_query_chars
        self.cache_temperature = cache_temperature
        self.assume_deterministic: bool | frozenset[str] = assume_deterministic
        self.cache_tool_calls = cache_tool_calls
        self.cache_refusals = cache_refusals
        self.feedback_margin = feedback_margin
        self.error_bound: ErrorBound | None = bound
        self.answer_judge = answer_judge
        self.answer_similarity = answer_similarity
        # audited lookups waiting for the model's answer (consumed by ``store``/``feedback``)
        self._audits: OrderedDict[tuple[str, str], tuple[CacheEntry, float, bool]] = OrderedDict()
        self._audit_lock = threading.Lock()
        self._stats = _Stats()
        self._last_error_log = 0.0

    @staticmethod
    def _backend(backend: CacheBackend | str | Path | None) -> CacheBackend:
        if backend is None:
            return EmbeddedBackend(":memory:")
        if isinstance(backend, str) and backend.startswith(("redis://", "rediss://", "unix://")):
            from tokenlean.cache.redis_backend import RedisBackend

            return RedisBackend(backend)
        if isinstance(backend, (str, Path)):
            return EmbeddedBackend(backend)
        if not isinstance(backend, CacheBackend):
            raise ConfigError(
                f"backend must be a CacheBackend, a SQLite path, a redis:// URL or None, not {type(backend).__name__}"
            )
        return backend

    # -- lazily built parts ----------------------------------------------------------------------
    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from tokenlean.embeddings import get_default_embedder

            self._embedder = get_default_embedder()
        return self._embedder

    @property
    def scorer(self) -> PairScorer:
        if self._scorer is None:
            self._scorer = PairScorer.default(getattr(self.embedder, "name", None))
        return self._scorer

    @scorer.setter
    def scorer(self, value: PairScorer) -> None:
        self._scorer = value

    def _embed(self, text: str) -> np.ndarray:
        return np.asarray(self.embedder.embed([text]), dtype=np.float32)[0]

    def _warn_backend(self, exc: Exception) -> None:
        self._stats.backend_errors += 1
        now = time.monotonic()
        if now - self._last_error_log > 5.0:  # one line per 5 s, not one per request
            self._last_error_log = now
            logger.warning("cache backend unavailable, passing through to the model: %s", exc)

    # -- lookup --------------------------------------------------------------------------------
    def lookup(
        self,
        query: Request | str | Sequence[Message | Mapping[str, Any]],
        *,
        tenant: str | None = None,
        model: str | None = None,
    ) -> CacheResult:
        """Find a cached answer for ``query`` (a ``Request``, a user text or a message list)."""
        result = self._lookup(query, tenant, model)
        if events.enabled():
            events.emit(events.CACHE_LOOKUP, result.event_attributes())
        return result

    def _lookup(
        self,
        query: Request | str | Sequence[Message | Mapping[str, Any]],
        tenant: str | None,
        model: str | None,
    ) -> CacheResult:
        t0 = time.perf_counter()
        self._stats.lookups += 1
        request = as_request(query, model)
        sampled = self.sampling(request) if isinstance(query, Request) else None
        if sampled is not None:
            return self._miss(CacheResult(hit=False, rejected_by="uncacheable", reason=sampled), t0)
        try:
            scope = scope_of(request, self.scope, tenant)
        except EmptyInputError as exc:
            return self._miss(CacheResult(hit=False, rejected_by="uncacheable", reason=str(exc)), t0)
        key = exact_key(scope.query)
        result = CacheResult(hit=False, query=scope.query, namespace=scope.namespace)
        try:
            entry = self.backend.get_exact(scope.namespace, key)
            if entry is not None:
                self._serve(entry)
                self._stats.exact_hits += 1
                result.hit, result.tier, result.entry = True, "exact", entry
                result.similarity = result.score = 1.0
                result.cached_query = entry.query
                result.total_ms = (time.perf_counter() - t0) * 1000
                return result
            if not self.semantic or len(scope.query) > self.max_query_chars:
                result.rejected_by = "no_candidate"
                result.reason = (
                    "semantic tier off" if not self.semantic else "query too long for the semantic tier"
                )
                return self._miss(result, t0)
            t1 = time.perf_counter()
            vec = self._embed(scope.query)
            t2 = time.perf_counter()
            result.embed_ms = (t2 - t1) * 1000
            candidates = self.backend.search(scope.namespace, vec, self.top_k)
            stat = self._decide(result, scope.query, vec, candidates)
            result.search_ms = (time.perf_counter() - t2) * 1000
        except CacheBackendError as exc:
            self._warn_backend(exc)
            result.rejected_by, result.reason = "backend_error", str(exc)
            return self._miss(result, t0)
        if self.error_bound is not None and result.candidate is not None and stat is not None:
            self._audit(result, key, stat)
        if result.hit:
            assert result.entry is not None
            try:
                self._serve(result.entry)
            except CacheBackendError as exc:
                self._warn_backend(exc)
            self._stats.semantic_hits += 1
            result.total_ms = (time.perf_counter() - t0) * 1000
            return result
        return self._miss(result, t0)

    def _serve(self, entry: CacheEntry) -> None:
        self.backend.touch(entry)

    def _miss(self, result: CacheResult, t0: float) -> CacheResult:
        self._stats.misses += 1
        if result.rejected_by:
            self._stats.rejected[result.rejected_by] = self._stats.rejected.get(result.rejected_by, 0) + 1
        result.total_ms = (time.perf_counter() - t0) * 1000
        return result

    def _audit(self, result: CacheResult, key: str, stat: float) -> None:
        """Let the error bound audit this lookup: a would-be hit becomes a miss the model answers."""
        assert self.error_bound is not None and result.candidate is not None
        if not self.error_bound.audit():
            return
        result.audited = True
        would_serve = result.hit
        if would_serve:
            result.hit, result.tier, result.entry, result.rejected_by = False, None, None, "audit"
        assert result.namespace is not None
        with self._audit_lock:
            self._audits[(result.namespace, key)] = (result.candidate, stat, would_serve)
            self._audits.move_to_end((result.namespace, key))
            while len(self._audits) > 10_000:  # lookups whose answer never came back
                self._audits.popitem(last=False)

    def _decide(
        self, result: CacheResult, query: str, vec: np.ndarray, candidates: list[tuple[CacheEntry, float]]
    ) -> float | None:
        """Pick the best candidate that passes guards, scorer and its own threshold.

        Returns the decision's score for the error bound: the served (or best passing) candidate's
        score, ``-inf`` when guards or the similarity floor ruled every candidate out, None when
        the index had none.
        """
        qf = extract(query)
        pool = [(e, s) for e, s in candidates if s >= self.min_cosine and e.embedding is not None]
        if not pool:
            result.rejected_by = "no_candidate"
            if candidates:
                result.similarity = float(candidates[0][1])
                result.cached_query = candidates[0][0].query
                result.candidate = candidates[0][0]
                return -math.inf
            return None
        passing: list[tuple[CacheEntry, float, Any]] = []
        first_reject: tuple[str, CacheEntry, float] | None = None
        for entry, sim in pool:
            name = failed_guard(qf, extract(entry.query), self.guards)
            if name is None:
                passing.append((entry, sim, extract(entry.query)))
            elif first_reject is None:
                first_reject = (name, entry, sim)
        if not passing:
            assert first_reject is not None
            result.rejected_by, result.cached_query, result.similarity = (
                first_reject[0],
                first_reject[1].query,
                first_reject[2],
            )
            result.candidate = first_reject[1]
            return -math.inf
        scorer = self.scorer
        threshold = scorer.threshold if self.error_bound is None else self.error_bound.threshold
        u = np.repeat(vec.reshape(1, -1), len(passing), axis=0)
        v = np.stack([np.asarray(e.embedding, np.float32) for e, _, _ in passing])
        scores = scorer.score(u, v, [qf] * len(passing), [f for _, _, f in passing])
        order = np.argsort(-scores)
        best = int(order[0])
        entry, sim, _ = passing[best]
        result.similarity, result.score, result.cached_query = float(sim), float(scores[best]), entry.query
        result.candidate = entry
        for j in order:
            entry, sim, _ = passing[int(j)]
            sc = float(scores[int(j)])
            if sc < threshold:
                result.rejected_by = result.rejected_by or "threshold"
                break
            if sc < entry.min_score:
                result.rejected_by = "entry_threshold"
                continue
            result.hit, result.tier, result.entry, result.candidate = True, "semantic", entry, entry
            result.similarity, result.score, result.cached_query = float(sim), sc, entry.query
            result.rejected_by = None
            break
        return float(result.score)

    # -- store ---------------------------------------------------------------------------------
    def deterministic(self, model: str | None) -> bool:
        """Whether requests to ``model`` without an explicit temperature may be cached."""
        if isinstance(self.assume_deterministic, bool):
            return self.assume_deterministic
        return model is not None and model in self.assume_deterministic

    def sampling(self, request: Request) -> str | None:
        """Why ``request``'s answer is a sample that must not be reused (None when it is not)."""
        params = request.params
        n = params.get("n")
        if n is not None and n != 1:
            return f"n={n!r} asks for several answers"
        if self.cache_temperature:
            return None
        temp = params.get("temperature")
        if temp is None:
            if self.deterministic(request.model):
                return None
            return (
                "temperature unset (the provider default samples): set temperature=0, or "
                "SemanticCache(assume_deterministic=True) for a model you know is greedy"
            )
        if isinstance(temp, bool) or not isinstance(temp, (int, float)) or temp != temp:
            return f"temperature {temp!r} is not a number"
        if temp > 0:
            return "temperature > 0 (sampled; cache_temperature=True caches it anyway)"
        return None

    def cacheable(
        self, request: Request, response: Response | str | Any, *, model_call: bool = True
    ) -> str | None:
        """Why ``response`` must not be cached for ``request`` (None when it may be).

        ``model_call=False``: ``request`` is only text (no sampling settings to judge).
        """
        why = self.sampling(request) if model_call else None
        if why is not None:
            return why
        if isinstance(response, Response):
            reason = response.finish_reason
            if reason is not None and str(reason).lower() not in REPLAYABLE_FINISH_REASONS:
                return f"finish_reason {reason}"
            if response.message.tool_calls and not self.cache_tool_calls:
                return "tool-call response"
            if response.message.extra.get("refusal") and not self.cache_refusals:
                return "refusal"
            text = response.text
        elif isinstance(response, str):
            text = response
        elif isinstance(response, BaseException) or response is None:
            return "error"
        else:
            return None
        if not text.strip():
            return "empty answer"
        if not self.cache_refusals and _REFUSAL.match(text):
            return "refusal"
        return None

    def store(
        self,
        query: Request | str | Sequence[Message | Mapping[str, Any]],
        response: Response | str | Any,
        *,
        chunks: Sequence[str] | None = None,
        tenant: str | None = None,
        model: str | None = None,
        force: bool = False,
        answer_text: str | None = None,
    ) -> StoreResult:
        """Cache ``response`` for ``query``; ``chunks`` keeps the stream pieces for replay.

        ``answer_text``: the answer as text when ``response`` is a structured value (an adapter's
        serialised generations): the error bound compares answers by their text.

        Sampled requests (see the class docstring), truncated, filtered and errored answers,
        refusals and tool-call answers are skipped unless the matching option (or ``force``) says
        otherwise. Returns whether it was stored.
        """
        request = as_request(query, model)
        if chunks is not None:
            if isinstance(chunks, (str, bytes)) or not isinstance(chunks, Iterable):
                raise InputError(f"chunks must be a list of str, got {type(chunks).__name__}")
            chunks = list(chunks)
            if not all(isinstance(c, str) for c in chunks):
                raise InputError("chunks must be a list of str")
        try:
            scope = scope_of(request, self.scope, tenant)
        except EmptyInputError as exc:
            self._stats.skipped += 1
            return StoreResult(False, str(exc))
        if answer_text is not None and not isinstance(answer_text, str):
            raise InputError(f"answer_text must be a str, got {type(answer_text).__name__}")
        key = exact_key(scope.query)
        if self._audits:
            fresh = answer_text if answer_text is not None else response
            self._settle_audit(scope.namespace, key, fresh)
        why = None if force else self.cacheable(request, response, model_call=isinstance(query, Request))
        if why is not None:
            self._stats.skipped += 1
            return StoreResult(False, why)
        payload = encode_payload(response)
        if answer_text is not None and payload["type"] == "json":
            payload["answer_text"] = answer_text
        entry = CacheEntry(
            namespace=scope.namespace,
            key=key,
            query=scope.query,
            payload=payload,
            chunks=list(chunks) if chunks is not None else None,
        )
        try:
            if self.semantic and len(scope.query) <= self.max_query_chars:
                entry.embedding = self._embed(scope.query)
            self.backend.put(entry, self.ttl)
            if self.max_entries is not None or self.ttl is not None:
                self.backend.enforce(self.max_entries, self.eviction)
        except CacheBackendError as exc:
            self._warn_backend(exc)
            return StoreResult(False, f"backend error: {exc}")
        self._stats.stores += 1
        return StoreResult(True, None, entry.id)

    # -- async ---------------------------------------------------------------------------------
    async def alookup(
        self,
        query: Request | str | Sequence[Message | Mapping[str, Any]],
        *,
        tenant: str | None = None,
        model: str | None = None,
    ) -> CacheResult:
        """``lookup`` off the event loop (embedding and I/O run in a worker thread)."""
        return await asyncio.to_thread(self.lookup, query, tenant=tenant, model=model)

    async def astore(
        self,
        query: Request | str | Sequence[Message | Mapping[str, Any]],
        response: Response | str | Any,
        *,
        chunks: Sequence[str] | None = None,
        tenant: str | None = None,
        model: str | None = None,
        force: bool = False,
    ) -> StoreResult:
        return await asyncio.to_thread(
            self.store, query, response, chunks=chunks, tenant=tenant, model=model, force=force
        )

    # -- feedback ------------------------------------------------------------------------------
    def _take_audit(self, namespace: str, key: str) -> tuple[CacheEntry, float, bool] | None:
        with self._audit_lock:
            return self._audits.pop((namespace, key), None)

    def _settle_audit(self, namespace: str, key: str, response: Response | str | Any) -> None:
        """The model answered an audited lookup: judge the candidate's answer against it."""
        fresh = response.text if isinstance(response, Response) else response
        if not isinstance(fresh, str):
            return  # no text to compare (an error, a JSON value): the audit stays unsettled
        audit = self._take_audit(namespace, key)
        if audit is None:
            return
        entry, stat, would_serve = audit
        cached = CacheResult(hit=False, entry=entry).text
        if cached is None and isinstance(entry.payload, Mapping):
            cached = entry.payload.get("answer_text")
        if not isinstance(cached, str):
            return
        self._observe(entry, stat, self._judge(fresh, cached), would_serve)

    def _judge(self, fresh: str, cached: str) -> bool:
        if self.answer_judge is not None:
            return bool(self.answer_judge(fresh, cached))
        if normalize_text(fresh) == normalize_text(cached):
            return True
        a, b = np.asarray(self.embedder.embed([fresh, cached]), dtype=np.float32)
        return float(a @ b) >= self.answer_similarity

    def _observe(self, entry: CacheEntry, stat: float, correct: bool, would_serve: bool) -> None:
        assert self.error_bound is not None
        self.error_bound.observe(stat, correct, would_serve=would_serve)
        if not correct and math.isfinite(stat):
            try:
                self._raise_entry_threshold(entry, stat)
            except CacheBackendError as exc:
                self._warn_backend(exc)

    def _raise_entry_threshold(self, entry: CacheEntry, score: float) -> None:
        """Make ``entry`` miss at ``score`` and below from now on (closer paraphrases still hit)."""
        new = min(1.0 + self.feedback_margin, max(entry.min_score, score + self.feedback_margin))
        self.backend.set_min_score(entry, new)

    def feedback(self, result: CacheResult, correct: bool) -> None:
        """Label an audited lookup yourself: was ``result.candidate``'s answer right for its query?

        For callers with their own judge of answers (a grader, a human): the label goes to the error
        bound and, when wrong, raises the candidate's own threshold. Lookups that were not audited
        are refused (they are not part of the bound's uniform sample).
        """
        if not isinstance(result, CacheResult) or not result.audited:
            raise InputError("feedback() takes a CacheResult that the error bound audited (result.audited)")
        if result.namespace is None or result.query is None:
            raise InputError("feedback() needs the CacheResult lookup returned")
        audit = self._take_audit(result.namespace, exact_key(result.query))
        if audit is None:
            return  # already settled by store()
        entry, stat, would_serve = audit
        self._observe(entry, stat, bool(correct), would_serve)

    def report_wrong(self, hit: CacheResult) -> None:
        """The answer served by ``hit`` was wrong for its query: never serve it at that score again.

        Exact hits are deleted (the stored answer itself is bad). Semantic hits raise the entry's
        own threshold just above the score that hit, so the same or a less similar query misses
        while closer paraphrases still hit (per-entry adaptive thresholds, as in verified semantic
        caching).
        """
        if not hit.hit or hit.entry is None:
            raise InputError("report_wrong() takes a CacheResult that was a hit")
        try:
            if hit.tier == "exact":
                self.backend.delete(hit.entry)
                return
            self._raise_entry_threshold(hit.entry, hit.score if hit.score is not None else 1.0)
        except CacheBackendError as exc:
            self._warn_backend(exc)

    # -- calibration ---------------------------------------------------------------------------
    def pair_scores(self, pairs: Sequence[LabelledPair]) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Feature matrix, labels and guard verdicts of labelled pairs (embedded in one batch)."""
        texts = sorted({t for p in pairs for t in (p.query, p.cached)})
        emb = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        row = {t: i for i, t in enumerate(texts)}
        u = emb[[row[p.query] for p in pairs]]
        v = emb[[row[p.cached] for p in pairs]]
        fa = [extract(p.query) for p in pairs]
        fb = [extract(p.cached) for p in pairs]
        vetoes = [failed_guard(a, b, self.guards) for a, b in zip(fa, fb, strict=True)]
        x = self.scorer_template().feature_matrix(u, v, fa, fb)
        y = np.array([p.duplicate for p in pairs], dtype=bool)
        return x, y, vetoes

    def scorer_template(self) -> PairScorer:
        return PairScorer(
            use_embedding=False,
            model=getattr(self.embedder, "name", None),
            dim=int(getattr(self.embedder, "dim", 0)) or None,
        )

    def calibrate(
        self,
        pairs: Iterable[LabelledPair | tuple[str, str, bool | int]],
        max_false_hit_rate: float = 0.01,
        *,
        folds: int = 5,
    ) -> dict[str, float]:
        """Fit the scorer on labelled pairs and set its threshold for ``max_false_hit_rate``.

        ``pairs``: ``(query, cached_query, is_duplicate)`` tuples or ``LabelledPair``. The rate is
        met on out-of-fold scores (each pair judged by a model fitted without it). Raises
        ``CalibrationError`` when there are too few pairs to measure that rate.
        """
        items = [
            p if isinstance(p, LabelledPair) else LabelledPair(p[0], p[1], bool(int(p[2]))) for p in pairs
        ]
        x, y, vetoes = self.pair_scores(items)
        scorer = self.scorer_template()
        stats = scorer.calibrate(
            x, y, np.array([v is not None for v in vetoes]), max_false_hit_rate, folds=folds
        )
        self._scorer = scorer
        logger.info("calibrated semantic cache: %s", stats)
        return stats

    # -- housekeeping --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        s = self._stats
        hits = s.exact_hits + s.semantic_hits
        out: dict[str, Any] = {
            "lookups": s.lookups,
            "hits": hits,
            "exact_hits": s.exact_hits,
            "semantic_hits": s.semantic_hits,
            "misses": s.misses,
            "hit_rate": hits / s.lookups if s.lookups else 0.0,
            "stores": s.stores,
            "skipped_stores": s.skipped,
            "backend_errors": s.backend_errors,
            "rejected_by": dict(s.rejected),
        }
        if self.error_bound is not None:
            out["error_bound"] = self.error_bound.report()
        try:
            out["backend"] = self.backend.stats()
        except CacheBackendError as exc:
            out["backend"] = {"error": str(exc)}
        return out

    def clear(self) -> None:
        self.backend.clear()

    def close(self) -> None:
        if self.error_bound is not None and self.error_bound.path is not None:
            try:
                self.error_bound.save()
            except OSError as exc:  # the audits are a cache of evidence: losing them costs hits, not answers
                logger.warning("could not save the error bound's audits: %s", exc)
        self.backend.close()

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
