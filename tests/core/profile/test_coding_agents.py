"""Claude Code sessions and Codex CLI rollouts as traces: token totals per session equal a hand count.

The fixtures under ``fixtures/claude_code`` and ``fixtures/codex`` were written by hand in the shape
those tools write (no real user's transcript): every expected number below is summed here from the
usage blocks of the fixture, response by response, never read back from the reader.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tokenlean.errors import TraceFormatError
from tokenlean.profile import detect_format, read_trace, read_traces
from tokenlean.profile.coding_agents import find_claude_code_sessions, find_codex_sessions
from tokenlean.profile.trace import Call
from tokenlean.types import Usage

FIXTURES = Path(__file__).resolve().parent / "fixtures"
INLINE = FIXTURES / "claude_code" / "inline" / "6f1d2c4e-8a3b-4c5d-9e7f-0a1b2c3d4e5f.jsonl"
PROJECT = FIXTURES / "claude_code" / "projects" / "-home-dev-shop"
S2 = "b7e3a9d0-1c2f-4e5a-8b6c-7d8e9f0a1b2c"
S3 = "d4c3b2a1-9f8e-4d7c-8b6a-5f4e3d2c1b0a"
CODEX = FIXTURES / "codex" / "sessions"
ROLLOUT = CODEX / "2025/10/14/rollout-2025-10-14T09-12-03-0199e2a4-5b6c-7d8e-9f01-23456789abcd.jsonl"
REVIEW = CODEX / "2025/10/15/rollout-2025-10-15T14-40-55-0199e7c1-2d3e-7f40-8a51-6b7c8d9e0f12.jsonl"


def claude(inp: int, read: int, write: int, out: int) -> Usage:
    """A Claude usage block (input_tokens without the cache) in tokenlean's convention."""
    return Usage(inp + read + write, out, read, write)


def total(calls: list[Call]) -> Usage:
    return sum((c.usage for c in calls), Usage())


# -- Claude Code -------------------------------------------------------------------------------
# (input_tokens, cache_read, cache_creation, output_tokens) of each response of the inline session
INLINE_RESPONSES = [
    (4, 11850, 3120, 97),  # Read: three rows (thinking, text, tool_use); output 8, 8 then 97
    (6, 14970, 1480, 412),  # Edit: two rows, identical usage
    (3, 16450, 520, 156),  # Task: spawns the subagent
    (4, 0, 2210, 88),  # sidechain: Bash
    (6, 2210, 310, 41),  # sidechain: the subagent's answer
    (4, 16970, 640, 73),  # final answer
]


def test_claude_inline_session_totals_equal_a_hand_count() -> None:
    assert detect_format(INLINE) == "claude-code"
    trace = read_trace(INLINE)
    (session,) = trace.tasks()
    assert session == "6f1d2c4e-8a3b-4c5d-9e7f-0a1b2c3d4e5f"
    calls = trace.tasks()[session]
    assert [c.usage for c in calls] == [claude(*r[:3], r[3]) for r in INLINE_RESPONSES]
    # by hand: input 4+6+3+4+6+4 = 27 uncached, + reads 62450, + writes 8280; output 867
    assert total(calls) == Usage(70757, 867, 62450, 8280)
    assert total(calls) == sum((claude(*r[:3], r[3]) for r in INLINE_RESPONSES), Usage())


def test_claude_rows_of_one_response_count_once_with_the_final_output() -> None:
    rows = [json.loads(line) for line in INLINE.read_text().splitlines()]
    assistant_rows = [r for r in rows if r["type"] == "assistant" and r["message"]["model"] != "<synthetic>"]
    assert len(assistant_rows) == 9  # nine rows, six responses
    calls = read_trace(INLINE).calls
    assert len(calls) == 6
    assert [c.extra["rows"] for c in calls] == [3, 2, 1, 1, 1, 1]
    first = calls[0]
    assert first.usage.output_tokens == 97  # not 8, the count of the rows written mid-stream
    assert first.extra["message_id"] == "msg_01TkQ9xV3bN7cR2mHf8LpWaZ"
    assert first.extra["request_id"] == "req_011CTk8vV2nY6qJ3sX9dA1bE"
    assert first.response is not None and first.response.finish_reason == "tool_use"
    assert first.response.message.text == "I'll read the test and the parser first."
    assert [tc.name for tc in first.response.message.tool_calls] == ["Read"]


