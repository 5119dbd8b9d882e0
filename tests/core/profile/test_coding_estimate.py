"""Cache-safe compaction on top of a hot prompt cache: hand-computed cost of a tiny session.

The session below is an agent loop whose every call reads the previous call's prompt from the
cache and writes only what is new (the shape Claude Code transcripts record). Token counts are
those of the o200k tokenizer for texts chosen so that each count is a round number (asserted
first); every expected figure is then worked out by hand in the comments, never read back from the
estimator.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tokenlean.compaction import Compactor
from tokenlean.metering import PriceTable
from tokenlean.profile import Profiler, read_traces
from tokenlean.profile.coding import cache_safe_compactor, estimate_cache_safe_compaction
from tokenlean.profile.estimates import ProfileContext
from tokenlean.profile.trace import Call, Trace
from tokenlean.tokens import get_counter
from tokenlean.types import Message, Request, ToolCall, Usage

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CLAUDE = [
    FIXTURES / "claude_code" / "inline" / "6f1d2c4e-8a3b-4c5d-9e7f-0a1b2c3d4e5f.jsonl",
    FIXTURES / "claude_code" / "projects" / "-home-dev-shop",
]

# USD per million tokens: input 3, cache read 0.30, 5-minute write 3.75, 1-hour write 6, output 15.
PRICES = PriceTable.from_dict(
    {
        "models": {
            "agent-model": {
                "input": 3,
                "output": 15,
                "cached_input": "0.3",
                "cache_write": "3.75",
                "cache_write_1h": 6,
            }
        }
    }
)
M = Decimal(1_000_000)
HIDDEN = 1000  # system prompt + tool schemas: in the recorded input, not in the transcript
OUTPUT = 50
UNCACHED = 3  # the few tokens after the last cache breakpoint

# Six tool outputs, each one line of a repeated word (a round token count, no near-duplicates).
OUTPUTS = [("alpha", 400), ("delta", 300), ("hotel", 200), ("echo", 250), ("india", 250)]


def _messages() -> list[Message]:
    msgs = [Message("user", "Fix the failing test in parser.py")]
    for k, (word, n) in enumerate(OUTPUTS, 1):
        msgs.append(
            Message("assistant", None, tool_calls=(ToolCall(f"c{k}", "Read", f'{{"path": "f{k}.py"}}'),))
        )
        msgs.append(Message("tool", " ".join([word] * n), tool_call_id=f"c{k}"))
    return msgs


def _session(*, cached: bool = True, write_1h: bool = False) -> Trace:
    """Call k sends the user task and the first k tool rounds; the cache holds call k-1's prompt."""
    msgs = _messages()
    counter = get_counter(None)
    calls = []
    prev_input = 0
    for k in range(len(OUTPUTS) + 1):
        request = Request(tuple(msgs[: 1 + 2 * k]), model="agent-model")
        inp = HIDDEN + counter.count_messages(request.messages) - 3  # no reply priming
        read = (HIDDEN if k == 0 else prev_input) if cached else 0
        write = inp - read - UNCACHED if cached else 0
        extra: dict[str, Any] = {"cache_write_1h_tokens": write if write_1h else 0}
        calls.append(
            Call("s1", k, Usage(inp, OUTPUT, read, write), request=request, model="agent-model", extra=extra)
        )
        prev_input = inp
    return Trace.from_calls(calls)


def _compactor() -> Compactor:
    # the default stale-output policy, with an empty mask so a masked message's count is fixed
    return cache_safe_compactor(mask_marker=None)


def test_the_counts_the_hand_computation_uses() -> None:
    counter = get_counter(None)
    msgs = _messages()
    assert counter.count_message(msgs[0]) == 11
    assert [counter.count_message(m) for m in msgs[1::2]] == [17] * 5
    assert [counter.count_message(m) for m in msgs[2::2]] == [404, 304, 204, 254, 254]
    assert counter.count_message(Message("tool", "", tool_call_id="c1")) == 4  # a masked output
    # inputs: B = 11, 432, 753, 974, 1245, 1516 counted, plus the hidden 1000
    assert [c.usage.input_tokens for c in _session().calls] == [1011, 1432, 1753, 1974, 2245, 2516]


