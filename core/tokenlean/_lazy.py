"""PEP 562 lazy re-exports, shared by tokenlean and its integration packages.

Public names live in private modules that may import heavy optional dependencies (torch, faiss,
langchain). Re-exporting them lazily keeps ``import tokenlean`` fast and light while letting users
write ``from tokenlean import SemanticCache``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, names: Mapping[str, str], namespace: dict[str, Any], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package`` resolving ``names`` (name -> module)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups skip this function
        return value

    exported = set(public)

    def __dir__() -> list[str]:
        return sorted(set(namespace) | exported)

    return __getattr__, __dir__