def test_claude_sidechain_calls_count_and_are_flagged() -> None:
    calls = read_trace(INLINE).calls
    assert [c.extra["sidechain"] for c in calls] == [False, False, False, True, True, False]
    side = [c for c in calls if c.extra["sidechain"]]
    assert total(side) == claude(4, 0, 2210, 88) + claude(6, 2210, 310, 41)
    # the subagent's conversation starts at its own prompt, not at the parent's history
    assert side[0].request is not None
    assert [m.text for m in side[0].request.messages] == [
        "Run pytest on tests/test_dates.py and report any failures."
    ]


def test_claude_cache_write_tiers_are_kept_for_pricing() -> None:
    a1, a2 = read_trace(INLINE).calls[:2]
    assert (a1.extra["cache_write_1h_tokens"], a1.extra["cache_write_5m_tokens"]) == (3120, 0)
    assert (a2.extra["cache_write_1h_tokens"], a2.extra["cache_write_5m_tokens"]) == (0, 1480)
    assert a1.extra["cache_tiers_recorded"] and a1.extra["service_tier"] == "standard"
    assert a1.usage.cache_write_tokens == 3120 and a1.usage.uncached_input_tokens == 4


def test_claude_requests_are_the_conversation_up_to_each_call() -> None:
    calls = read_trace(INLINE).calls
    final = calls[-1].request
    assert final is not None
    assert [m.role for m in final.messages] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    tool_ids = [m.tool_call_id for m in final.messages if m.role == "tool"]
    assert tool_ids == ["toolu_01Rd7fPq2", "toolu_01Ed3kLm9", "toolu_01Tk5Ag7"]
    assert "def parse_date(text):" in final.messages[2].text  # a tool output, verbatim
    assert final.messages[-1].text == "All 14 tests in tests/test_dates.py pass."
    # the first call's prompt is the user's message alone (system prompt and tools are not recorded)
    assert calls[0].request is not None and len(calls[0].request.messages) == 1
    assert all(c.model == "claude-sonnet-4-5-20250929" for c in calls)
    assert calls[0].started_at is not None and calls[0].extra["timestamp"] == "2025-10-02T08:14:07.901Z"


# (input_tokens, cache_read, cache_creation, output_tokens) of session S2, main then subagent
S2_MAIN = [(10, 0, 9875, 214), (8, 9875, 1250, 380), (12, 0, 2045, 95)]
S2_AGENT = [(5, 0, 4120, 64), (7, 4120, 630, 118), (4, 4750, 890, 201)]


def test_claude_subagents_folder_is_read_with_its_session() -> None:
    main = PROJECT / f"{S2}.jsonl"
    trace = read_trace(main)
    calls = trace.tasks()[S2]
    assert set(trace.tasks()) == {S2}  # subagent calls count in the parent's session
    expected = sum((claude(*r[:3], r[3]) for r in S2_MAIN + S2_AGENT), Usage())
    # by hand: uncached 10+8+12+5+7+4 = 46; reads 9875+4120+4750 = 18745; writes 18810; output 1072
    assert expected == Usage(37601, 1072, 18745, 18810)
    assert total(calls) == expected
    side = [c for c in calls if c.extra["sidechain"]]
    assert [c.usage for c in side] == [claude(*r[:3], r[3]) for r in S2_AGENT]
    assert {c.extra["agent_id"] for c in side} == {"a3f9c21"}
    assert {c.model for c in side} == {"claude-haiku-4-5-20251001"}
    # calls are in time order: the subagent ran between the main session's first two calls
    assert [c.extra["sidechain"] for c in calls] == [False, True, True, True, False, False]
    # the session folder reads the same session
    folder = PROJECT / S2
    assert detect_format(folder) == "claude-code"
    assert total(read_trace(folder).calls) == expected
    assert total(read_traces([folder]).calls) == expected
    # the subagent's file alone is a trace of its own calls
    agent = folder / "subagents" / "agent-a3f9c21.jsonl"
    assert total(read_trace(agent).calls) == sum((claude(*r[:3], r[3]) for r in S2_AGENT), Usage())


