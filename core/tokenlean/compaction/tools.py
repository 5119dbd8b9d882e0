"""The agent-facing ``expand_omitted`` function that the framework tool wrappers expose.

LangChain and LlamaIndex each wrap it in their own tool type; the function (its name and
docstring become the tool's name and description the model reads) lives here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tokenlean.errors import TokenleanError

if TYPE_CHECKING:
    from tokenlean.compaction.compactor import Compactor

__all__ = ["expand_omitted_function"]


def expand_omitted_function(compactor: Compactor) -> Callable[[str], str]:
    """``expand_omitted(handle)`` bound to ``compactor``'s omission store.

    Errors (an unknown or expired handle) come back as an ``error: ...`` string rather than an
    exception, so the agent reads what went wrong and can carry on instead of the run failing.
    """

    def expand_omitted(handle: str) -> str:
        """Return the exact text an omission marker like '[… 120 tokens omitted · om-…32 hex… …]' stands for."""
        try:
            return compactor.expand_omitted(handle)
        except TokenleanError as exc:
            return f"error: {exc}"

    return expand_omitted
