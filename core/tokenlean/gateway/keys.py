"""Virtual API keys and their daily budgets.

Why digests and constant-time comparison: a gateway's config file and its process memory are
read by more people than the keys are meant for. Only ``sha256`` digests are stored, and the
presented key's digest is compared with every stored digest by ``hmac.compare_digest`` (every
entry, every time), so neither the file nor the timing of a refusal tells an attacker anything.

Budgets are counted per key per UTC day in this process. One gateway process (any number of
threads) enforces them exactly; several processes each count their own share until the counters
live in a shared store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

from tokenlean.errors import AuthError, BudgetExceeded
from tokenlean.gateway.config import KeyConfig, RouteConfig

__all__ = ["Budgets", "KeyRing", "call_tags", "hash_key", "new_key", "tenant_of"]


def hash_key(key: str) -> str:
    """The digest a config stores for ``key``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def tenant_of(key: KeyConfig | None) -> str | None:
    """The tenant a key's requests are scoped to (its name unless it names one; None: open gateway)."""
    return (key.tenant or key.name) if key is not None else None


def call_tags(key: KeyConfig | None, route: RouteConfig) -> dict[str, str]:
    """The ledger tags of a call: who made it (key, tenant) and which route took it."""
    tags = {"key": key.name if key is not None else "anonymous", "route": route.match}
    tenant = tenant_of(key)
    return tags | ({"tenant": tenant} if tenant is not None else {})


def new_key() -> tuple[str, str]:
    """A fresh virtual key and its digest."""
    key = "tl-" + secrets.token_urlsafe(32)
    return key, hash_key(key)


class KeyRing:
    """Resolves ``Authorization: Bearer <key>`` to a configured key (or refuses)."""

    def __init__(self, keys: list[KeyConfig]) -> None:
        self.keys = list(keys)
        self._digests = [bytes.fromhex(k.hash.partition(":")[2]) for k in self.keys]

    @property
    def open(self) -> bool:
        """No keys configured: every caller is let in (bind such a gateway to loopback)."""
        return not self.keys

    def authenticate(self, authorization: str | None) -> KeyConfig | None:
        """The key behind an ``Authorization`` header value; None for an open gateway."""
        if self.open:
            return None
        if not authorization:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("malformed Authorization header: expected 'Bearer <key>'")
        digest = hashlib.sha256(token.strip().encode("utf-8")).digest()
        found: KeyConfig | None = None
        for key, stored in zip(self.keys, self._digests, strict=True):
            if hmac.compare_digest(digest, stored) and found is None:  # no early exit
                found = key
        if found is None:
            raise AuthError("invalid API key")
        return found

    @staticmethod
    def allow(key: KeyConfig | None, route: RouteConfig) -> None:
        """Refuse (403) a route the key may not use."""
        if key is None:
            return
        if not any(p == "*" or p == route.match for p in key.routes):
            raise AuthError(
                f"key {key.name!r} may not use route {route.match!r}", status=403, code="route_not_allowed"
            )


@dataclass
class _Day:
    day: int
    requests: int = 0
    tokens: int = 0
    usd: Decimal = field(default_factory=Decimal)


class Budgets:
    """Per-key daily spend: ``admit`` before a call, ``charge`` after it."""

    def __init__(self, clock: object = time.time) -> None:
        self._clock = clock
        self._days: dict[str, _Day] = {}
        self._lock = threading.Lock()

    def _today(self, name: str) -> _Day:
        day = int(self._clock() // 86400)  # type: ignore[operator]
        d = self._days.get(name)
        if d is None or d.day != day:
            d = self._days[name] = _Day(day)
        return d

    def admit(self, key: KeyConfig | None) -> None:
        """Count one request, or refuse it (429) when any of the key's daily limits is reached."""
        if key is None:
            return
        b = key.budget
        with self._lock:
            d = self._today(key.name)
            if b.requests_per_day is not None and d.requests >= b.requests_per_day:
                raise BudgetExceeded(f"key {key.name!r}: {b.requests_per_day} requests per day used up")
            if b.tokens_per_day is not None and d.tokens >= b.tokens_per_day:
                raise BudgetExceeded(f"key {key.name!r}: {b.tokens_per_day} tokens per day used up")
            if b.usd_per_day is not None and d.usd >= Decimal(str(b.usd_per_day)):
                raise BudgetExceeded(f"key {key.name!r}: ${b.usd_per_day} per day used up")
            d.requests += 1

    def charge(self, key: KeyConfig | None, tokens: int, usd: Decimal | None) -> None:
        """Add a finished call's tokens and cost to the key's day."""
        if key is None:
            return
        with self._lock:
            d = self._today(key.name)
            d.tokens += tokens
            if usd is not None:
                d.usd += usd

    def spent(self, name: str) -> dict[str, object]:
        """Today's counts for key ``name``."""
        with self._lock:
            d = self._today(name)
            return {"requests": d.requests, "tokens": d.tokens, "usd": float(d.usd)}
