"""langchain_tokenlean's public names are pinned and all resolve."""

from __future__ import annotations

import subprocess
import sys

import langchain_tokenlean


def test_public_names_are_pinned() -> None:
    assert langchain_tokenlean.__all__ == [
        "ChatTokenleanRouter", "TokenleanCache", "TokenleanCacheMiddleware", "TokenleanCallbackHandler",
        "TokenleanCompactionEdit", "TokenleanCompactionMiddleware", "TokenleanPromptLayoutMiddleware",
        "TokenleanRoutingMiddleware", "TrackedTask",
        "compact_messages", "expand_omitted_tool", "layout_messages", "prompt_layout", "track_task",
    ]  # fmt: skip
    for name in langchain_tokenlean.__all__:
        assert getattr(langchain_tokenlean, name) is not None


def test_import_needs_only_langchain_core() -> None:
    # The agent middleware needs the `agents` extra (langchain); importing the package must not.
    code = "import sys, langchain_tokenlean; print('langchain.agents' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
