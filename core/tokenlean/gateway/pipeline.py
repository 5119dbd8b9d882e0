"""The levers a gateway request passes through, each the core object a Python user would use.

Order, and why (``docs/architecture.md`` §2 has the full picture):

1. **Cache lookup on the request as the client sent it.** Layout, compaction and rule routing are
   deterministic functions of that request and the route's configuration, so two equal client
   requests would be shaped identically: a hit may skip them all. (In-process adapters key on the
   request as it will be sent, because there a user's own middleware may change it afterwards; a
   gateway is the last hop.) The key's tenant is part of the cache scope.
2. On a miss: **layout** (``PromptLayout.apply``: stable prefix first, verified to move only what
   is safe), then **compaction** (``Compactor``, incremental per session so the compacted history
   stays a byte-stable prefix), then **routing** (``RulesPolicy`` over the route's targets).
3. After the upstream answered: **cache store** (only what ``SemanticCache`` judges replayable:
   temperature 0, a complete answer, no tool call) and the **ledger**.

A lever that fails degrades to pass-through for that request and is logged; the request is never
refused because of tokenlean's own failure.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tokenlean.gateway.config import GatewayConfig, RouteConfig
from tokenlean.metering import JsonlSink, Ledger, Meter, PriceTable
from tokenlean.types import Request, Response

__all__ = ["Levers", "Shaped", "bypass_requested"]

log = logging.getLogger("tokenlean.gateway")


def bypass_requested(headers: Mapping[str, str]) -> bool:
    """``x-tokenlean-bypass: 1`` (or true/yes): every lever off for this request."""
    return headers.get("x-tokenlean-bypass", "").strip().lower() in ("1", "true", "yes")


@dataclass
class Shaped:
    """A request after the miss-path levers: what to send, where, and what changed."""

    body: dict[str, Any]
    target: str
    reason: str
    tokens_before: int = 0
    tokens_saved: int = 0
    moves: list[str] = field(default_factory=list)


class Levers:
    """The core objects behind every route: one cache, one layout, a compactor and a rules
    policy per route, one meter."""

    def __init__(self, config: GatewayConfig, *, meter: Meter | None = None, cache: Any = None) -> None:
        self.config = config
        self.meter = meter if meter is not None else self._meter(config)
        self.cache = cache if cache is not None else self._cache(config)
        self._layout: Any = None
        self._compactors: dict[int, Any] = {}
        self._policies: dict[int, Any] = {}
        self._shared_omissions: Any = None

    @staticmethod
    def _meter(config: GatewayConfig) -> Meter:
        prices = PriceTable.default()
        if config.ledger.prices:
            prices = prices.with_overrides(config.ledger.prices)
        ledger = Ledger(JsonlSink(config.ledger.path) if config.ledger.path else None, max_records=100_000)
        return Meter(ledger, prices)

    @staticmethod
    def _cache(config: GatewayConfig) -> Any:
        if not any(r.cache for r in config.routes):
            return None
        from tokenlean.cache import SemanticCache

        c = config.cache
        backend = c.backend
        if backend == ":memory:" and config.shared.redis is not None:
            backend = config.shared.redis  # one cache for every gateway process
        return SemanticCache(
            backend,
            semantic=c.semantic,
            ttl=c.ttl,
            max_entries=c.max_entries,
            assume_deterministic=c.assume_deterministic,
        )

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    # -- cache -----------------------------------------------------------------------------------
    def lookup(self, request: Request, tenant: str | None) -> Any:
        """The cache's answer (a ``CacheResult``), or None when the cache failed (logged)."""
        try:
            return self.cache.lookup(request, tenant=tenant)
        except Exception:
            log.exception("tokenlean gateway: cache lookup failed; passing through")
            return None

    def store(
        self, request: Request, answer: dict[str, Any], chunks: list[str] | None, tenant: str | None
    ) -> bool:
        """Keep a replayable answer; False when the cache declined it or failed (logged)."""
        try:
            response = Response.from_openai(answer)
            return bool(self.cache.store(request, response, chunks=chunks, tenant=tenant).stored)
        except Exception:
            log.exception("tokenlean gateway: cache store failed (the answer was still returned)")
            return False

    # -- the miss path ---------------------------------------------------------------------------
    def shape(
        self,
        route: RouteConfig,
        body: dict[str, Any],
        request: Request,
        session: str | None,
        tenant: str | None = None,
    ) -> Shaped:
        """Layout, compaction and rule routing for a request the cache did not answer."""
        shaped = Shaped(body=body, target=route.targets[0], reason="route default")
        current = request
        changed = False
        if route.layout:
            try:
                reordered = self.layout.apply(current)
                if reordered.changed:
                    current, changed = reordered.request, True
                    shaped.moves.extend(m.kind for m in reordered.moves)
            except Exception:
                log.exception("tokenlean gateway: layout failed; request sent as it was")
        if route.compaction is not None:
            try:
                compacted = self._compact(route, current, session, tenant)
                if compacted.tokens_after < compacted.tokens_before:
                    compacted.verify()
                    assert compacted.request is not None
                    current, changed = compacted.request, True
                    shaped.tokens_before = compacted.tokens_before
                    shaped.tokens_saved = compacted.tokens_before - compacted.tokens_after
            except Exception:
                log.exception("tokenlean gateway: compaction failed; request sent uncompacted")
        if route.rules:
            try:
                decision = self._policy(route).decide(request)
                if decision is not None:
                    shaped.target, shaped.reason = decision.target, decision.reason
            except Exception:
                log.exception("tokenlean gateway: routing rules failed; default target used")
        if changed:
            shaped.body = {**body, **current.to_openai()}
            if not current.tools and "tools" in shaped.body and "tools" not in body:
                shaped.body.pop("tools")
        return shaped

    @property
    def layout(self) -> Any:
        if self._layout is None:
            from tokenlean.layout import PromptLayout

            self._layout = PromptLayout()
        return self._layout

    def _compact(self, route: RouteConfig, request: Request, session: str | None, tenant: str | None) -> Any:
        """Compaction of one request: incremental within a client's session (per tenant, so no two
        tenants' sessions meet), from scratch for a request that names no session."""
        compactor = self._compactor(route)
        if session:
            return compactor.compact(request, session=f"{tenant or ''}\x00{session}")
        throwaway = f"\x01{uuid.uuid4().hex}"
        try:
            return compactor.compact(request, session=throwaway)
        finally:
            compactor.reset(throwaway)

    def _compactor(self, route: RouteConfig) -> Any:
        key = id(route)
        c = self._compactors.get(key)
        if c is None:
            from tokenlean.compaction import Compactor

            cfg = route.compaction
            assert cfg is not None
            budget: dict[str, Any] = {}
            if cfg.keep is not None:
                budget["keep"] = cfg.keep
            elif cfg.target_tokens is not None:
                budget["target_tokens"] = cfg.target_tokens
            else:
                budget["ratio"] = cfg.ratio if cfg.ratio is not None else 0.3
            c = self._compactors[key] = Compactor(
                **budget,
                mode=cfg.mode,
                keep_last_turns=cfg.keep_last_turns,
                min_tokens=cfg.min_tokens,
                incremental=True,
                store=self._omission_store(cfg.store),
            )
        return c

    def _omission_store(self, store: str | None) -> Any:
        """The configured store; with a shared Redis and none configured, Redis (a handle one
        process issued is expanded by any other)."""
        if store is None and self.config.shared.redis is not None:
            from tokenlean.compaction.omissions import RedisOmissionStore

            return RedisOmissionStore(url=self.config.shared.redis, prefix=self.config.shared.prefix + "om:")
        return store

    def expand(self, handle: str) -> str:
        """The text an omission marker of any route stands for (``UnknownHandleError``)."""
        from tokenlean.errors import UnknownHandleError

        for c in self._compactors.values():
            try:
                return str(c.expand_omitted(handle))
            except UnknownHandleError:
                continue
        if self.config.shared.redis is not None:  # issued by another gateway process
            from tokenlean.compaction.omissions import find_handle

            if self._shared_omissions is None:
                self._shared_omissions = self._omission_store(None)
            return str(self._shared_omissions.get(find_handle(handle)))
        raise UnknownHandleError(handle)

    def _policy(self, route: RouteConfig) -> Any:
        key = id(route)
        p = self._policies.get(key)
        if p is None:
            from tokenlean.routing import Rule, RulesPolicy

            p = self._policies[key] = RulesPolicy(
                [
                    Rule(
                        r.target,
                        tags=tuple(r.tags),
                        min_tokens=r.min_tokens,
                        max_tokens=r.max_tokens,
                        has_tools=r.has_tools,
                        name=r.name,
                    )
                    for r in route.rules
                ]
            )
        return p

    # -- the ledger ------------------------------------------------------------------------------
    @staticmethod
    def estimate_usage(body: dict[str, Any], completion: str) -> dict[str, int]:
        """Usage counted with tokenlean's tokenizer, for an upstream that streamed none: the
        prompt as sent and the streamed text (recorded with ``usage_estimated``)."""
        from tokenlean.tokens import count_messages, count_tokens

        model = body.get("model") if isinstance(body.get("model"), str) else None
        tools = [t for t in body.get("tools") or () if isinstance(t, dict)]
        try:
            prompt = count_messages(body.get("messages") or (), model, tools)
        except Exception:
            log.exception("tokenlean gateway: could not count the prompt's tokens")
            prompt = 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": count_tokens(completion, model) if completion else 0,
        }

    def record(
        self,
        *,
        model: str,
        usage: Any,
        endpoint: str | None,
        task: str | None,
        tags: dict[str, str],
        started_at: float,
        first_token_at: float | None = None,
        cache_hit: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> tuple[int, Decimal | None]:
        """Record one call; returns its tokens and cost (for the key's budget)."""
        if not isinstance(usage, dict) or not usage:
            # no usage reported (a stream cut short, a server that does not count): the call is
            # still recorded, with zero tokens and ``usage_missing`` in ``extra``
            usage, extra = (
                {"prompt_tokens": 0, "completion_tokens": 0},
                {**(extra or {}), "usage_missing": True},
            )
        try:
            rec = self.meter.record(
                model=model,
                usage=usage,
                endpoint=endpoint,
                task_id=task,
                tags=tags,
                started_at=started_at,
                first_token_at=first_token_at,
                ended_at=time.time(),
                cache_hit=cache_hit,
                extra=extra,
            )
        except Exception:
            log.exception("tokenlean gateway: metering failed (the answer was still returned)")
            return 0, None
        return rec.usage.total_tokens, rec.cost
