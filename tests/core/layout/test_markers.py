"""Provider cache-marker plans: limits, minimums and where the markers go."""

from __future__ import annotations

import pytest
from layout_corpus import planted_stream

from tokenlean.errors import ConfigError
from tokenlean.layout import anthropic_min_cacheable_tokens, plan_cache_markers, reorder
from tokenlean.tokens import count_tokens

LONG = "\n".join(
    f"Rule {i}: answer politely and cite the policy section {i} when relevant." for i in range(150)
)


def _request(system: str = LONG, turns: int = 3, tools: bool = True) -> dict:
    msgs = [{"role": "system", "content": system}]
    for i in range(turns):
        msgs += [
            {"role": "user", "content": f"question {i} " + "detail " * 200},
            {"role": "assistant", "content": f"answer {i}"},
        ]
    msgs.append({"role": "user", "content": "the new question"})
    body: dict = {"model": "claude-sonnet-4-5", "messages": msgs}
    if tools:
        body["tools"] = [
            {"type": "function", "function": {"name": f"t{i}", "description": "x " * 400}} for i in range(3)
        ]
    return body


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        ("claude-sonnet-4-5-20250929", 1024),
        ("claude-opus-4-1", 1024),
        ("claude-3-7-sonnet-latest", 1024),
        ("claude-opus-4-5-20251101", 4096),
        ("anthropic/claude-opus-4.6", 4096),
        ("claude-haiku-4-5", 4096),
        ("claude-3-5-haiku-20241022", 2048),
        ("claude-3-haiku-20240307", 2048),
        ("claude-sonnet-4-6", 2048),
        (None, 1024),
    ],
)
def test_anthropic_minimums(model: str | None, minimum: int) -> None:
    assert anthropic_min_cacheable_tokens(model) == minimum


def test_anthropic_breakpoints_at_section_ends_at_most_four() -> None:
    plan = plan_cache_markers(_request(), "anthropic")
    assert 1 <= len(plan.breakpoints) <= 4
    assert [b.where for b in plan.breakpoints] == ["tools", "system", "request"]
    assert all(b.prefix_tokens >= plan.min_cacheable_tokens for b in plan.breakpoints)
    prefixes = [b.prefix_tokens for b in plan.breakpoints]
    assert prefixes == sorted(prefixes) and prefixes[-1] == plan.prompt_tokens
    assert plan.expected_cached_tokens == plan.breakpoints[1].prefix_tokens  # tools + system
    laid = plan.apply(_request())
    assert laid.tools[-1]["cache_control"] == {"type": "ephemeral"}
    assert laid.messages[0].content[-1]["cache_control"] == {"type": "ephemeral"}
    assert laid.messages[-1].content[-1]["text"] == "the new question"
    marked = [m for m in laid.to_openai()["messages"] if isinstance(m["content"], list)]
    assert len(marked) + 1 == len(plan.breakpoints)  # + the tool marker
    with pytest.raises(ConfigError):
        plan_cache_markers(_request(), "anthropic", max_breakpoints=5)
    assert len(plan_cache_markers(_request(), "anthropic", max_breakpoints=1).breakpoints) == 1


def test_anthropic_no_marker_below_the_minimum_and_none_after_a_volatile_value() -> None:
    short = _request(system="Be brief.", turns=0, tools=False)
    plan = plan_cache_markers(short, "anthropic")
    assert plan.breakpoints == () and plan.expected_cached_tokens == 0
    assert any("minimum" in n for n in plan.notes)
    # a clock at the top of the system prompt: nothing before it reaches the minimum
    clocked = _request(system="Current time: 2026-11-23T10:42:07Z\n" + LONG, tools=False)
    plan = plan_cache_markers(clocked, "anthropic")
    assert [b.where for b in plan.breakpoints] == ["request"]
    assert plan.expected_cached_tokens == 0
    fixed = plan_cache_markers(reorder(clocked).request, "anthropic")
    assert fixed.expected_cached_tokens >= count_tokens(LONG) and fixed.breakpoints[0].where == "system"
    # the new turn now carries the clock: the conversation breakpoint ends the history
    assert fixed.breakpoints[-1].where == "history"
    # opus 4.5 needs 4096 tokens
    assert (
        plan_cache_markers(_request(turns=0, tools=False), "anthropic", model="claude-opus-4-5").breakpoints
        == ()
    )


def test_an_agent_loop_is_marked_at_its_end_whatever_ids_its_results_carry() -> None:
    """Calls and results after the task are repeated whole by the next call of the loop."""
    msgs = [{"role": "system", "content": LONG}, {"role": "user", "content": "Fix the failing test."}]
    for i in range(4):
        call_id = f"call_{i}a8Zq3xY"
        msgs += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": "bash", "arguments": "{}"}}
                ],
            },
            {
                "role": "tool",
                "tool_call_id": call_id,
                "content": f"ran at 2026-11-23T10:4{i}:07Z\n" + "ok " * 300,
            },
        ]
    plan = plan_cache_markers({"model": "claude-sonnet-4-5", "messages": msgs}, "anthropic")
    assert (
        plan.breakpoints[-1].where == "request" and plan.breakpoints[-1].prefix_tokens == plan.prompt_tokens
    )


def test_openai_prompt_cache_key_and_1024_minimum() -> None:
    stream = planted_stream([], seed=3, n_requests=2)
    plans = [plan_cache_markers(r, "openai") for r in stream.requests]
    assert plans[0].params["prompt_cache_key"] == plans[1].params["prompt_cache_key"]
    assert plans[0].min_cacheable_tokens == 1024
    big = plan_cache_markers(_request(), "openai")
    assert big.expected_cached_tokens >= 1024 and (big.expected_cached_tokens - 1024) % 128 == 0
    assert big.expected_cached_tokens <= big.stable_prefix_tokens
    small = plan_cache_markers(_request(system="hi", turns=0, tools=False), "openai")
    assert small.expected_cached_tokens == 0
    assert (
        small.apply(_request(system="hi", turns=0, tools=False)).params["prompt_cache_key"].startswith("tl-")
    )


def test_vllm_block_aligned_and_unknown_provider() -> None:
    plan = plan_cache_markers(_request(), "vllm", block_size=16)
    assert plan.expected_cached_tokens % 16 == 0
    assert plan.stable_prefix_tokens - 16 < plan.expected_cached_tokens <= plan.stable_prefix_tokens
    with pytest.raises(ConfigError):
        plan_cache_markers(_request(), "bedrock")