def _cost(inp: int, read: int, write: int, write_price: Decimal = Decimal("3.75")) -> Decimal:
    uncached = inp - read - write
    return (3 * uncached + Decimal("0.3") * read + write_price * write + 15 * OUTPUT) / M


@pytest.mark.parametrize("write_1h", [False, True])
def test_tiny_session_by_hand(write_1h: bool) -> None:
    trace = _session(write_1h=write_1h)
    ctx = ProfileContext(trace, PRICES, "agent-model")
    est = estimate_cache_safe_compaction(ctx, compactor=_compactor())
    # Tool outputs are masked when three turns old: call 4 masks output 1 (404 -> 4 tokens, 400
    # saved), call 5 masks output 2 (304 -> 4; 300 more, 700 in all). Calls 0-3 are unchanged.
    assert est.input_tokens_saved == 400 + 700
    assert est.calls_affected == 2
    # Call 4: input 2245 - 400 = 1845. The realised read (call 3's 1974) maps to 1974 - 400 = 1574
    # compacted tokens, but output 1 changed: the prefix before it (1000 + 11 + 17 = 1028) is all
    # that is read; the rest, less the 3 uncached, is written: 1845 - 1028 - 3 = 814.
    # Call 5: input 2516 - 700 = 1816. The read (call 4's 2245) maps to 2245 - 700 = 1545, cut at
    # output 2: 1000 + 11 + 17 + 4 + 17 = 1049 read, 1816 - 1049 - 3 = 764 written.
    assert est.metrics["prefix_changes"] == 2
    assert est.metrics["rewritten_tokens"] == (1574 - 1028) + (1545 - 1049)
    after = est.call_usage_after
    assert after[4] == Usage(1845, OUTPUT, 1028, 814)
    assert after[5] == Usage(1816, OUTPUT, 1049, 764)
    assert after[:4] == [c.usage for c in trace.calls[:4]]
    w = Decimal(6) if write_1h else Decimal("3.75")
    before = _cost(2245, 1974, 268, w) + _cost(2516, 2245, 268, w)
    after_cost = _cost(1845, 1028, 814, w) + _cost(1816, 1049, 764, w)
    # 5-minute writes: before 2356.2 + 2437.5, after 4119.9 + 3938.7 (per million): the re-writes
    # cost more than the cheaper reads save on a session this short.
    assert est.cost_saved == before - after_cost
    assert est.cost_saved == (Decimal("-5609.4") if write_1h else Decimal("-3264.9")) / M
    assert est.cost_before == sum(ctx.baseline_costs, Decimal(0))
    assert est.task_cost_after == {"s1": est.cost_after}
    # Without re-writes the reads alone would save 0.3 per million on 400 + 700 tokens.
    read_saving = Decimal("0.3") * 1100 / M
    assert Decimal(est.metrics["rewrite_cost"]) == read_saving - est.cost_saved
    # the realised cache: reads over inputs
    total_in = 1011 + 1432 + 1753 + 1974 + 2245 + 2516
    reads = 1000 + 1011 + 1432 + 1753 + 1974 + 2245
    assert est.metrics["cache_read_share"] == round(reads / total_in, 4)
    assert est.metrics["session_cache_read_share"] == {"s1": round(reads / total_in, 4)}
    assert est.applicable


