"""Layout entry points: malformed layouts, options and requests are typed errors, never a crash."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tokenlean.errors import ConfigError, LayoutError, MessageFormatError
from tokenlean.layout import PromptLayout, analyze, plan_cache_markers, reorder

BODY = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize(
    "fields", [{"few_shot_order": ({"a": 1},)}, {"few_shot_order": "ab"}, {"stable_lines": ["x", 1]}]
)
def test_a_layout_of_the_wrong_shape_is_a_layout_error(fields: dict[str, Any]) -> None:
    with pytest.raises(LayoutError):
        PromptLayout(**fields)


def test_reorder_refuses_a_layout_that_is_not_one() -> None:
    with pytest.raises(LayoutError):
        reorder(BODY, 5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_breakpoints": ["x"]},  # ``1 <= list`` raised TypeError
        {"max_breakpoints": math.nan},
        {"block_size": math.nan},
        {"block_size": 0, "provider": "vllm"},
        {"provider": ["anthropic"]},
        {"layout": "stable"},
    ],
)
def test_plan_cache_markers_options_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        plan_cache_markers(BODY, **kwargs)


def test_analyze_and_fit_refuse_bad_streams_and_options() -> None:
    with pytest.raises(MessageFormatError):
        analyze(None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        analyze([BODY, BODY], window=math.nan)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        PromptLayout.fit([BODY, BODY], min_share=math.nan)
    with pytest.raises(MessageFormatError):
        PromptLayout.fit(5)  # type: ignore[arg-type]


def test_content_parts_that_are_not_json_are_a_message_format_error() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": b"\x89PNG"}]}]}
    with pytest.raises(MessageFormatError):
        reorder(body)
    with pytest.raises(MessageFormatError):
        plan_cache_markers(body)


def test_openai_cache_key_of_a_request_with_lone_surrogates() -> None:
    body = {
        "messages": [{"role": "system", "content": "\ud800 rules"}, {"role": "user", "content": "\udfff?"}]
    }
    plan = plan_cache_markers(body, "openai")  # was UnicodeEncodeError hashing the stable prefix
    assert plan.params["prompt_cache_key"].startswith("tl-")
