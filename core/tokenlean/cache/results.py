"""What the cache's calls return: :class:`CacheResult` (a lookup) and :class:`StoreResult` (a store).

A lookup's result says what happened, hit or not (tier, similarity, score, and which guard or
threshold rejected the best candidate), so callers and adapters can report and act on it without
knowing how the cache decided.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tokenlean.cache.store import CacheEntry
from tokenlean.errors import InputError
from tokenlean.types import Message, Response

__all__ = ["CacheResult", "StoreResult", "encode_payload"]


@dataclass(slots=True)
class CacheResult:
    """What a lookup did. Truthy on a hit.

    ``rejected_by`` names why the best candidate was not served: a guard name, ``"threshold"``
    (scorer below the calibrated threshold), ``"entry_threshold"`` (the entry's own threshold,
    raised by feedback), ``"audit"`` (the error bound sends this lookup to the model to check the
    candidate), ``"no_candidate"``, ``"uncacheable"`` or ``"backend_error"``. ``candidate`` is the
    entry the decision was about, hit or not; ``audited`` marks a lookup the error bound audits.
    """

    hit: bool
    tier: str | None = None
    similarity: float | None = None
    score: float | None = None
    rejected_by: str | None = None
    reason: str | None = None
    query: str | None = None
    cached_query: str | None = None
    namespace: str | None = None
    entry: CacheEntry | None = None
    candidate: CacheEntry | None = None
    audited: bool = False
    embed_ms: float = 0.0
    search_ms: float = 0.0
    total_ms: float = 0.0

    def __bool__(self) -> bool:
        return self.hit

    def event_attributes(self) -> dict[str, Any]:
        """The lookup as a ``tokenlean.cache.lookup`` event (``tokenlean.events``): no text, only
        the decision, so an observer never exports a user's prompt."""
        attrs: dict[str, Any] = {
            "tokenlean.cache.hit": self.hit,
            "tokenlean.cache.lookup_ms": round(self.total_ms, 3),
        }
        if self.tier is not None:
            attrs["tokenlean.cache.tier"] = self.tier
        if self.similarity is not None:
            attrs["tokenlean.cache.similarity"] = float(self.similarity)
        if self.rejected_by is not None:
            attrs["tokenlean.cache.rejected_by"] = self.rejected_by
        return attrs

    @property
    def payload(self) -> Any:
        return None if self.entry is None else self.entry.payload

    @property
    def chunks(self) -> list[str] | None:
        return None if self.entry is None else self.entry.chunks

    @property
    def response(self) -> Response | None:
        """The cached answer as a ``Response`` (text payloads become an assistant message)."""
        p = self.payload
        if not isinstance(p, Mapping):
            return None
        if p.get("type") == "response":
            return Response.from_openai(p["body"])
        if p.get("type") == "text":
            return Response(message=Message(role="assistant", content=p["text"]), finish_reason="stop")
        return None

    @property
    def text(self) -> str | None:
        p = self.payload
        if isinstance(p, Mapping) and p.get("type") == "text":
            return str(p["text"])
        resp = self.response
        return None if resp is None else resp.text

    @property
    def value(self) -> Any:
        """The stored value as given to ``store`` (JSON payloads come back as they went in)."""
        p = self.payload
        if isinstance(p, Mapping) and p.get("type") == "json":
            return p.get("value")
        if isinstance(p, Mapping) and p.get("type") == "text":
            return p.get("text")
        return self.response

    def stream(self) -> Iterator[str]:
        """Replay the answer as a stream: the stored chunks, or the whole text as one chunk."""
        if self.chunks is not None:
            yield from self.chunks
        elif self.text is not None:
            yield self.text


@dataclass(frozen=True, slots=True)
class StoreResult:
    stored: bool
    reason: str | None = None
    entry_id: int | str | None = None

    def __bool__(self) -> bool:
        return self.stored


def encode_payload(value: Response | str | Any) -> dict[str, Any]:
    """``value`` as an entry stores it; :class:`CacheResult` reads it back (``response``, ``value``)."""
    if isinstance(value, Response):
        return {"type": "response", "body": value.to_openai()}
    if isinstance(value, str):
        return {"type": "text", "text": value}
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"cache values must be a Response, a str or JSON-serialisable: {exc}") from exc
    return {"type": "json", "value": value}
