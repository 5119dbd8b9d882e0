"""What a LangChain chat model is, for the cache key: class, endpoint, name and identifying settings.

LangChain's ``llm_string`` already carries the serialised model and every call argument; this adds
what it can miss for models that do not serialise (the endpoint) and names settings that cannot be
written down, so that such a model's calls are not cached rather than keyed without them.
"""

from __future__ import annotations

from typing import Any

from tokenlean.cache.identity import ModelIdentity, describe_fields, find_temperature, qualified_name

__all__ = ["model_identity"]

#: Attributes by which chat model classes name the server they call.
ENDPOINT_ATTRS = (
    "openai_api_base",
    "base_url",
    "api_base",
    "azure_endpoint",
    "endpoint",
    "endpoint_url",
    "anthropic_api_url",
    "host",
    "url",
)


def model_identity(model: Any) -> ModelIdentity:
    """Name, temperature and key material of a LangChain chat model (``RunnableBinding`` s unwrapped)."""
    bound: dict[str, Any] = {}
    while hasattr(model, "bound") and isinstance(getattr(model, "kwargs", None), dict):
        bound = {**model.kwargs, **bound}
        model = model.bound
    name = next(
        (v for a in ("model_name", "model", "model_id") if isinstance(v := getattr(model, a, None), str)),
        type(model).__name__,
    )
    endpoint = {a: v for a in ENDPOINT_ATTRS if isinstance(v := getattr(model, a, None), str) and v}
    try:
        identifying = dict(getattr(model, "_identifying_params", {}) or {})
    except Exception:
        identifying = {}
    settings, unknown = describe_fields({**identifying, **bound})
    try:
        ls = model._get_ls_params()
    except Exception:
        ls = {}
    provider = ls.get("ls_provider") if isinstance(ls, dict) else None
    temperature = find_temperature(
        {"temperature": ls.get("ls_temperature")} if isinstance(ls, dict) else None, identifying, bound
    )
    config = {
        "class": qualified_name(model),
        "provider": provider,
        "endpoint": endpoint,
        "settings": settings,
    }
    return ModelIdentity(model=name, config=config, temperature=temperature, unknown=tuple(unknown))
