"""Option checks shared by the public constructors: a wrong option is a ``ConfigError``, at once.

A plain comparison is not a check: ``nan < 0`` and ``nan >= 1`` are both False, so a NaN ratio
slips through ``if not 0 <= ratio < 1`` written the other way round and poisons every budget it
touches; a list compared with an int raises ``TypeError`` deep inside a call. These helpers
reject booleans, non-numbers, NaN and out-of-range values by name, so the message says which
option was wrong and what it must be.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

from tokenlean.errors import ConfigError

__all__ = ["check_number", "str_items"]


def check_number(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    integer: bool = False,
    optional: bool = False,
) -> None:
    """Raise ``ConfigError`` unless ``value`` is a real number (an integer if asked) in range.

    ``minimum`` / ``maximum`` are inclusive bounds, ``above`` / ``below`` exclusive ones; with
    ``optional`` None passes. Infinity passes when no bound excludes it (``deadline=inf`` is
    simply no deadline).
    """
    if value is None and optional:
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "a whole number" if integer else "a number"
        raise ConfigError(f"{name} must be {what}{' or None' if optional else ''}, got {value!r}")
    x = float(value)
    if math.isnan(x):
        raise ConfigError(f"{name} must be a number, got NaN")
    if (
        (minimum is not None and x < minimum)
        or (maximum is not None and x > maximum)
        or (above is not None and not x > above)
        or (below is not None and not x < below)
    ):
        bounds = [
            f">= {minimum}" if minimum is not None else "",
            f"> {above}" if above is not None else "",
            f"<= {maximum}" if maximum is not None else "",
            f"< {below}" if below is not None else "",
        ]
        raise ConfigError(f"{name} must be {' and '.join(b for b in bounds if b)}, got {value!r}")


def str_items(value: object, name: str) -> tuple[str, ...]:
    """``value`` as a tuple of strings; ``ConfigError`` unless it is a collection of strings."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a list of strings, got {type(value).__name__}")
    items = tuple(value)
    for v in items:  # (a None item is as wrong as any other: no sentinel lookup here)
        if not isinstance(v, str):
            raise ConfigError(f"{name} must hold strings only, got {v!r}")
    return items
