"""Lever events: what a lever just did, for whoever observes the process (OpenTelemetry first).

A lever (cache lookup, compaction, layout, routing) calls ``emit(name, attributes)`` once per
decision. Observers ``subscribe``; ``tokenlean.metering.otel`` is the one tokenlean ships, turning
each event into an OTel span event. Levers check ``enabled()`` first, so with nobody listening an
event costs one attribute read and builds no attribute dict: the levers run on every request and
most processes have no observer.

Event names and attribute keys are the ones documented in ``docs/observability.md`` (one table
with the span attributes and the metrics), namespaced ``tokenlean.*``. Attribute values are
OTel-compatible scalars (str, bool, int, float) or tuples of one such type.

An observer that raises is logged and ignored: an observer must never break the lever, and the
lever's result never depends on whether anybody watched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "CACHE_LOOKUP",
    "COMPACTION",
    "LAYOUT",
    "ROUTE",
    "Listener",
    "emit",
    "enabled",
    "subscribe",
]

log = logging.getLogger("tokenlean.events")

#: A semantic-cache lookup: hit or miss, the tier that answered, the similarity, why it missed.
CACHE_LOOKUP = "tokenlean.cache.lookup"
#: A compaction: tokens before and after, units dropped.
COMPACTION = "tokenlean.compaction"
#: A prompt re-laid stable-first: prompt-cache breakers found and moved, stable prefix before/after.
LAYOUT = "tokenlean.layout"
#: A routing decision: the target, the policy that chose it and why.
ROUTE = "tokenlean.route"

Listener = Callable[[str, Mapping[str, Any]], None]

_lock = threading.Lock()
# A tuple replaced on (un)subscribe, never mutated: emit() reads it without the lock.
_listeners: tuple[Listener, ...] = ()


def enabled() -> bool:
    """Whether anybody listens (levers skip building the event when nobody does)."""
    return bool(_listeners)


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call ``listener(name, attributes)`` on every event; returns the function that unsubscribes.

    Subscribing the same listener twice delivers each event once.
    """
    global _listeners
    with _lock:
        if listener not in _listeners:
            _listeners = (*_listeners, listener)

    def unsubscribe() -> None:
        global _listeners
        with _lock:
            _listeners = tuple(x for x in _listeners if x is not listener)

    return unsubscribe


def emit(name: str, attributes: Mapping[str, Any]) -> None:
    """Hand one event to every listener, in the caller's thread and context.

    The caller's context matters: the OTel observer attaches the event to the span current
    where the lever ran.
    """
    for listener in _listeners:
        try:
            listener(name, attributes)
        except Exception:
            log.exception("tokenlean: event listener %r failed on %s (ignored)", listener, name)
