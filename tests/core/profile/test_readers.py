"""Trace readers: each format into one ``Trace``; anything else raises ``TraceFormatError``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenlean.errors import ProfileError, TraceFormatError
from tokenlean.profile import detect_format, read_trace, read_traces
from tokenlean.tokens import count_messages

SWE = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "agent_traces" / "swe-agent"


def _swe_files() -> list[Path]:
    if not SWE.is_dir():
        pytest.skip(f"datasets not found at {SWE}")
    return sorted(SWE.glob("*.traj"))


def test_swe_agent_trajectory_becomes_one_call_per_assistant_turn() -> None:
    path = next(p for p in _swe_files() if p.name.startswith("ctf__crypto__BabyEncryption"))
    raw = json.loads(path.read_text())
    assistant_turns = sum(1 for m in raw["history"] if m["role"] == "assistant")
    trace = read_trace(path)
    assert detect_format(path) == "swe-agent"
    assert len(trace) == assistant_turns
    assert set(trace.tasks()) == {path.stem}
    prompts = [c.usage.input_tokens for c in trace]
    assert prompts == sorted(prompts), "an agent's prompt only grows turn over turn"
    first = trace.calls[0]
    assert first.request is not None and first.response is not None
    assert first.usage.input_tokens == count_messages(first.request.messages)
    assert first.usage_counted
    # The prompt of call k is the history before the k-th assistant message, verbatim.
    k = 3
    idx = [i for i, m in enumerate(raw["history"]) if m["role"] == "assistant"][k]
    assert [m.text for m in trace.calls[k].request.messages] == [m["content"] for m in raw["history"][:idx]]


def test_swe_agent_function_calling_keeps_tool_pairing() -> None:
    path = next(p for p in _swe_files() if p.name == "function_calling_simple.traj")
    trace = read_trace(path)
    last = trace.calls[-1].request
    assert last is not None
    call_ids = {tc.id for m in last.messages for tc in m.tool_calls}
    answered = {m.tool_call_id for m in last.messages if m.role == "tool"}
    assert answered and answered <= call_ids


def test_openai_jsonl_with_usage_and_timings(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    rows = []
    for i, q in enumerate(["What is 2+2?", "And 3+3?"]):
        rows.append(
            {
                "task_id": "t1",
                "request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": q}]},
                "response": {
                    "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": str(4 + 2 * i)}}],
                    "usage": {
                        "prompt_tokens": 12,
                        "completion_tokens": 1,
                        "prompt_tokens_details": {"cached_tokens": 0},
                    },
                },
                "started_at": 100.0 + i,
                "first_token_at": 100.25 + i,
                "ended_at": 100.5 + i,
            }
        )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    trace = read_trace(path)
    assert detect_format(path) == "openai"
    assert [c.index for c in trace] == [0, 1]
    assert trace.calls[0].usage.input_tokens == 12 and not trace.calls[0].usage_counted
    assert trace.calls[0].ttft == pytest.approx(0.25)
    assert trace.calls[1].model == "gpt-4o-mini"


def test_openai_jsonl_groups_conversations_without_task_id(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    sys = {"role": "system", "content": "Be brief."}
    a1 = [sys, {"role": "user", "content": "Tell me about Paris."}]
    a2 = [*a1, {"role": "assistant", "content": "A city."}, {"role": "user", "content": "More?"}]
    b1 = [sys, {"role": "user", "content": "Tell me about Rome."}]
    path.write_text("\n".join(json.dumps({"request": {"messages": m}}) for m in (a1, b1, a2)) + "\n")
    trace = read_trace(path)
    tasks = trace.tasks()
    assert len(tasks) == 2
    assert sorted(len(v) for v in tasks.values()) == [1, 2]
    assert all(c.usage_counted for c in trace)


def test_ledger_jsonl_written_by_the_meter(tmp_path: Path) -> None:
    from tokenlean.metering import JsonlSink, Ledger, Meter
    from tokenlean.types import Usage

    path = tmp_path / "ledger.jsonl"
    meter = Meter(Ledger(JsonlSink(path, fsync=False)))
    meter.record(
        model="gpt-4o", usage=Usage(1000, 50), task_id="a", started_at=1.0, first_token_at=1.3, ended_at=2.0
    )
    meter.record(model="gpt-4o", usage=Usage(1200, 40, 1024), task_id="a", started_at=3.0, ended_at=3.5)
    trace = read_trace(path)
    assert detect_format(path) == "ledger"
    assert len(trace) == 2 and not trace.has_content
    assert trace.calls[1].usage.cached_input_tokens == 1024
    assert trace.calls[0].ttft == pytest.approx(0.3)


def test_langchain_runs_real_objects(tmp_path: Path) -> None:
    """A run collected from a real LangChain chat model, and a LangSmith-style export."""
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.load import dumpd
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_core.tracers.context import collect_runs

    reply = AIMessage(
        content="Paris.", usage_metadata={"input_tokens": 14, "output_tokens": 2, "total_tokens": 16}
    )
    model = GenericFakeChatModel(messages=iter([reply]))
    prompt = [SystemMessage("Be brief."), HumanMessage("Capital of France?")]
    with collect_runs() as cb:
        model.invoke(prompt)
    run = json.loads(cb.traced_runs[0].model_dump_json())
    collected = tmp_path / "runs.json"
    collected.write_text(json.dumps([run]))
    trace = read_trace(collected)
    assert detect_format(collected) == "langchain"
    (call,) = trace.calls
    assert call.usage.input_tokens == 14 and call.usage.output_tokens == 2
    assert call.response is not None and call.response.text == "Paris."
    assert call.started_at is not None and call.ended_at is not None

    # LangSmith export shape: inputs.messages holds the serialised chat messages.
    exported = dict(run, inputs={"messages": [[dumpd(m) for m in prompt]]})
    export_path = tmp_path / "export.json"
    export_path.write_text(json.dumps({"runs": [exported]}))
    (call2,) = read_trace(export_path).calls
    assert call2.request is not None
    assert [(m.role, m.text) for m in call2.request.messages] == [
        ("system", "Be brief."),
        ("user", "Capital of France?"),
    ]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jsonl", ""),
        ("garbage.json", "{not json"),
        ("other.json", json.dumps({"hello": "world"})),
        ("rows.jsonl", json.dumps({"a": 1}) + "\n" + json.dumps({"b": 2}) + "\n"),
        ("badmsg.jsonl", json.dumps({"request": {"messages": [{"role": "robot", "content": "x"}]}}) + "\n"),
        ("notraj.traj", json.dumps({"trajectory": []})),
        ("nollm.json", json.dumps([{"run_type": "chain", "inputs": {}, "outputs": {}}])),
    ],
)
def test_unreadable_traces_raise_trace_format_error(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TraceFormatError) as info:
        read_trace(path)
    assert name in str(info.value)
    assert isinstance(info.value, (ProfileError, ValueError))


def test_non_utf8_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"request": {"messages": [{"role": "user", "content": "caf\xe9"}]}}\n\xff\n')
    with pytest.raises(TraceFormatError, match="UTF-8"):
        read_trace(bad)
    with pytest.raises(TraceFormatError, match="no such trace file"):
        read_trace(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(TraceFormatError, match="no trace files"):
        read_traces([empty])


def test_a_bad_row_names_its_line(tmp_path: Path) -> None:
    good = {"request": {"messages": [{"role": "user", "content": "hi"}]}}
    path = tmp_path / "calls.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n{broken\n")
    with pytest.raises(TraceFormatError, match=r"calls\.jsonl:3"):
        read_trace(path)
