"""Compactor options and arguments of the wrong type or out of range are ``ConfigError`` / ``InputError``.

Before, NaN passed ``target_tokens < 0``, a list reached a comparison (``TypeError``) and a
non-string query reached the tokenizer (``AttributeError``); found by ``reliability_fuzz``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tokenlean.compaction import Compactor, compact_text
from tokenlean.errors import ConfigError, InputError


@pytest.mark.parametrize(
    "options",
    [
        {"ratio": math.nan},
        {"ratio": -0.5},
        {"ratio": math.inf},
        {"ratio": (0.5,)},
        {"target_tokens": math.nan},
        {"target_tokens": [1]},
        {"target_tokens": 10.5},
        {"keep_last_turns": -1},
        {"min_tokens": "8"},
        {"deadline": math.nan},
        {"max_sessions": True},
        {"near_duplicate": math.nan},
        {"novelty": 3},
        {"relevance_reserve": -1},
        {"length_exponent": math.inf},
        {"marker": 5},
        {"marker": "{tokens.nope}"},
        {"kind": "yaml"},
        {"weights": {"bm25": math.nan}},
        {"protect": 5},
        {"protect": ["("]},
        {"exclude_tools": "bash"},
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Compactor(store="memory", mode="lexical", **options)


def test_compact_text_with_a_nan_ratio_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        compact_text("some text", ratio=math.nan, store="memory")


def test_a_query_or_session_that_is_not_a_string_is_an_input_error() -> None:
    c = Compactor(store="memory", mode="lexical")
    with pytest.raises(InputError):
        c.compact("a text to compact", query=object())  # type: ignore[arg-type]
    with pytest.raises(InputError):
        c.compact_documents(["doc"], query=True)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        c.compact([{"role": "user", "content": "x"}], session=["s"])  # type: ignore[arg-type]


def test_compact_documents_refuses_what_is_not_a_list_of_texts() -> None:
    c = Compactor(store="memory", mode="lexical")
    for bad in (None, 5, "one string"):
        with pytest.raises(InputError):
            c.compact_documents(bad)  # type: ignore[arg-type]


def test_a_huge_text_with_too_little_time_left_passes_through_within_the_deadline() -> None:
    """5 MB with a 1 s deadline: segmenting it alone takes longer, so it must not be started.

    Before, the deadline was only checked after segmentation and unit tokenising (~1 s for
    5 MB, longer on a busy machine), so such a call overran its deadline by that much.
    """
    import time

    line = "the deploy script ran migrations on table users and returned error 503\n"
    text = line * (5 * 1024 * 1024 // len(line))
    c = Compactor(store="memory", mode="lexical", deadline=1.0)
    t0 = time.perf_counter()
    out = c.compact(text, query="error 503")
    assert time.perf_counter() - t0 < 0.9
    assert c.stats["pass_throughs"] == 1 and out.text == text
