"""The LlamaIndex namespace packages' public names are pinned and all resolve."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

PINNED = {
    "llama_index.callbacks.tokenlean": ["TokenleanEventHandler", "instrument", "uninstrument"],
    "llama_index.postprocessor.tokenlean": [
        "TokenleanCompactionPostprocessor",
        "TokenleanEmbedding",
        "TokenleanPromptLayoutPostprocessor",
        "expand_omitted_tool",
    ],
    "llama_index.memory.tokenlean": ["TokenleanCompactedHistoryBlock"],
    "llama_index.llms.tokenlean": ["TokenleanCachedLLM", "TokenleanRouterLLM", "TokenleanRoutingEvent"],
}


@pytest.mark.parametrize("module", sorted(PINNED))
def test_public_names_are_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__all__ == PINNED[module]
    for name in mod.__all__:
        assert getattr(mod, name) is not None


def test_namespace_folders_have_no_init() -> None:
    # LlamaIndex integrations share the `llama_index` namespace: an __init__.py in `llama_index/` or a
    # type folder would shadow every other integration installed beside ours.
    spec = importlib.util.find_spec("llama_index.postprocessor.tokenlean")
    assert spec is not None and spec.origin is not None
    root = Path(spec.origin).parents[2]  # .../llama_index
    assert (root.parent / "pyproject.toml").exists(), "expected the editable source tree"
    assert not (root / "__init__.py").exists()
    for kind in ("postprocessor", "llms", "callbacks", "memory"):
        assert not (root / kind / "__init__.py").exists()
        assert (root / kind / "tokenlean" / "__init__.py").exists()