def test_claude_rows_without_request_id_and_the_1h_tier_in_the_newer_layout() -> None:
    calls = read_trace(PROJECT / f"{S2}.jsonl").tasks()[S2]
    edit = calls[4]
    assert edit.extra["request_id"] is None and edit.extra["rows"] == 2
    assert edit.usage == claude(8, 9875, 1250, 380)
    assert calls[0].extra["cache_write_1h_tokens"] == 9875
    per_tier = {t: sum(c.extra[f"cache_write_{t}_tokens"] for c in calls) for t in ("5m", "1h")}
    assert per_tier == {"1h": 9875, "5m": 1250 + 2045 + 4120 + 630 + 890}


def test_claude_chain_runs_through_progress_rows_and_stops_at_a_compaction() -> None:
    calls = read_trace(PROJECT / f"{S2}.jsonl").tasks()[S2]
    edit, after_compaction = calls[4].request, calls[5].request
    assert edit is not None and after_compaction is not None
    # the Task result's parent is a progress row: the chain goes through it
    assert [m.role for m in edit.messages] == ["user", "assistant", "tool"]
    assert edit.messages[2].text.startswith("Cart.total() in shop/cart.py")
    # after a compaction, the request is the summary alone
    assert len(after_compaction.messages) == 1
    assert after_compaction.messages[0].text.startswith("This session is being continued")


def test_claude_projects_folder_counts_copied_responses_once_and_skips_empty_sessions() -> None:
    trace = read_traces([PROJECT])
    tasks = trace.tasks()
    assert set(tasks) == {S2, S3}  # the summary-only session has no calls
    assert total(tasks[S2]) == Usage(37601, 1072, 18745, 18810)
    # the resumed session's file repeats S2's first response: only its own response is new
    assert total(tasks[S3]) == claude(6, 9875, 300, 40)
    assert [c.index for c in tasks[S2]] == list(range(6))
    assert len(read_trace(PROJECT / f"{S3}.jsonl").calls) == 2  # read alone, the copy is there
    with pytest.raises(TraceFormatError, match="no calls"):
        read_trace(PROJECT / "c0ffee00-2b3c-4d5e-8f90-a1b2c3d4e5f6.jsonl")


def _session_rows() -> list[dict[str, object]]:
    base = {"sessionId": "s-1", "cwd": "/w", "version": "2.0.31", "isSidechain": False}
    usage = {
        "input_tokens": 3,
        "output_tokens": 5,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    return [
        {
            **base,
            "type": "user",
            "uuid": "u1",
            "parentUuid": None,
            "timestamp": "2025-10-01T10:00:00Z",
            "message": {"role": "user", "content": "hi"},
        },
        {
            **base,
            "type": "assistant",
            "uuid": "a1",
            "parentUuid": "u1",
            "timestamp": "2025-10-01T10:00:02Z",
            "requestId": "req_1",
            "message": {
                "id": "msg_1",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": "hello"}],
                "usage": usage,
            },
        },
    ]


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_claude_rows_of_other_types_are_skipped_not_errors(tmp_path: Path) -> None:
    rows = _session_rows()
    odd = [
        {"type": "custom-title", "customTitle": "greeting", "sessionId": "s-1"},
        {"type": "attachment", "uuid": "x1", "parentUuid": "a1", "sessionId": "s-1", "attachment": {}},
        {
            "type": "progress",
            "uuid": "x2",
            "parentUuid": "x1",
            "sessionId": "s-1",
            "data": {"type": "hook_progress"},
        },
        {"type": "some-future-row", "sessionId": "s-1", "payload": [1, 2]},
    ]
    path = _write(tmp_path / "s-1.jsonl", [*rows[:1], *odd, *rows[1:]])
    (call,) = read_trace(path).calls
    assert call.usage == Usage(3, 5) and call.task_id == "s-1"


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", r"s-1.jsonl:2: not valid JSON"),
        ("[1, 2]", r"s-1.jsonl:2: a row must be a JSON object"),
    ],
)
def test_claude_broken_lines_are_trace_format_errors_naming_the_line(
    tmp_path: Path, line: str, match: str
) -> None:
    rows = _session_rows()
    path = tmp_path / "s-1.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n" + line + "\n" + json.dumps(rows[1]) + "\n")
    with pytest.raises(TraceFormatError, match=match):
        read_trace(path, fmt="claude-code")


