"""Recording one framework model call: the part the LangChain and LlamaIndex adapters share.

Both adapters see a finished call with a provider usage block that may be missing (streaming
without a usage chunk) or malformed. Neither case may break the user's chain, and neither may be
priced as if it were free, so the call is still recorded, with zero tokens, ``cost=None`` and a
marker in ``extra`` (``usage_missing`` / ``usage_error``) that reports can count.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from tokenlean.errors import TokenleanError
from tokenlean.metering.ledger import Meter
from tokenlean.metering.records import UNKNOWN_MODEL, UsageRecord
from tokenlean.types import Usage, normalize_usage

__all__ = ["CACHE_HIT_FLAG", "MissingUsageWarner", "PendingCall", "record_call"]

log = logging.getLogger("tokenlean.metering")

#: Flag a cache adapter sets in a response's metadata (``generation_info`` / ``response_metadata``
#: in LangChain, ``additional_kwargs`` / ``raw`` in LlamaIndex) so the metering adapter records a hit.
CACHE_HIT_FLAG = "tokenlean_cache_hit"


@dataclass(slots=True)
class PendingCall:
    """What an adapter knows about a model call between its start and end events."""

    started_at: float
    task_id: str | None
    model: str | None
    endpoint: str | None
    first_token_at: float | None = None
    #: What the adapter kept from the start event to resolve lazily at the end (e.g. the
    #: requested model, needed only when the response does not name one).
    context: Any = None


class MissingUsageWarner:
    """Warns once per model that its calls report no token usage (``warn_missing`` of a handler).

    A streaming setup without usage chunks leaves *every* call unmetered; one warning per model
    says so without flooding the log. ``hint`` names the likely cause for the framework.
    """

    def __init__(self, logger: logging.Logger, hint: str) -> None:
        self._logger = logger
        self._hint = hint
        self._lock = threading.Lock()
        self._warned: set[str | None] = set()

    def __call__(self, model: str | None) -> None:
        with self._lock:
            first = model not in self._warned
            self._warned.add(model)
        if first:
            self._logger.warning(
                "tokenlean: calls to model %r report no token usage (%s); they are recorded with zero "
                "tokens and no cost",
                model,
                self._hint,
            )


def record_call(
    meter: Meter,
    pending: PendingCall,
    *,
    raw_usage: Any,
    model: str | None,
    ended_at: float,
    cache_hit: bool,
    record_id: str | UUID,
    tags: Mapping[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    warn_missing: Callable[[str | None], None] | None = None,
    logger: logging.Logger = log,
    call_label: str | None = None,
) -> UsageRecord | None:
    """Price and record the call ``pending`` whose usage block ``raw_usage`` came from a framework.

    ``model`` is the model the response names (``pending.model``, the requested one, if None).
    A readable usage block is checked now and recorded with ``Meter.record_later`` (built at the
    ledger's next read; the record is returned only if it was stored at once). ``record_id``
    may be the framework's run ``UUID``: turning it into text is deferred too.

    A call without usage calls ``warn_missing(model)`` (adapters warn once per model); a usage
    block ``normalize_usage`` rejects is logged to ``logger`` (the adapter's), naming the call
    ``call_label`` (default ``model call <record_id>``). Either way the call is recorded unpriced, into
    the meter's ledger directly, because ``Meter.record`` would price zero tokens as a real cost.
    """
    extra = {} if extra is None else extra
    model = model or pending.model
    usage: Usage | None = None
    if raw_usage is None:
        if warn_missing is not None:
            warn_missing(model)
        extra["usage_missing"] = True
    else:
        try:
            usage = normalize_usage(raw_usage)
        except TokenleanError as exc:
            logger.warning(
                "tokenlean: unreadable usage from %s (%s); recorded unpriced",
                call_label or f"model call {record_id}",
                exc,
            )
            extra["usage_error"] = str(exc)
    if usage is not None:
        return meter.record_later(
            model=model,
            usage=usage,
            endpoint=pending.endpoint,
            task_id=pending.task_id,
            tags=tags,
            started_at=pending.started_at,
            first_token_at=pending.first_token_at,
            ended_at=ended_at,
            cache_hit=cache_hit,
            extra=extra,
            record_id=record_id,
        )
    rec = UsageRecord(
        model=model or UNKNOWN_MODEL,
        usage=Usage(),
        endpoint=pending.endpoint,
        task_id=pending.task_id,
        tags={**meter.tags, **(tags or {})},
        cost=None,
        started_at=pending.started_at,
        first_token_at=pending.first_token_at,
        ended_at=ended_at,
        cache_hit=cache_hit,
        extra=extra,
        id=str(record_id),
    )
    return meter.ledger.record(rec)
