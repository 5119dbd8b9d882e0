"""``tokenlean serve``: an OpenAI-compatible gateway that applies every lever to any client.

Needs the ``gateway`` extra (Starlette, uvicorn, pydantic-settings). Names are imported lazily so
that ``import tokenlean.gateway`` alone loads nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenlean._lazy import lazy_exports

if TYPE_CHECKING:
    from tokenlean.gateway.app import Gateway, create_app
    from tokenlean.gateway.config import GatewayConfig, load_config
    from tokenlean.gateway.keys import hash_key, new_key

__all__ = ["Gateway", "GatewayConfig", "create_app", "hash_key", "load_config", "new_key"]

_LAZY = {
    "Gateway": "tokenlean.gateway.app",
    "create_app": "tokenlean.gateway.app",
    "GatewayConfig": "tokenlean.gateway.config",
    "load_config": "tokenlean.gateway.config",
    "hash_key": "tokenlean.gateway.keys",
    "new_key": "tokenlean.gateway.keys",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)
