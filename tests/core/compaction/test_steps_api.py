"""The step API: composing built-in steps, writing one's own, ``keep=`` beside ``ratio=``."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tokenlean.compaction import (
    Compactor,
    Dedupe,
    ExcludeTools,
    KeepLastTurns,
    KeepLastUser,
    KeepShort,
    KeepSystem,
    MaskObservations,
    SelectUnits,
    State,
    Step,
    compact_text,
    default_steps,
)
from tokenlean.compaction.cli import register_cli
from tokenlean.errors import ConfigError
from tokenlean.types import Message, ToolCall

DOC = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by the company of "
    "Gustave Eiffel. Construction finished in 1889 for the World's Fair. Bananas are rich in potassium. "
    "The Amazon is the largest rainforest on Earth. Tea originated in China. "
) * 4
LOG = "\n".join(f"2024-05-01 12:00:{i:02d} INFO worker {i} processed batch {i * 7} fine" for i in range(40))
THOUGHT = " ".join(
    f"I considered option {i} for the parser and rejected it because of case {i}." for i in range(12)
)


def _session(turns: int = 6) -> list[Message]:
    msgs = [
        Message(role="system", content="You are a coding agent."),
        Message(role="user", content="Fix the parser."),
    ]
    for i in range(turns):
        call = ToolCall(id=f"c{i}", name="read_log" if i % 2 else "run_tests", arguments=json.dumps({"i": i}))
        msgs.append(Message(role="assistant", content=THOUGHT + f" Step {i}.", tool_calls=(call,)))
        msgs.append(Message(role="tool", tool_call_id=f"c{i}", content=LOG + f"\nrun {i}"))
    msgs.append(Message(role="user", content="Why did batch 21 fail?"))
    return msgs


class MaskOldReasoning:
    """The custom step of ``steps.py``'s docstring."""

    def __init__(self, after: int = 6) -> None:
        self.after = after
        self.live_turns = after

    def apply(self, state: State) -> None:
        if not state.chat:
            return
        for i in state.candidates():
            if state.messages[i].role == "assistant" and state.ages[i] >= self.after:
                state.replace_whole(i, "reasoning", "earlier reasoning")


def test_builtin_steps_are_steps() -> None:
    steps = [*default_steps(mask_observations_after=2, exclude_tools=["x"]), MaskOldReasoning()]
    assert all(isinstance(s, Step) for s in steps)
    names = [type(s).__name__ for s in default_steps(mask_observations_after=2, exclude_tools=["x"])]
    assert names == [
        "KeepSystem",
        "KeepLastUser",
        "KeepLastTurns",
        "KeepShort",
        "ExcludeTools",
        "Dedupe",
        "MaskObservations",
        "SelectUnits",
    ]
    assert [type(s).__name__ for s in default_steps(keep_system=False, dedupe=False)] == [
        "KeepLastUser",
        "KeepLastTurns",
        "KeepShort",
        "SelectUnits",
    ]


def test_a_custom_step_composes_with_the_built_in_ones() -> None:
    msgs = _session()
    comp = Compactor(
        steps=[KeepSystem(), KeepLastUser(), KeepLastTurns(1), MaskOldReasoning(after=3)],
        store="memory",
    )
    res = comp.compact(msgs)
    res.verify()
    masked = [o for o in res.omissions if o.policy == "reasoning"]
    assert masked and all(msgs[o.message].role == "assistant" for o in masked)
    assert res.dropped["reasoning"] == sum(o.tokens for o in masked)
    assert all("earlier reasoning" in res.messages[o.message].text for o in masked)
    assert comp.expand_omitted(masked[0].marker) == msgs[masked[0].message].text
    # tool calls survive a masked assistant message; tool outputs are untouched (no such step)
    assert all(res.messages[o.message].tool_calls == msgs[o.message].tool_calls for o in masked)
    assert all(res.messages[i] == m for i, m in enumerate(msgs) if m.role == "tool")
    assert res.budget is None and res.budget_met  # no budgeted step


def test_a_custom_step_is_frozen_by_incremental_mode_after_its_live_turns() -> None:
    msgs = _session(8)
    comp = Compactor(
        steps=[MaskOldReasoning(after=3), *default_steps(mode="lexical")], incremental=True, store="memory"
    )
    first = comp.compact(msgs[:-3])
    second = comp.compact(msgs)
    n = len(comp._sessions["default"].frozen)
    assert 0 < n < len(msgs)
    assert second.messages[: len(first.messages) - 6] == first.messages[: len(first.messages) - 6]
    second.verify()


def test_pins_hold_against_later_steps() -> None:
    msgs = _session()
    res = Compactor(
        steps=[ExcludeTools(["read_log"]), KeepShort(0), MaskObservations(after=0)], store="memory"
    ).compact(msgs)
    tools = [i for i, m in enumerate(msgs) if m.role == "tool"]
    kept = [i for i in tools if res.messages[i] == msgs[i]]
    masked = [o.message for o in res.omissions if o.policy == "mask"]
    assert kept and masked and set(kept) | set(masked) == set(tools)
    assert all("read_log" in json.dumps(msgs[i - 1].to_openai()) for i in kept)