def test_masked_output_pays_once_it_is_read_on_many_later_calls() -> None:
    msgs = _messages()[:3]  # one big tool output, then many short rounds that are never masked
    for k in range(2, 40):
        msgs.append(Message("assistant", None, tool_calls=(ToolCall(f"c{k}", "ls", "{}"),)))
        msgs.append(Message("tool", "ok", tool_call_id=f"c{k}"))
    counter = get_counter(None)
    calls, prev = [], HIDDEN
    for k in range(1, 40):
        request = Request(tuple(msgs[: 1 + 2 * k]))
        inp = HIDDEN + counter.count_messages(request.messages) - 3
        calls.append(Call("s", k, Usage(inp, OUTPUT, prev, inp - prev), request=request, model="agent-model"))
        prev = inp
    ctx = ProfileContext(Trace.from_calls(calls), PRICES, "agent-model")
    est = estimate_cache_safe_compaction(ctx, compactor=_compactor())
    assert est.applicable and est.metrics["prefix_changes"] == 1
    assert est.cost_saved > 0


def test_sampled_replay_dates_decisions_back_to_the_call_that_would_make_them() -> None:
    trace = _session()
    ctx = ProfileContext(trace, PRICES, "agent-model")
    exact = estimate_cache_safe_compaction(ctx, compactor=_compactor(), sample=None)
    sampled = estimate_cache_safe_compaction(ctx, compactor=_compactor(), sample=2)
    assert exact.metrics["calls_compacted"] == 6 and sampled.metrics["calls_compacted"] == 3
    assert sampled.metrics["sampled_conversations"] == 1
    # compacted at calls 0, 3 and 5 only; output 1, masked at call 5, was old enough at call 4
    # already, so call 4 gets that decision and the two prefix changes stay where they were
    assert sampled.call_usage_after == exact.call_usage_after
    assert sampled.cost_saved == exact.cost_saved
    assert sampled.metrics["prefix_changes"] == exact.metrics["prefix_changes"] == 2


def test_not_applicable_without_cache_reads_or_content() -> None:
    ctx = ProfileContext(_session(cached=False), PRICES, "agent-model")
    est = estimate_cache_safe_compaction(ctx, compactor=_compactor())
    assert not est.applicable and "no prompt-cache reads" in est.reason
    assert est.metrics["cache_read_share"] == 0.0 and est.cost_saved == 0
    ledger = Trace.from_calls([replace_request(c) for c in _session().calls])
    est = estimate_cache_safe_compaction(ProfileContext(ledger, PRICES, "agent-model"))
    assert not est.applicable and "no request content" in est.reason


def replace_request(c: Call) -> Call:
    return Call(c.task_id, c.index, c.usage, model=c.model)


def test_claude_code_fixtures() -> None:
    trace = read_traces(CLAUDE)
    reads = sum(c.usage.cached_input_tokens for c in trace.calls)
    inputs = sum(c.usage.input_tokens for c in trace.calls)
    ctx = ProfileContext(trace, PriceTable.default(), "claude-sonnet-4-5")
    # the fixtures' tool outputs are short: the default policy keeps them whole
    est = estimate_cache_safe_compaction(ctx)
    assert est.metrics["cache_read_share"] == round(reads / inputs, 4)
    assert not est.applicable and "removes nothing" in est.reason and est.cost_saved == 0
    # a policy that masks every output a turn old does cut them; subagents are their own chains
    est = estimate_cache_safe_compaction(
        ctx, compactor=cache_safe_compactor(mask_observations_after=1, keep_last_turns=1, min_tokens=0)
    )
    assert est.applicable and est.input_tokens_saved > 0 and est.calls_affected > 0
    assert est.metrics["conversations"] == 5  # three sessions, two of them with a subagent
    assert est.metrics["prefix_changes"] >= 1
    assert sum(est.task_cost_after.values()) == est.cost_after
    assert len(est.call_usage_after) == len(trace.calls)
    for u, c in zip(est.call_usage_after, trace.calls, strict=True):
        assert u.output_tokens == c.usage.output_tokens and u.input_tokens <= c.usage.input_tokens


def test_profiler_reports_the_lever() -> None:
    report = Profiler(levers=("cache-safe-compaction",), default_model="claude-sonnet-4-5").profile(
        read_traces(CLAUDE)
    )
    est = report.estimate("cache-safe-compaction")
    assert est.title.startswith("Cache-safe compaction")
    assert "cache_read_share" in report.to_dict()["recommendations"][0]["metrics"]
