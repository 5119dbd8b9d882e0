"""The README's quick starts, executed exactly as printed against the session's local model server.

The code blocks are read from README.md (so an edit there is what gets tested) and run with
``TOKENLEAN_BASE_URL`` pointing at the test server, the way a reader who ran `tokenlean serve-local`
would run them. Each must do what its comment says: the repeated question is served from the cache.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.integration


def quick_start(title: str) -> str:
    """The first python block under the ``## Quick start: {title}`` heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"## Quick start: {title}", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no python block under 'Quick start: {title}'"
    return match.group(1)


def _run(code: str, monkeypatch: pytest.MonkeyPatch, base_url: str) -> dict[str, Any]:
    monkeypatch.setenv("TOKENLEAN_BASE_URL", base_url)
    namespace: dict[str, Any] = {"__name__": "readme"}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def test_langchain_quick_start(
    local_llm: Any, embedder: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("langchain.agents")
    ns = _run(quick_start("LangChain"), monkeypatch, local_llm.base_url)
    served = ns["again"]["messages"][-1].response_metadata.get("tokenlean_cache")
    assert served is not None and served["hit"], "the repeated question is answered from the cache"
    assert ns["again"]["messages"][-1].content == ns["first"]["messages"][-1].content
    summary = ns["task"].summary()
    assert summary.calls >= 1
    out = capsys.readouterr().out
    assert "'hit': True" in out


def test_llamaindex_quick_start(
    local_llm: Any, embedder: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = _run(quick_start("LlamaIndex"), monkeypatch, local_llm.base_url)
    assert ns["llm"].last_result is not None and ns["llm"].last_result.hit
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("True")
