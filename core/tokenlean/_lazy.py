"""PEP 562 lazy re-exports and deprecated aliases, shared by tokenlean and its integration packages.

Public names live in private modules that may import heavy optional dependencies (torch, faiss,
langchain). Re-exporting them lazily keeps ``import tokenlean`` fast and light while letting users
write ``from tokenlean import SemanticCache``. A renamed public name stays reachable under its old
name for one release: the old name resolves to the same object and warns once, so code written
against the previous release keeps running while its author is told what to write instead.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: ``(module, old name)`` pairs that have already warned in this process.
_WARNED: set[tuple[str, str]] = set()


def warn_renamed(module: str, old: str, new: str) -> None:
    """Warn once per process that ``module.old`` is a deprecated alias of ``new``."""
    if (module, old) in _WARNED:
        return
    _WARNED.add((module, old))
    warnings.warn(
        f"{module}.{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=3,
    )


def lazy_exports(
    package: str,
    names: Mapping[str, str],
    namespace: dict[str, Any],
    public: Iterable[str],
    deprecated: Mapping[str, tuple[str, str]] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package`` resolving ``names`` (name -> module).

    ``deprecated`` maps an old name to ``(module, current name)``: the old name returns the
    current object after one :class:`DeprecationWarning`. It is never cached in ``namespace``
    (the warning must fire on first use wherever that happens) and is not listed by ``dir()``.
    """
    old_names = dict(deprecated or {})

    def __getattr__(name: str) -> Any:
        if name in old_names:
            module_name, new = old_names[name]
            warn_renamed(package, name, f"{module_name}.{new}")
            return getattr(importlib.import_module(module_name), new)
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


def renamed(module: str, aliases: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` serving ``aliases`` (old name -> current name in ``namespace``)."""

    def __getattr__(name: str) -> Any:
        new = aliases.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_renamed(module, name, f"{module}.{new}")
        return namespace[new]

    return __getattr__
