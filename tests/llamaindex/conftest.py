"""Fixtures of the LlamaIndex adapter tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def local_openai_like(local_llm: Any) -> Callable[..., Any]:
    """``local_openai_like(**overrides)``: a real ``OpenAILike`` chat LLM on the local llama.cpp server.

    Deterministic (temperature 0) and short (16 tokens) so integration tests stay fast; keywords
    override or add ``OpenAILike`` options; ``None`` leaves an option at the library's default.
    """
    openai_like = pytest.importorskip("llama_index.llms.openai_like")

    def make(**overrides: Any) -> Any:
        options: dict[str, Any] = {
            "model": local_llm.model,
            "api_base": local_llm.base_url,
            "api_key": "local",
            "is_chat_model": True,
            "max_tokens": 16,
            "temperature": 0,
            **overrides,
        }
        return openai_like.OpenAILike(**{k: v for k, v in options.items() if v is not None})

    return make
