"""Fixtures of the LangChain adapter tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def local_chat_model(local_llm: Any) -> Callable[..., Any]:
    """``local_chat_model(**overrides)``: a real ``ChatOpenAI`` on the session's llama.cpp server.

    Deterministic (temperature 0) and short (16 tokens: the tiny model only needs to answer, not
    to be right), so integration tests stay fast; keywords override or add ``ChatOpenAI`` options.
    """
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    def make(**overrides: Any) -> Any:
        options: dict[str, Any] = {
            "base_url": local_llm.base_url,
            "api_key": "local",
            "model": local_llm.model,
            "temperature": 0,
            "extra_body": {"max_tokens": 16},  # llama.cpp ignores max_completion_tokens
            **overrides,
        }
        return ChatOpenAI(**options)

    return make
