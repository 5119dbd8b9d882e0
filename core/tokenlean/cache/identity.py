"""A model object's settings as cache-key material: everything that can change an answer, or a refusal.

Framework adapters (LangChain chat models, LlamaIndex LLMs) describe a model by its pydantic
fields. A cached answer may only be served to a request that the same model, at the same endpoint,
with the same settings would answer: so every field goes into the key except the ones known not to
change the answer (timeouts, retries, clients, callbacks, secrets). A field whose value cannot be
written down faithfully (an arbitrary object, a lambda) is *not understood*: the adapter then does
not cache that call at all, rather than share a key between models that differ in it.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NOT_OUTPUT_FIELDS",
    "UNDESCRIBABLE",
    "ModelIdentity",
    "describe_fields",
    "describe_value",
    "find_temperature",
    "qualified_name",
    "unkeyable",
    "warn_once",
]

log = logging.getLogger("tokenlean.cache")

#: Settings that never change what a model answers (transport, bookkeeping, secrets, callbacks).
NOT_OUTPUT_FIELDS = frozenset(
    {
        "api_key",
        "openai_api_key",
        "anthropic_api_key",
        "async_client",
        "async_http_client",
        "cache",
        "callback_manager",
        "callbacks",
        "client",
        "custom_get_token_ids",
        "default_request_timeout",
        "disable_streaming",
        "http_async_client",
        "http_client",
        "include_response_headers",
        "max_retries",
        "metadata",
        "openai_organization",
        "openai_proxy",
        "organization",
        "rate_limiter",
        "request_timeout",
        "reuse_client",
        "root_async_client",
        "root_client",
        "stream_usage",
        "streaming",
        "tags",
        "tiktoken_model_name",
        "timeout",
        "verbose",
    }
)

#: What ``describe_value`` returns for a value it cannot write down exactly.
UNDESCRIBABLE: Any = object()
_MISSING = UNDESCRIBABLE


def describe_value(value: Any) -> Any:
    """``value`` as JSON-able key material, or ``UNDESCRIBABLE`` when it cannot be written down exactly."""
    if isinstance(value, enum.Enum):
        return describe_value(value.value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (bytes, bytearray)):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if type(value).__name__ in ("SecretStr", "SecretBytes"):
        return None  # a secret: who pays, not what is answered
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            d = describe_value(v)
            if d is _MISSING:
                return _MISSING
            out[str(k)] = d
        return out
    if isinstance(value, (list, tuple, frozenset, set)):
        items = [describe_value(v) for v in value]
        if any(d is _MISSING for d in items):
            return _MISSING
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        try:  # a pydantic class (structured output schema)
            return {"schema": value.model_json_schema()}
        except Exception:
            return _MISSING
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return {"type": type(value).__qualname__, "value": describe_value(dump(mode="json"))}
        except Exception:
            return _MISSING
    if callable(value):
        # A named module-level function is the same code in every process; a lambda, closure or
        # bound method of some object may not be.
        qual = getattr(value, "__qualname__", "")
        mod = getattr(value, "__module__", None)
        if mod and qual and "<" not in qual and "." not in qual:
            return {"function": f"{mod}.{qual}"}
        return _MISSING
    return _MISSING


def describe_fields(
    values: Mapping[str, Any], *, ignore: Collection[str] = NOT_OUTPUT_FIELDS
) -> tuple[dict[str, Any], list[str]]:
    """The key material of ``values`` (name -> setting) and the names that could not be described."""
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for name in sorted(values):
        if name in ignore or name.startswith("_"):
            continue
        d = describe_value(values[name])
        if d is _MISSING:
            unknown.append(name)
        else:
            out[name] = d
    return out, unknown


def find_temperature(*settings: Mapping[str, Any] | None) -> Any:
    """The temperature a call is sent with: the last explicit one among ``settings`` (later wins).

    Looks at ``temperature`` itself and inside the usual pass-through dicts (``model_kwargs``,
    ``extra_body``, ``additional_kwargs``). None means unset: the provider's default.
    """
    found: Any = None
    for s in settings:
        if not s:
            continue
        for nest in ("model_kwargs", "additional_kwargs", "extra_body"):
            inner = s.get(nest)
            if isinstance(inner, Mapping) and inner.get("temperature") is not None:
                found = inner["temperature"]
        if s.get("temperature") is not None:
            found = s["temperature"]
    return found


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """What a cache key needs to know about the model that answers.

    ``model``: its name (what ``SemanticCache(assume_deterministic={...})`` matches);
    ``config``: provider, class, endpoint and settings, JSON-able; ``temperature``: as sent (None:
    unset); ``unknown``: settings that could not be written down (the call is then not cached).
    """

    model: str
    config: Mapping[str, Any] = field(default_factory=dict)
    temperature: Any = None
    unknown: tuple[str, ...] = ()

    def params(self) -> dict[str, Any]:
        """Request params for the core cache: the identity under one key, the temperature apart."""
        out: dict[str, Any] = {"model_identity": dict(self.config)}
        if self.temperature is not None:
            out["temperature"] = self.temperature
        return out


_warned: set[str] = set()


def warn_once(key: str, message: str, *args: object, logger: logging.Logger = log) -> None:
    """Log ``message`` at warning level the first time ``key`` is seen in this process."""
    if key in _warned:
        return
    _warned.add(key)
    logger.warning(message, *args)


def unkeyable(unknown: Collection[str], *, adapter: str, logger: logging.Logger = log) -> bool:
    """True (and a warning, once per set of settings) when a call has settings the key cannot hold.

    Adapters then pass the call through uncached: sharing a key between models that differ in a
    setting nobody can write down would serve one model's answer to the other.
    """
    if not unknown:
        return False
    names = sorted(set(unknown))
    warn_once(
        f"{adapter}:{names}",
        "%s: not caching calls with settings the cache cannot key on: %s",
        adapter,
        ", ".join(names),
        logger=logger,
    )
    return True


def qualified_name(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"
