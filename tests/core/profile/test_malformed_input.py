"""Trace readers on malformed files: a ``TokenleanError`` naming the file, never a bare exception."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenlean.errors import TokenleanError
from tokenlean.profile import read_trace


@pytest.mark.parametrize("ids", [{"a": 1}, "call_1", 7])
def test_swe_agent_tool_call_ids_of_the_wrong_shape(tmp_path: Path, ids: object) -> None:
    traj = {
        "history": [
            {"role": "user", "content": "fix it"},
            {"role": "tool", "content": "done", "tool_call_ids": ids},  # was KeyError / TypeError
            {"role": "assistant", "content": "fixed"},
        ]
    }
    path = tmp_path / "t.traj"
    path.write_text(json.dumps(traj))
    with pytest.raises(TokenleanError):
        read_trace(path)


@pytest.mark.parametrize("cost", ["abc", "NaN", True, [1]])
def test_an_openai_row_with_a_cost_that_is_not_a_number(tmp_path: Path, cost: object) -> None:
    row = {
        "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": "hello"}}]},
        "cost": cost,  # "abc" raised decimal.InvalidOperation
    }
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "cost": "0.01"}) + "\n")
    with pytest.raises(TokenleanError):
        read_trace(path)


def test_an_openai_log_with_lone_surrogates_is_read(tmp_path: Path) -> None:
    row = {
        "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": "a\ud800b"}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": "ok"}}]},
    }
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")  # \ud800 escaped: valid JSON
    trace = read_trace(path)  # the conversation key used to raise UnicodeEncodeError
    assert len(trace.calls) == 2
