"""Behaviour of the compactor: policies, incremental mode, handles, bad input, CLI."""

from __future__ import annotations

import argparse
import json

import pytest

from tokenlean.compaction import Compactor, segment
from tokenlean.compaction.cli import register_cli
from tokenlean.errors import (
    ConfigError,
    InputError,
    MessageFormatError,
    TextEncodingError,
    UnknownHandleError,
    VerbatimViolation,
)
from tokenlean.types import Message, Request, ToolCall

LOG = "\n".join(
    f"2024-05-01 12:00:{i:02d} INFO worker {i} processed batch {i * 7} without errors" for i in range(40)
)
DOC = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by the company of "
    "Gustave Eiffel. Construction finished in 1889 for the World's Fair. Bananas are rich in potassium. "
    "The Amazon is the largest rainforest on Earth. Tea originated in China. "
) * 3


def _step(i: int, name: str, body: str) -> list[Message]:
    call = ToolCall(id=f"c{i}", name=name, arguments=json.dumps({"i": i}))
    return [
        Message(role="assistant", content=None, tool_calls=(call,)),
        Message(role="tool", tool_call_id=f"c{i}", content=body),
    ]


def _session(
    bodies: list[tuple[str, str]], question: str = "Which worker processed batch 21?"
) -> list[Message]:
    msgs = [Message(role="system", content="You are an agent."), Message(role="user", content=question)]
    for i, (name, body) in enumerate(bodies):
        msgs += _step(i, name, body)
    msgs.append(Message(role="user", content=question))
    return msgs


def test_text_compaction_keeps_relevant_sentence() -> None:
    res = Compactor(ratio=0.8, mode="lexical", marker=None).compact(
        DOC, query="When was the Eiffel Tower finished?"
    )
    res.verify()
    assert "1889" in res.text
    assert res.tokens_after < res.tokens_before * 0.35
    assert 0.6 < res.reduction < 1.0


def test_markers_carry_handles_that_expand() -> None:
    comp = Compactor(ratio=0.8, mode="lexical")
    res = comp.compact(DOC, query="Eiffel Tower")
    assert res.omissions
    om = res.omissions[0]
    assert om.handle in res.text and om.marker in res.text
    a, b = om.ranges[0]
    assert comp.expand_omitted(om.handle) == DOC[a:b]
    assert comp.expand_omitted(f"please expand {om.handle}") == DOC[a:b]
    with pytest.raises(UnknownHandleError):
        comp.expand_omitted("om-" + "0" * 32)


def test_verify_catches_tampering() -> None:
    from dataclasses import replace

    res = Compactor(ratio=0.7, mode="lexical").compact(DOC, query="tea")
    forged = replace(res, messages=(res.messages[0].with_text(res.messages[0].text + "invented"),))
    with pytest.raises(VerbatimViolation):
        forged.verify()


def test_bad_input_is_a_clear_error_or_pass_through() -> None:
    comp = Compactor(ratio=0.5, mode="lexical")
    assert comp.compact("").text == ""
    assert comp.compact([]).messages == ()
    with pytest.raises(TextEncodingError):
        comp.compact(b"\xff\xfe broken")
    assert comp.compact(b"plain").text == "plain"
    with pytest.raises(MessageFormatError):
        comp.compact([{"role": "wizard", "content": "x"}])
    with pytest.raises(MessageFormatError):
        comp.compact([{"content": "no role"}])
    with pytest.raises(InputError):
        comp.compact(42)  # type: ignore[arg-type]
    binary = "\x00\x01\x02" + "x" * 2000
    res = comp.compact(binary, query="x")
    res.verify()
    assert res.text in ("", binary) or "omitted" in res.text
    huge = "word " * 5000  # one unit, no sentence boundary
    res = comp.compact(huge, query="word")
    res.verify()
    with pytest.raises(ConfigError):
        Compactor(ratio=1.5)
    with pytest.raises(ConfigError):
        Compactor(marker="{nope}")


def test_system_and_latest_user_turn_stay_whole() -> None:
    msgs = _session([("read_log", LOG)] * 1 + [("ls", "a\nb")] * 3)
    res = Compactor(ratio=0.9, mode="lexical").compact(msgs)
    res.verify()
    assert res.messages[0] == msgs[0] and res.messages[-1] == msgs[-1]
    assert (
        res.messages[1] == msgs[1]
    )  # the first user turn equals the latest text... still a user turn, but old
    assert res.tokens_after < res.tokens_before


def test_dedupe_keeps_latest_copy() -> None:
    msgs = _session([("read_log", LOG), ("ls", "x"), ("read_log", LOG), ("ls", "y"), ("ls", "z")])
    res = Compactor(ratio=None, mode="lexical", keep_last_turns=1).compact(msgs)
    res.verify()
    first = res.messages[3]
    assert "duplicate of message 7" in first.text and LOG not in first.text
    assert res.messages[7].text == LOG
    assert res.dropped["dedupe"] > 0


def test_near_duplicate_is_detected() -> None:
    changed = LOG.replace("batch 273", "batch 274")
    msgs = _session([("read_log", LOG), ("read_log", changed), ("ls", "y"), ("ls", "z")])
    res = Compactor(ratio=None, mode="lexical", keep_last_turns=1).compact(msgs)
    assert "near-duplicate" in res.messages[3].text


