"""Token counting: exact tiktoken counts offline, chat overhead, clear errors."""

from __future__ import annotations

import pytest

from tokenlean.errors import TextEncodingError
from tokenlean.tokens import count_messages, count_tokens, encoding_for_model, get_counter


def test_model_families_map_to_encodings() -> None:
    assert encoding_for_model("gpt-4o-mini")[0] == "o200k_base"
    assert encoding_for_model("gpt-5")[0] == "o200k_base"
    assert encoding_for_model("gpt-4.1-nano")[0] == "o200k_base"
    assert encoding_for_model("gpt-3.5-turbo")[0] == "cl100k_base"
    _name, exact = encoding_for_model("claude-sonnet-4-5")
    assert not exact


def test_counts_are_exact_tiktoken() -> None:
    counter = get_counter("gpt-4o")
    assert counter.exact and counter.source != "estimate"
    assert count_tokens("hello world", "gpt-4o") == 2
    assert count_tokens("", "gpt-4o") == 0
    assert counter.encode("hello world") == counter.encode(b"hello world")


def test_chat_overhead_follows_openai_rule() -> None:
    msgs = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi"}]
    content = count_tokens("You are helpful.", "gpt-4o") + count_tokens("system", "gpt-4o")
    content += count_tokens("Hi", "gpt-4o") + count_tokens("user", "gpt-4o")
    assert count_messages(msgs, "gpt-4o") == content + 2 * 3 + 3


def test_non_utf8_bytes_are_typed_error() -> None:
    with pytest.raises(TextEncodingError):
        count_tokens(b"\xff\xfe\xfa", "gpt-4o")


def test_one_megabyte_counts_without_a_network() -> None:
    text = "The quick brown fox jumps over the lazy dog 42 times. " * 19_000
    counter = get_counter("gpt-4o")
    n = counter.count(text)
    assert n == len(counter.encode(text))
    assert 150_000 < n < 300_000  # ~11 tokens per 54-char sentence


def test_last_resort_estimate_over_counts_o200k_by_a_bounded_share() -> None:
    # The estimator is only a fallback, but a fallback that is far off would mislead every budget;
    # over-counting is the safe side (a budget is then kept, not exceeded), under-counting is not.
    from pathlib import Path

    from tokenlean.tokens import _Estimator

    root = Path(__file__).resolve().parents[2]
    exact = get_counter("gpt-4o")
    for text in ((root / "README.md").read_text(), (root / "core/tokenlean/tokens.py").read_text()):
        estimate, truth = len(_Estimator().encode_ordinary(text)), exact.count(text)
        assert truth <= estimate <= 1.5 * truth, (estimate, truth)
