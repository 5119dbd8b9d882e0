"""Property tests: the invariants every compaction must keep, on generated inputs (hypothesis)."""

from __future__ import annotations

import itertools
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenlean.compaction import Compactor, segment
from tokenlean.types import Message, ToolCall

WORDS = st.text(alphabet=string.ascii_letters + "0123456789", min_size=1, max_size=9)
SENTENCE = st.builds(
    lambda ws, end: " ".join(ws).capitalize() + end,
    st.lists(WORDS, min_size=1, max_size=12),
    st.sampled_from([". ", "! ", "? ", ".\n", "\n\n", "\n- "]),
)
TEXT = st.lists(SENTENCE, min_size=1, max_size=30).map("".join)
ANY_TEXT = st.one_of(TEXT, st.text(max_size=400))
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pieces_are_subsequence(original: str, result) -> None:
    """Kept ranges are increasing, disjoint, and the output is exactly them plus markers."""
    result.verify()
    last = 0
    for a, b in result.kept[0]:
        assert last <= a < b <= len(original)
        last = b


@SETTINGS
@given(ANY_TEXT)
def test_segments_tile_the_text(text: str) -> None:
    units = segment(text)
    assert "".join(u.text for u in units) == text
    for prev, nxt in itertools.pairwise(units):
        assert prev.end == nxt.start
    for u in units:
        assert text[u.start : u.end] == u.text


@SETTINGS
@given(TEXT, st.floats(min_value=0.0, max_value=0.95), st.booleans())
def test_output_is_verbatim_ordered_subsequence(text: str, ratio: float, marker: bool) -> None:
    comp = Compactor(
        ratio=ratio, mode="lexical", marker="[… {tokens} tokens omitted · {handle} …]" if marker else None
    )
    _check_verbatim(comp, text, marker)


def _check_verbatim(comp: Compactor, text: str, marker: bool) -> None:
    res = comp.compact(text, query="alpha beta")
    _pieces_are_subsequence(text, res)
    # with markers off, the output is literally the kept ranges concatenated
    if not marker:
        assert res.text == "".join(text[a:b] for a, b in res.kept[0])
    # every omitted run can be expanded back byte for byte
    for om in res.omissions:
        a, b = om.ranges[0]
        assert comp.expand_omitted(om.handle) == text[a:b]


@SETTINGS
@given(TEXT, st.floats(min_value=0.0, max_value=0.95))
def test_budget_respected_without_protected_units(text: str, ratio: float) -> None:
    comp = Compactor(ratio=ratio, mode="lexical", marker=None, protect_defaults=False)
    res = comp.compact(text, query="alpha")
    assert res.budget is not None
    assert res.tokens_after <= max(res.budget, 0) + 1  # +1: BPE merges across a join
    assert res.budget_met or res.tokens_after <= res.budget + 1


@SETTINGS
@given(
    TEXT,
    st.sampled_from(["/srv/app/main.py", "https://example.com/x?y=1", "ERR_CONN_RESET", "E1234"]),
    st.integers(min_value=0, max_value=40),
)
def test_protected_patterns_survive(text: str, needle: str, where: int) -> None:
    sentences = text.split(". ")
    pos = where % (len(sentences) + 1)
    sentences.insert(pos, f"See {needle} for details")
    doc = ". ".join(sentences)
    res = Compactor(ratio=0.95, mode="lexical", marker=None).compact(doc, query="unrelated words")
    res.verify()
    assert needle in res.text


def _agent_history(n_steps: int, body: str) -> list[Message]:
    msgs = [
        Message(role="system", content="You are a coding agent."),
        Message(role="user", content="Fix the bug."),
    ]
    for i in range(n_steps):
        call = ToolCall(id=f"call_{i}", name="read_file", arguments=f'{{"path": "f{i}.txt"}}')
        msgs.append(Message(role="assistant", content=None, tool_calls=(call,)))
        msgs.append(Message(role="tool", tool_call_id=f"call_{i}", content=f"step {i}\n" + body))
    msgs.append(Message(role="assistant", content="Looking at the files now."))
    msgs.append(Message(role="user", content="What is in f1.txt?"))
    return msgs


@SETTINGS
@given(
    st.integers(min_value=1, max_value=8),
    TEXT,
    st.floats(min_value=0.1, max_value=0.95),
    st.one_of(st.none(), st.integers(min_value=0, max_value=4)),
)
def test_tool_pairing_never_broken(n_steps: int, body: str, ratio: float, mask: int | None) -> None:
    comp = Compactor(ratio=ratio, mode="lexical", mask_observations_after=mask, min_tokens=0)
    _check_pairing(comp, _agent_history(n_steps, body))


def _check_pairing(comp: Compactor, msgs: list[Message]) -> None:
    res = comp.compact(msgs)
    res.verify()
    out = res.messages
    assert len(out) == len(msgs)
    answered: set[str] = set()
    for m in out:
        for tc in m.tool_calls:
            answered.add(tc.id)
        if m.role == "tool":
            assert m.tool_call_id in answered, "a tool result lost the call it answers"
    # every call still has its result right after it
    for i, m in enumerate(out):
        for tc in m.tool_calls:
            assert any(x.role == "tool" and x.tool_call_id == tc.id for x in out[i + 1 :])
    assert out[0] == msgs[0] and out[-1] == msgs[-1]  # system prompt and latest user turn whole


# -- the same invariants in the embedding-scored modes (static MiniLM table: fast enough for
# property tests; "auto" picks embeddings when one is given) ------------------------------------
EMBEDDING_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.parametrize("mode", ["embedding", "auto"])
@EMBEDDING_SETTINGS
@given(text=TEXT, ratio=st.floats(min_value=0.0, max_value=0.95), marker=st.booleans())
def test_embedding_modes_output_is_verbatim(
    static_embedder: Any, mode: str, text: str, ratio: float, marker: bool
) -> None:
    comp = Compactor(
        ratio=ratio,
        mode=mode,  # type: ignore[arg-type]
        embedder=static_embedder,
        marker="[… {tokens} tokens omitted · {handle} …]" if marker else None,
    )
    _check_verbatim(comp, text, marker)


@pytest.mark.parametrize("mode", ["embedding", "auto"])
@EMBEDDING_SETTINGS
@given(
    n_steps=st.integers(min_value=1, max_value=6),
    body=TEXT,
    ratio=st.floats(min_value=0.1, max_value=0.95),
    mask=st.one_of(st.none(), st.integers(min_value=0, max_value=4)),
)
def test_embedding_modes_keep_tool_pairing(
    static_embedder: Any, mode: str, n_steps: int, body: str, ratio: float, mask: int | None
) -> None:
    comp = Compactor(
        ratio=ratio,
        mode=mode,  # type: ignore[arg-type]
        embedder=static_embedder,
        mask_observations_after=mask,
        min_tokens=0,
    )
    _check_pairing(comp, _agent_history(n_steps, body))