def test_observation_masking_names_the_tool_and_respects_exclusions() -> None:
    other = LOG.replace("INFO", "WARN")
    msgs = _session([("read_log", LOG), ("grep", other), ("ls", "short"), ("cat", "a\nb"), ("cat", "c\nd")])
    res = Compactor(ratio=None, mask_observations_after=2, exclude_tools={"grep"}, mode="lexical").compact(
        msgs
    )
    res.verify()
    assert "output of read_log" in res.messages[3].text
    assert res.messages[5].text == other  # excluded tool
    assert res.messages[7].text == "short"  # below the size floor
    assert res.dropped["mask"] > 0


def test_incremental_prefix_is_byte_stable_and_reuses_decisions() -> None:
    comp = Compactor(ratio=0.6, mode="lexical", incremental=True, keep_last_turns=1, min_tokens=10)
    bodies: list[tuple[str, str]] = []
    previous = None
    for turn in range(8):
        bodies.append(("read_log", LOG.replace("worker", f"worker{turn}")))
        res = comp.compact(_session(bodies))
        res.verify()
        if previous is not None:
            # every message decided in the previous call is byte-identical now
            stable = [m.to_openai() for m in previous.messages[: len(previous.messages) - 5]]
            assert [m.to_openai() for m in res.messages[: len(stable)]] == stable
        previous = res
    assert previous is not None and previous.reduction > 0.3
    # the same history again is answered from frozen decisions: identical result
    again = comp.compact(_session(bodies))
    assert again.messages == previous.messages
    # a rewritten history (compacted copies sent back) still lines up with the frozen prefix
    rewritten = [*list(previous.messages[:-1]), Message(role="user", content="and now?")]
    res = comp.compact(rewritten)
    res.verify()
    assert res.messages[:5] == previous.messages[:5]


def test_request_in_request_out() -> None:
    req = Request(
        messages=tuple(_session([("read_log", LOG)] * 3)), model="gpt-4o", params={"temperature": 0}
    )
    res = Compactor(ratio=0.5, mode="lexical").compact(req)
    assert res.request is not None and res.request.params == {"temperature": 0}
    assert res.request.messages == res.messages


def test_code_and_json_segmentation() -> None:
    code = "import os\n\n\ndef alpha(x):\n    return x + 1\n\n\nclass Beta:\n    def gamma(self):\n        return 2\n"
    units = segment(code)
    kinds = [(u.kind, u.text.strip().split("\n")[0]) for u in units]
    assert ("signature", "def alpha(x):") in kinds and ("signature", "def gamma(self):") in kinds
    assert ("code", "return x + 1") in kinds
    data = json.dumps({"name": "x", "items": [1, 2, 3], "nested": {"a": 1}})
    members = [u.text for u in segment(data) if u.kind == "json_member"]
    assert members[0].startswith('"name"') and len(members) == 3
    res = Compactor(ratio=0.4, mode="lexical", marker=None).compact(code, query="alpha")
    res.verify()
    assert "def alpha(x):" in res.text
    assert res.kept_lines(0) and all(1 <= a <= b <= 11 for a, b in res.kept_lines(0))


def test_cli_text_and_messages(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    args = parser.parse_args(["compact", str(doc), "--query", "Eiffel tower 1889", "--ratio", "0.6"])
    assert args.func(args) == 0
    out = capsys.readouterr()
    assert "1889" in out.out and "tokens" in out.err
    msgs = tmp_path / "msgs.json"
    msgs.write_text(json.dumps([m.to_openai() for m in _session([("read_log", LOG)] * 2)]))
    args = parser.parse_args(["compact", str(msgs), "--ratio", "0.5", "--json"])
    assert args.func(args) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["stats"]["tokens_after"] < body["stats"]["tokens_before"]
    assert len(body["messages"]) == 7
    args = parser.parse_args(["compact", str(tmp_path / "missing.txt")])
    assert args.func(args) == 2
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff\xfe\x00")
    args = parser.parse_args(["compact", str(bad)])
    assert args.func(args) == 2


def test_incremental_freezes_an_agent_loop_after_its_only_user_turn() -> None:
    """Tool loops have one user message (the task) and then only calls and results: the frozen
    prefix must grow past the task, or incremental mode never compacts anything there."""
    comp = Compactor(ratio=0.6, mode="lexical", incremental=True, keep_last_turns=1, min_tokens=10)
    task = [
        Message(role="system", content="You are an agent."),
        Message(role="user", content="Which worker failed?"),
    ]
    msgs = list(task)
    previous = None
    for turn in range(6):
        msgs += _step(turn, "read_log", LOG.replace("worker", f"worker{turn}"))
        res = comp.compact(msgs)
        res.verify()
        if previous is not None:
            stable = [m.to_openai() for m in previous.messages[: len(previous.messages) - 2]]
            assert [m.to_openai() for m in res.messages[: len(stable)]] == stable
        previous = res
    assert previous is not None and previous.reduction > 0.2
    assert previous.messages[1].text == "Which worker failed?"  # the task itself is kept whole