def test_dedupe_step_alone() -> None:
    msgs = [
        Message(role="user", content="Read the log."),
        Message(role="assistant", content=LOG),
        Message(role="assistant", content=LOG),
        Message(role="user", content="Which batch failed?"),
    ]
    res = Compactor(steps=[Dedupe()], store="memory").compact(msgs)
    assert [o.policy for o in res.omissions] == ["dedupe"] and res.omissions[0].message == 1


def test_keep_is_the_share_kept_and_ratio_the_share_removed() -> None:
    by_ratio = Compactor(ratio=0.75, mode="lexical", store="memory").compact(
        DOC, query="When was it finished?"
    )
    by_keep = Compactor(keep=0.25, mode="lexical", store="memory").compact(DOC, query="When was it finished?")
    assert by_keep.messages == by_ratio.messages
    assert by_keep.budget == by_ratio.budget == math.floor(by_ratio.tokens_before * 0.25)
    assert compact_text(DOC, "When?", keep=0.25, mode="lexical", store="memory").text == by_keep.text
    step = SelectUnits(keep=0.25)
    assert step.keep == 0.25 and step.ratio == 0.75
    assert SelectUnits(ratio=0.9).keep == pytest.approx(0.1)
    assert SelectUnits().ratio == 0.5 and SelectUnits(ratio=None).budget(1000) is None
    piped = Compactor(steps=[SelectUnits(keep=0.25, mode="lexical")], store="memory")
    assert piped.compact_documents([DOC], query="When was it finished?").messages == by_keep.messages


@pytest.mark.parametrize(
    "make",
    [
        lambda: Compactor(ratio=0.5, keep=0.5, store="memory"),
        lambda: SelectUnits(ratio=0.9, keep=0.1),
        lambda: default_steps(ratio=0.2, keep=0.8),
        lambda: compact_text("some text", ratio=0.5, keep=0.5, store="memory"),
        lambda: Compactor(keep=0.0, store="memory"),
        lambda: Compactor(keep=1.5, store="memory"),
        lambda: Compactor(keep=math.nan, store="memory"),
        lambda: SelectUnits(keep="0.5"),  # type: ignore[arg-type]
    ],
)
def test_ratio_and_keep_together_or_out_of_range_are_config_errors(make: Any) -> None:
    with pytest.raises(ConfigError):
        make()


def test_keep_with_no_ratio_given_explicitly_as_none_is_fine() -> None:
    assert SelectUnits(ratio=None, keep=0.4).keep == 0.4


@pytest.mark.parametrize(
    "make",
    [
        lambda: Compactor(steps=[SelectUnits()], ratio=0.9, store="memory"),
        lambda: Compactor(steps=[SelectUnits()], mask_observations_after=3, store="memory"),
        lambda: Compactor(steps=[SelectUnits()], exclude_tools=["bash"], store="memory"),
        lambda: Compactor(steps=[object()], store="memory"),  # type: ignore[list-item]
        lambda: Compactor(steps="KeepSystem", store="memory"),  # type: ignore[arg-type]
        lambda: KeepLastTurns(-1),
        lambda: KeepShort(1.5),  # type: ignore[arg-type]
        lambda: MaskObservations(math.nan),  # type: ignore[arg-type]
        lambda: Dedupe(near_duplicate=2),
        lambda: ExcludeTools("bash"),
        lambda: SelectUnits(mode="fast"),  # type: ignore[arg-type]
        lambda: SelectUnits(protect=["("]),
    ],
)
def test_bad_steps_and_policy_options_beside_steps_are_config_errors(make: Any) -> None:
    with pytest.raises(ConfigError):
        make()


def test_services_and_default_valued_options_go_with_steps() -> None:
    comp = Compactor(steps=[KeepSystem()], keep_last_turns=2, exclude_tools=[], store="memory", deadline=None)
    assert comp.mode == "lexical" and comp.embedder is None
    msgs = _session()
    assert comp.compact(msgs).messages == tuple(msgs)


def test_documents_skip_message_level_steps() -> None:
    comp = Compactor(
        steps=[KeepLastUser(), KeepLastTurns(5), SelectUnits(keep=0.3, mode="lexical")], store="memory"
    )
    res = comp.compact_documents([DOC, LOG], query="When was the tower finished?")
    res.verify()
    assert res.tokens_after < res.tokens_before and res.messages[1].text != LOG


def test_cli_takes_keep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    args = parser.parse_args(["compact", str(doc), "--query", "Eiffel 1889", "--keep", "0.3", "--json"])
    assert args.func(args) == 0
    stats = json.loads(capsys.readouterr().out)["stats"]
    assert stats["budget"] == math.floor(stats["tokens_before"] * 0.3)
    args = parser.parse_args(["compact", str(doc), "--ratio", "0.5", "--keep", "0.3"])
    assert args.func(args) == 2
    assert "not both" in capsys.readouterr().err
