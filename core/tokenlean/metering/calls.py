"""Recording one framework model call: the part the LangChain and LlamaIndex adapters share.

Both adapters see a finished call with a provider usage block that may be missing (streaming
without a usage chunk) or malformed. Neither case may break the user's chain, and neither may be
priced as if it were free, so the call is still recorded, with zero tokens, ``cost=None`` and a
marker in ``extra`` (``usage_missing`` / ``usage_error``) that reports can count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from tokenlean.errors import TokenleanError
from tokenlean.metering.ledger import Meter
from tokenlean.metering.records import UNKNOWN_MODEL, UsageRecord
from tokenlean.types import Usage, normalize_usage

__all__ = ["record_call"]

log = logging.getLogger("tokenlean.metering")


def record_call(
    meter: Meter,
    *,
    raw_usage: Any,
    model: str | None,
    endpoint: str | None,
    task_id: str | None,
    started_at: float,
    first_token_at: float | None,
    ended_at: float,
    cache_hit: bool,
    record_id: str,
    tags: Mapping[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    warn_missing: Callable[[str | None], None] | None = None,
    logger: logging.Logger = log,
    call_label: str | None = None,
) -> UsageRecord:
    """Price and record one call whose usage block ``raw_usage`` came straight from a framework.

    A call without usage calls ``warn_missing(model)`` (adapters warn once per model); a usage
    block ``normalize_usage`` rejects is logged to ``logger`` (the adapter's), naming the call
    ``call_label`` (default ``model call <record_id>``). Either way the call is recorded unpriced, into
    the meter's ledger directly, because ``Meter.record`` would price zero tokens as a real cost.
    """
    extra = {} if extra is None else extra
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
        return meter.record(
            model=model,
            usage=usage,
            endpoint=endpoint,
            task_id=task_id,
            tags=tags,
            started_at=started_at,
            first_token_at=first_token_at,
            ended_at=ended_at,
            cache_hit=cache_hit,
            extra=extra,
            record_id=record_id,
        )
    rec = UsageRecord(
        model=model or UNKNOWN_MODEL,
        usage=Usage(),
        endpoint=endpoint,
        task_id=task_id,
        tags={**meter.tags, **(tags or {})},
        cost=None,
        started_at=started_at,
        first_token_at=first_token_at,
        ended_at=ended_at,
        cache_hit=cache_hit,
        extra=extra,
        id=record_id,
    )
    return meter.ledger.record(rec)
