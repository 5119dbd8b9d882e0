"""Read the prompt-cache hit rate a provider actually realised back from usage.

A layout change is only worth what the provider then bills as cached. Providers report it in
different places (OpenAI ``prompt_tokens_details.cached_tokens``, Anthropic
``cache_read_input_tokens`` / ``cache_creation_input_tokens``, LangChain
``input_token_details.cache_read``); ``tokenlean.types.normalize_usage`` reads them all into
one ``Usage`` and ``realised_hit_rate`` sums them.

``llama_cpp.server`` does not put its prefix reuse into the usage block; it logs it
("Llama.generate: N prefix-match hit, remaining M prompt tokens to eval"). For a local
server started with a log file, ``read_llamacpp_prefix_reuse`` reads those lines so that the
realised reuse can be measured there too; pass the numbers as ``cached_tokens``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenlean.errors import UsageFormatError
from tokenlean.types import Response, Usage, normalize_usage

__all__ = ["HitRate", "PrefixReuse", "read_llamacpp_prefix_reuse", "realised_hit_rate", "usage_of"]


@dataclass(frozen=True, slots=True)
class HitRate:
    """Cached prompt tokens over a set of calls.

    ``rate``: cached / all input tokens. ``request_hit_share``: calls with any cached token.
    """

    requests: int
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    requests_with_hit: int

    @property
    def rate(self) -> float:
        return self.cached_tokens / self.input_tokens if self.input_tokens else 0.0

    @property
    def request_hit_share(self) -> float:
        return self.requests_with_hit / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "requests_with_hit": self.requests_with_hit,
            "rate": round(self.rate, 4),
        }


def usage_of(item: object) -> Usage:
    """A ``Usage`` from a usage block, a response body, a ``Response``, or a LangChain message."""
    if isinstance(item, Usage):
        return item
    if isinstance(item, Response):
        if item.usage is None:
            raise UsageFormatError("response carries no usage")
        return item.usage
    if isinstance(item, Mapping):
        if "usage" in item and isinstance(item["usage"], Mapping):
            return normalize_usage(item["usage"])
        return normalize_usage(item)
    meta = getattr(item, "usage_metadata", None)  # LangChain AIMessage
    if meta is not None:
        return normalize_usage(meta)
    usage = getattr(item, "usage", None)  # SDK response objects
    if usage is not None:
        return normalize_usage(usage)
    return normalize_usage(item)


def realised_hit_rate(usages: Iterable[object], *, cached_tokens: Sequence[int] | None = None) -> HitRate:
    """Sum the cached input tokens of ``usages`` (any shape ``usage_of`` reads).

    ``cached_tokens``: per-call cached counts from elsewhere (a llama.cpp log) for servers that
    do not report them; each replaces the reported count of its call, capped at its input tokens.
    """
    items = [usage_of(u) for u in usages]
    if cached_tokens is not None and len(cached_tokens) != len(items):
        raise UsageFormatError(f"{len(cached_tokens)} cached counts for {len(items)} usages")
    inp = cached = write = hits = 0
    for i, u in enumerate(items):
        c = u.cached_input_tokens if cached_tokens is None else min(int(cached_tokens[i]), u.input_tokens)
        inp += u.input_tokens
        cached += c
        write += u.cache_write_tokens
        hits += c > 0
    return HitRate(len(items), inp, cached, write, hits)


# -- llama.cpp server log ------------------------------------------------------------------------------
_HIT = re.compile(r"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")
_FULL = re.compile(r"Llama\.generate: full prompt already cached")
_EVAL = re.compile(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens")


@dataclass(frozen=True, slots=True)
class PrefixReuse:
    """One completion of a llama.cpp server: prompt tokens reused from its KV cache, and evaluated."""

    reused_tokens: int
    evaluated_tokens: int
    full_hit: bool = False

    def cached_of(self, prompt_tokens: int) -> int:
        """Reused tokens of a call with ``prompt_tokens`` (a full hit reuses all of them)."""
        return prompt_tokens if self.full_hit else min(self.reused_tokens, prompt_tokens)


def read_llamacpp_prefix_reuse(log_path: str | Path, *, offset: int = 0) -> tuple[list[PrefixReuse], int]:
    """Completions logged by a verbose ``llama_cpp.server`` from byte ``offset`` on.

    Returns the completions in order and the offset to pass next time. A completion ends with
    its "prompt eval time" line; a "prefix-match hit" line before it gives the reused tokens
    (none: nothing was reused). Remember the offset before your calls, read after them.
    """
    path = Path(log_path)
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1  # only complete lines; a partial one is read next time
    text = data[:end].decode("utf-8", errors="replace")
    out: list[PrefixReuse] = []
    reused: int | None = None
    full = False
    pos = done = 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        m = _HIT.search(line)
        if m:
            reused = int(m.group(1))
            continue
        if _FULL.search(line):
            full = True
            continue
        m = _EVAL.search(line)
        if m:
            out.append(PrefixReuse(reused or 0, int(m.group(1)), full))
            reused, full = None, False
            done = pos
    # Resume after the last finished call: a call still running is read whole next time.
    return out, offset + len(text[:done].encode("utf-8"))
