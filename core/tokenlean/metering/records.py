"""One immutable record per LLM call, and the task context calls are grouped by.

A ``UsageRecord`` is the unit everything else in metering adds up: the ledger aggregates them,
the exporters serialise them, the adapters create them. It is frozen so a record handed to a
sink or a listener cannot be changed behind the ledger's back, and it carries raw timestamps
(epoch seconds) rather than derived numbers so that TTFT, duration and throughput are always
computed the same way, from the same three instants.

The *current task* lives in a ``ContextVar``: it follows ``asyncio`` tasks and threads started
with ``contextvars.copy_context()``, so concurrent agent runs in one process never mix their
tokens, and an adapter deep inside a framework can find the task without being handed it.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

from tokenlean.errors import MeteringError, TextEncodingError
from tokenlean.types import Usage, normalize_usage

__all__ = [
    "UNKNOWN_MODEL",
    "UsageRecord",
    "current_task_id",
    "task_scope",
]

#: Model name used when a framework does not say which model answered.
UNKNOWN_MODEL = "unknown"

# Record ids: a random per-process prefix and a counter: unique across processes writing one
# JSONL file, and far cheaper than uuid4() on the per-call path (``benchmarks/overhead.py``).
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)

_CURRENT_TASK: ContextVar[str | None] = ContextVar("tokenlean_current_task", default=None)


def current_task_id() -> str | None:
    """The task id set by the innermost enclosing ``task_scope`` / ``Meter.task``, if any."""
    return _CURRENT_TASK.get()


@contextmanager
def task_scope(task_id: str) -> Iterator[str]:
    """Make ``task_id`` the current task for everything run inside the block.

    Nested scopes override the outer one and restore it on exit, also when the block raises.
    """
    task_id = as_text(task_id, "task_id")
    token = _CURRENT_TASK.set(task_id)
    try:
        yield task_id
    finally:
        _CURRENT_TASK.reset(token)


def as_text(value: object, what: str) -> str:
    """``value`` as ``str``; bytes must be UTF-8 (a clear ``TextEncodingError`` otherwise).

    Model names and task ids end up as JSON and Prometheus label values; accepting undecodable
    bytes would only move the failure to an exporter, far from the cause.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextEncodingError(f"{what} is not valid UTF-8: {bytes(value)[:40]!r}") from exc
    return str(value)


#: The tags / extra of a record that has none: one shared read-only mapping instead of two new
#: dicts per record. A ledger keeps every record, and on a per-call path retained allocations
#: are what costs (measured: a few µs of the metering overhead per LangChain call).
EMPTY_MAPPING: Mapping[str, Any] = MappingProxyType({})


def model_name(model: object) -> str:
    """A record's model name: the text of ``model``, or ``UNKNOWN_MODEL`` when none is known."""
    if type(model) is str and model:
        return model
    return as_text(model, "model") if model else UNKNOWN_MODEL