@pytest.mark.parametrize(
    "usage",
    [None, "many", {"input_tokens": -1, "output_tokens": 2}, {"input_tokens": 1.5, "output_tokens": 2}],
)
def test_claude_an_assistant_row_with_unreadable_usage(tmp_path: Path, usage: object) -> None:
    rows = _session_rows()
    rows[1]["message"]["usage"] = usage  # type: ignore[index]
    with pytest.raises(TraceFormatError, match=r"s-1.jsonl:2"):
        read_trace(_write(tmp_path / "s-1.jsonl", list(rows)))


def test_claude_line_separators_inside_text_do_not_split_rows(tmp_path: Path) -> None:
    rows = _session_rows()
    rows[0]["message"] = {"role": "user", "content": "one\u2028two\u2029three"}
    path = tmp_path / "s-1.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (call,) = read_trace(path).calls
    assert call.request is not None and call.request.messages[0].text == "one\u2028two\u2029three"


def test_find_claude_code_sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["6f1d2c4e-8a3b-4c5d-9e7f-0a1b2c3d4e5f.jsonl"]
    assert [p.name for p in find_claude_code_sessions(INLINE.parent)] == names
    found = find_claude_code_sessions(FIXTURES / "claude_code" / "projects")
    assert [p.name for p in found] == [
        f"{S2}.jsonl",
        "c0ffee00-2b3c-4d5e-8f90-a1b2c3d4e5f6.jsonl",
        f"{S3}.jsonl",
    ]  # the subagent's file is read with its session, not listed
    config = tmp_path / "claude-config"
    shutil.copytree(FIXTURES / "claude_code" / "projects", config / "projects")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config))
    assert [p.relative_to(config / "projects") for p in find_claude_code_sessions()] == [
        p.relative_to(FIXTURES / "claude_code" / "projects") for p in found
    ]
    monkeypatch.delenv("CLAUDE_CONFIG_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "nobody"))
    assert find_claude_code_sessions() == []


def test_find_claude_code_sessions_lists_a_session_folder_whose_transcript_is_gone(tmp_path: Path) -> None:
    # ccusage counts every *.jsonl under projects/, subagents included: so must the listing
    projects = tmp_path / "projects"
    shutil.copytree(FIXTURES / "claude_code" / "projects", projects)
    (projects / "-home-dev-shop" / f"{S2}.jsonl").unlink()
    found = find_claude_code_sessions(projects)
    assert [p.name for p in found] == [S2, "c0ffee00-2b3c-4d5e-8f90-a1b2c3d4e5f6.jsonl", f"{S3}.jsonl"]
    assert found[0].is_dir()
    trace = read_traces(found, skip_empty=True)
    agent = sum((claude(*r[:3], r[3]) for r in S2_AGENT), Usage())
    assert total(trace.tasks()[S2]) == agent
    # S3's copy of S2's first response is S3's now: S2's transcript is not there to hold it
    assert total(trace.tasks()[S3]) == claude(10, 0, 9875, 214) + claude(6, 9875, 300, 40)


# -- Codex CLI ---------------------------------------------------------------------------------
# (input_tokens, cached_input_tokens, output_tokens, reasoning_output_tokens) of each last_token_usage
ROLLOUT_CALLS = [
    (5210, 4096, 188, 128),
    (5810, 5120, 514, 192),
    (6440, 6016, 113, 64),
    (6670, 6144, 97, 0),
    (6820, 6016, 91, 32),
]


def codex(inp: int, cached: int, out: int, reasoning: int) -> Usage:
    """A Codex usage block: its input_tokens already include the cached ones."""
    return Usage(inp, out, cached, 0, reasoning)


def test_codex_rollout_totals_equal_a_hand_count() -> None:
    assert detect_format(ROLLOUT) == "codex"
    trace = read_trace(ROLLOUT)
    (session,) = trace.tasks()
    assert session == "0199e2a4-5b6c-7d8e-9f01-23456789abcd"
    calls = trace.tasks()[session]
    assert [c.usage for c in calls] == [codex(*r) for r in ROLLOUT_CALLS]
    # by hand: 5210+5810+6440+6670+6820 = 30950 input, of which 27392 cached; 1003 output (416 reasoning)
    assert total(calls) == Usage(30950, 1003, 27392, 0, 416)
    # ... which is the rollout's last cumulative total
    rows = [json.loads(line) for line in ROLLOUT.read_text().splitlines()]
    last_total = [
        r["payload"]["info"]["total_token_usage"]
        for r in rows
        if r["type"] == "event_msg" and r["payload"]["type"] == "token_count" and r["payload"]["info"]
    ][-1]
    assert total(calls) == codex(
        last_total["input_tokens"],
        last_total["cached_input_tokens"],
        last_total["output_tokens"],
        last_total["reasoning_output_tokens"],
    )


def test_codex_repeated_token_counts_are_one_call() -> None:
    rows = [json.loads(line) for line in ROLLOUT.read_text().splitlines()]
    counts = [r for r in rows if r["type"] == "event_msg" and r["payload"]["type"] == "token_count"]
    assert len(counts) == 8  # one without info, two repeats with unchanged totals
    calls = read_trace(ROLLOUT).calls
    assert len(calls) == 5
    assert {c.extra["usage_from"] for c in calls} == {"last_token_usage"}
    assert [c.model for c in calls] == ["gpt-5-codex"] * 4 + ["gpt-5"]  # turn_context switched it
    assert all(
        c.usage.uncached_input_tokens == c.usage.input_tokens - c.usage.cached_input_tokens for c in calls
    )
    assert calls[0].extra["cli_version"] == "0.46.0" and calls[0].extra["sidechain"] is False


def test_codex_requests_hold_the_tool_outputs_before_each_call() -> None:
    calls = read_trace(ROLLOUT).calls
    second = calls[1].request
    assert second is not None
    assert [m.role for m in second.messages] == ["user", "user", "assistant", "tool"]
    assert second.messages[2].tool_calls[0].name == "shell"
    assert second.messages[3].tool_call_id == "call_Qx1mB7dK2pL9"
    assert "class Cart:" in second.messages[3].text
    assert calls[1].response is not None
    assert [tc.name for tc in calls[1].response.message.tool_calls] == ["apply_patch"]
    assert calls[3].response is not None and calls[3].response.message.text.startswith(
        "Added tests/test_cart.py"
    )
    assert calls[4].request is not None and calls[4].request.messages[-1].text.startswith("Thanks.")


def test_codex_falls_back_to_differences_of_totals_when_last_usage_is_missing() -> None:
    calls = read_trace(REVIEW).calls
    assert {c.extra["usage_from"] for c in calls} == {"total_token_usage"}
    # totals (3000,0,150,64) -> (6500,2944,420,192) -> (10400,6272,530,192); the middle event has no last
    assert [c.usage for c in calls] == [
        codex(3000, 0, 150, 64),
        codex(3500, 2944, 270, 128),
        codex(3900, 3328, 110, 0),
    ]
    assert total(calls) == codex(10400, 6272, 530, 192)
    assert all(c.extra["sidechain"] for c in calls)  # a review subagent's rollout
    after = calls[2].request  # after the compaction: the summary, then the new question
    assert after is not None and [m.text for m in after.messages][-1] == "Suggest a fix."
    assert after.messages[0].text.startswith("Reviewed cart-discount")


def test_codex_last_usages_that_do_not_add_up_give_way_to_the_totals(tmp_path: Path) -> None:
    lines = ROLLOUT.read_text().splitlines()
    # drop the second call's token_count (a line lost): the last usages now miss 5810 input tokens
    dropped = [ln for ln in lines if '"input_tokens":11020' not in ln]
    assert len(dropped) == len(lines) - 1
    path = tmp_path / "rollout-lost.jsonl"
    path.write_text("\n".join(dropped) + "\n")
    calls = read_trace(path).calls
    assert len(calls) == 4 and {c.extra["usage_from"] for c in calls} == {"total_token_usage"}
    assert calls[1].usage == codex(5810 + 6440, 5120 + 6016, 514 + 113, 192 + 64)
    assert total(calls) == Usage(30950, 1003, 27392, 0, 416)


def test_codex_resumed_total_counts_only_this_files_calls(tmp_path: Path) -> None:
    rows = [
        {"timestamp": "2025-10-16T08:00:00Z", "type": "session_meta", "payload": {"id": "r-1", "cwd": "/w"}},
        {"timestamp": "2025-10-16T08:00:01Z", "type": "turn_context", "payload": {"model": "gpt-5"}},
    ]
    for i, (tot, last) in enumerate(
        [((9000, 8000, 400, 0), (1200, 1024, 30, 0)), ((10300, 9152, 450, 0), (1300, 1152, 50, 0))]
    ):
        info = {
            "total_token_usage": dict(zip(("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens"), tot, strict=True)),
            "last_token_usage": dict(zip(("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens"), last, strict=True)),
        }  # fmt: skip
        rows.append(
            {
                "timestamp": f"2025-10-16T08:00:0{i + 2}Z",
                "type": "event_msg",
                "payload": {"type": "token_count", "info": info},
            }
        )
    calls = read_trace(_write(tmp_path / "rollout-r.jsonl", rows)).calls
    assert [c.usage for c in calls] == [Usage(1200, 30, 1024), Usage(1300, 50, 1152)]
    assert {c.extra["usage_from"] for c in calls} == {"last_token_usage"}


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"timestamp": "t", "type": "event_msg", "payload": "token_count"}, "needs a 'payload' object"),
        ({"timestamp": "t", "type": "event_msg", "payload": {"type": "token_count", "info": {"last_token_usage": {}}}}, "total_token_usage"),
        ({"timestamp": "t", "type": "event_msg", "payload": {"type": "token_count", "info": {"total_token_usage": {"input_tokens": -3}}}}, "non-negative"),
        ({"timestamp": "t", "type": "event_msg", "payload": {"type": "token_count", "info": {"total_token_usage": {"input_tokens": 5, "cached_input_tokens": 9}}}}, "exceed"),
    ],
)  # fmt: skip
def test_codex_malformed_rows_are_trace_format_errors(
    tmp_path: Path, row: dict[str, object], match: str
) -> None:
    meta = {"timestamp": "t", "type": "session_meta", "payload": {"id": "m-1"}}
    path = _write(tmp_path / "rollout-m.jsonl", [meta, row])
    with pytest.raises(TraceFormatError, match=match):
        read_trace(path)
    path.write_text(json.dumps(meta) + "\n{broken\n")
    with pytest.raises(TraceFormatError, match=r"rollout-m.jsonl:2: not valid JSON"):
        read_trace(path)


def test_codex_unknown_row_types_are_skipped(tmp_path: Path) -> None:
    lines = ROLLOUT.read_text().splitlines()
    extra = [
        json.dumps({"timestamp": "t", "type": "ghost_snapshot", "payload": {"commit": "abc"}}),
        json.dumps({"record_type": "state"}),
    ]
    path = tmp_path / "rollout-x.jsonl"
    path.write_text("\n".join([lines[0], *extra, *lines[1:]]) + "\n")
    assert total(read_trace(path).calls) == Usage(30950, 1003, 27392, 0, 416)


def test_find_codex_sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_codex_sessions(CODEX) == [ROLLOUT, REVIEW]
    home = tmp_path / "codex-home"
    shutil.copytree(CODEX, home / "sessions")
    monkeypatch.setenv("CODEX_HOME", str(home))
    assert [p.name for p in find_codex_sessions()] == [ROLLOUT.name, REVIEW.name]
    monkeypatch.delenv("CODEX_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "nobody"))
    assert find_codex_sessions() == []
    merged = read_traces(find_codex_sessions(CODEX))
    assert len(merged.tasks()) == 2 and len(merged.calls) == 8