def _tags(value: Mapping[str, Any] | Iterable[str] | None) -> dict[str, str]:
    """Tags as ``{name: value}``; a plain list of labels becomes ``{label: ""}``."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        return {as_text(k, "tag name"): as_text(v, "tag value") for k, v in value.items()}
    if isinstance(value, (str, bytes)):
        return {as_text(value, "tag"): ""}
    if not isinstance(value, Iterable):
        raise MeteringError(f"tags must be a mapping or a list of labels, got {type(value).__name__}")
    return {as_text(k, "tag"): "" for k in value}


def _opt_float(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MeteringError(f"{what} must be epoch seconds (a number), got {value!r}")
    return float(value)


@dataclass(slots=True)
class UsageRecord:
    """What one LLM call consumed and how fast it was served.

    A record is a value: treat it as read-only once it is in a ledger (summaries are computed
    from it). It is deliberately not a *frozen* dataclass: one is built per metered call, a frozen
    dataclass's ``__init__`` is slower, and metering must stay negligible next to the call it
    measures (``benchmarks/overhead.py``).

    ``cost`` is ``None`` when the model has no price (unknown is not free: summing a silent zero
    would make a task look cheaper than it is). ``cache_hit`` marks an answer served from a cache
    without calling the model: its ``usage`` is what the original call used, its cost is zero.
    Times are epoch seconds (``time.time()``); ``first_token_at`` is only known when streaming.
    """

    model: str
    usage: Usage
    endpoint: str | None = None
    task_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_MAPPING)
    cost: Decimal | None = None
    started_at: float = field(default_factory=time.time)
    first_token_at: float | None = None
    ended_at: float | None = None
    cache_hit: bool = False
    extra: Mapping[str, Any] = field(default_factory=lambda: EMPTY_MAPPING)
    id: str = field(default_factory=lambda: f"{_ID_PREFIX}-{next(_ID_COUNTER)}")

    def __post_init__(self) -> None:
        # Each check is a cheap type test first: adapters build one record per LLM call and
        # the common case (already-clean values) must cost well under a microsecond.
        set_ = object.__setattr__
        if type(self.model) is not str or not self.model:
            set_(self, "model", model_name(self.model))
        if type(self.usage) is not Usage:
            set_(self, "usage", normalize_usage(self.usage))
        if self.endpoint is not None and type(self.endpoint) is not str:
            set_(self, "endpoint", as_text(self.endpoint, "endpoint"))
        if self.task_id is not None and type(self.task_id) is not str:
            set_(self, "task_id", as_text(self.task_id, "task_id"))
        tags = self.tags
        if tags is not EMPTY_MAPPING:
            set_(self, "tags", _tags(tags) if tags else EMPTY_MAPPING)
        if self.extra is not EMPTY_MAPPING and not self.extra:
            set_(self, "extra", EMPTY_MAPPING)
        if self.cost is not None and type(self.cost) is not Decimal:
            try:
                set_(self, "cost", Decimal(str(self.cost)))
            except InvalidOperation as exc:
                raise MeteringError(f"cost must be a number, got {self.cost!r}") from exc
        if type(self.started_at) is not float:
            started = _opt_float(self.started_at, "started_at")
            set_(self, "started_at", time.time() if started is None else started)
        if self.first_token_at is not None and type(self.first_token_at) is not float:
            set_(self, "first_token_at", _opt_float(self.first_token_at, "first_token_at"))
        if self.ended_at is not None and type(self.ended_at) is not float:
            set_(self, "ended_at", _opt_float(self.ended_at, "ended_at"))
        if type(self.cache_hit) is not bool:
            set_(self, "cache_hit", bool(self.cache_hit))

    # -- derived -------------------------------------------------------------------------------
    @property
    def ttft_s(self) -> float | None:
        """Seconds from sending the request to the first streamed token (``None`` unless streamed)."""
        if self.first_token_at is None:
            return None
        return max(0.0, self.first_token_at - self.started_at)

    @property
    def duration_s(self) -> float | None:
        """Wall-clock seconds of the whole call (``None`` until it has ended)."""
        if self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)

    @property
    def generation_s(self) -> float | None:
        """Seconds spent producing output: after the first token when streamed, else the whole call."""
        if self.ended_at is None:
            return None
        start = self.first_token_at if self.first_token_at is not None else self.started_at
        return max(0.0, self.ended_at - start)

    @property
    def output_tokens_per_s(self) -> float | None:
        """Decode speed. ``None`` for cache hits (nothing was generated) and zero-length calls."""
        gen = self.generation_s
        if self.cache_hit or gen is None or gen <= 0 or self.usage.output_tokens == 0:
            return None
        return self.usage.output_tokens / gen

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``cost`` is a decimal *string* so no float rounding creeps in."""
        u = self.usage
        return {
            "id": self.id,
            "model": self.model,
            "endpoint": self.endpoint,
            "task_id": self.task_id,
            "tags": dict(self.tags),
            "usage": {
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "cached_input_tokens": u.cached_input_tokens,
                "cache_write_tokens": u.cache_write_tokens,
                "reasoning_tokens": u.reasoning_tokens,
            },
            "cost": None if self.cost is None else str(self.cost),
            "started_at": self.started_at,
            "first_token_at": self.first_token_at,
            "ended_at": self.ended_at,
            "cache_hit": self.cache_hit,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsageRecord:
        """Inverse of ``to_dict``; raises ``MeteringError`` (or an ``InputError``) on a bad shape."""
        if not isinstance(data, Mapping):
            raise MeteringError(f"a usage record must be a JSON object, got {type(data).__name__}")
        raw = data.get("usage")
        if not isinstance(raw, Mapping):
            raise MeteringError("a usage record needs a 'usage' object")
        try:
            usage = Usage(
                int(raw.get("input_tokens", 0)),
                int(raw.get("output_tokens", 0)),
                int(raw.get("cached_input_tokens", 0)),
                int(raw.get("cache_write_tokens", 0)),
                int(raw.get("reasoning_tokens", 0)),
            )
        except (TypeError, ValueError) as exc:
            raise MeteringError(f"bad usage counts in record: {exc}") from exc
        kwargs: dict[str, Any] = {
            "model": data.get("model") or UNKNOWN_MODEL,
            "usage": usage,
            "endpoint": data.get("endpoint"),
            "task_id": data.get("task_id"),
            "tags": data.get("tags") or {},
            "cost": data.get("cost"),
            "started_at": data.get("started_at"),
            "first_token_at": data.get("first_token_at"),
            "ended_at": data.get("ended_at"),
            "cache_hit": bool(data.get("cache_hit", False)),
            "extra": data.get("extra") or {},
        }
        if data.get("id"):
            kwargs["id"] = str(data["id"])
        return cls(**kwargs)
