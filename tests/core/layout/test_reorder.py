"""reorder: stable-first, and never anything a model could read differently."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layout_corpus import planted_stream

from tokenlean.errors import LayoutError
from tokenlean.layout import BreakerKind, PromptLayout, analyze, canonical_tools, reorder, verify_layout
from tokenlean.types import Message, Request, ToolCall


def _tool(name: str, **props: str) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {"type": "object", "properties": {k: {"type": v} for k, v in props.items()}},
        },
    }


def test_tools_get_sorted_keys_and_name_order() -> None:
    a = _tool("zeta", b="string", a="number")
    b = {
        "function": {"parameters": {"properties": {}, "type": "object"}, "name": "alpha"},
        "type": "function",
    }
    laid = reorder({"messages": [{"role": "user", "content": "hi"}], "tools": [a, b]}).request
    assert [t["function"]["name"] for t in laid.tools] == ["alpha", "zeta"]
    assert list(laid.tools[1]["function"]["parameters"]["properties"]) == ["a", "b"]
    assert canonical_tools([b, a]) == canonical_tools([a, b])


def test_volatile_system_lines_move_to_the_new_turn_verbatim() -> None:
    system = "You are a helper.\nCurrent time: 2026-11-23T10:42:07Z\nBe brief.\nrequest id: req_12ab34cd56ef"
    body = {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ]
    }
    out = reorder(body)
    msgs = out.request.messages
    assert msgs[0].content == "You are a helper.\nBe brief."
    assert msgs[1].content == "first question" and msgs[2].content == "first answer"
    assert (
        msgs[3].content == "Current time: 2026-11-23T10:42:07Z\nrequest id: req_12ab34cd56ef\nsecond question"
    )
    assert [m.kind for m in out.moves] == ["volatile_moved"]
    assert out.stable_prefix_tokens_after > out.stable_prefix_tokens_before
    # system_tail keeps the value in the system prompt, at its end
    tail = reorder(body, PromptLayout(volatile_placement="system_tail")).request.messages
    assert tail[0].content.endswith("Current time: 2026-11-23T10:42:07Z\nrequest id: req_12ab34cd56ef")
    assert tail[3].content == "second question"


def test_per_user_lines_go_to_the_conversation_start_so_history_stays_stable() -> None:
    stream = planted_stream([BreakerKind.PER_USER_DATA], seed=5, n_requests=9)
    layout = PromptLayout.fit(stream.requests)
    later = [reorder(r, layout).request for r in stream.requests[6:]]
    earlier = [reorder(r, layout).request for r in stream.requests[3:6]]
    for before, after in zip(earlier, later, strict=True):  # same user, next turn
        start = next(i for i, m in enumerate(after.messages) if m.role == "user" and not m.name)
        assert "Customer name:" in after.messages[start].text
        # everything up to the new turn is re-sent byte-identical
        n = len(before.messages) - 1
        assert after.messages[:n] == before.messages[:n]


def test_shuffled_few_shot_gets_one_order() -> None:
    stream = planted_stream([BreakerKind.FEW_SHOT_ORDER], seed=2, n_requests=6)
    layout = PromptLayout.fit(stream.requests)
    assert len(layout.few_shot_order) == 3
    blocks = {tuple(m.text for m in reorder(r, layout).request.messages[1:7]) for r in stream.requests}
    assert len(blocks) == 1
    assert len({tuple(m["content"] for m in r["messages"][1:7]) for r in stream.requests}) > 1


def test_layout_learned_from_a_stream_fixes_what_analyze_reported() -> None:
    stream = planted_stream(
        [BreakerKind.TIMESTAMP, BreakerKind.JSON_KEY_ORDER, BreakerKind.TOOL_KEY_ORDER], seed=4, n_requests=6
    )
    report = analyze(stream.requests)
    laid = [reorder(r, report.layout).request.to_openai() for r in stream.requests]
    again = analyze(laid, layout=report.layout)
    # Tools, system prompt and examples are now stable; what is left is the cost of the fix:
    # the previous turn's question is re-sent without the clock line it carried as the new turn.
    assert [b for b in again.observed() if b.section in ("tools", "system", "few_shot")] == []
    for b in again.observed():
        prev = Request.from_openai(laid[b.request_index - 1])
        assert b.message_index == len(prev.messages) - 1
    assert again.reused_prefix_tokens > report.reused_prefix_tokens


def test_verify_layout_rejects_broken_pairing() -> None:
    call = ToolCall("c1", "lookup", "{}")
    original = Request(
        [
            Message("user", "q"),
            Message("assistant", None, tool_calls=(call,)),
            Message("tool", "result", tool_call_id="c1"),
            Message("user", "next"),
        ]
    )
    swapped = original.with_messages([original.messages[i] for i in (0, 2, 1, 3)])
    try:
        verify_layout(original, swapped)
    except LayoutError:
        pass
    else:  # pragma: no cover
        raise AssertionError("a swapped tool call / result pair must be rejected")


# -- property: reorder never changes pairing or history order --------------------------------------
_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_volatile = st.sampled_from(
    [
        "Current time: 2026-11-23T10:42:07Z",
        "Session: 9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f",
        "Today is 2026-11-23",
        "plain line",
    ]
)


@st.composite
def _conversations(draw: st.DrawFn) -> Request:
    msgs: list[Message] = []
    sys_lines = draw(st.lists(st.one_of(_text, _volatile), max_size=5))
    if sys_lines or draw(st.booleans()):
        msgs.append(Message("system", "\n".join(sys_lines)))
    for _k in range(draw(st.integers(0, 3))):  # few-shot examples, marked
        msgs.append(Message("user", draw(_text), name="example_user"))
        msgs.append(Message("assistant", draw(_text), name="example_assistant"))
    calls = 0
    for _ in range(draw(st.integers(0, 5))):
        msgs.append(Message("user", draw(st.one_of(_text, _volatile))))
        if draw(st.booleans()):
            n = draw(st.integers(1, 3))
            ids = [f"call_{calls + i}" for i in range(n)]
            calls += n
            tcs = tuple(
                ToolCall(i, draw(st.sampled_from(["a", "b"])), json.dumps({"x": draw(_text)})) for i in ids
            )
            msgs.append(Message("assistant", draw(st.one_of(st.none(), _text)), tool_calls=tcs))
            for i in draw(st.permutations(ids)):
                msgs.append(Message("tool", draw(_text), tool_call_id=i))
        msgs.append(Message("assistant", draw(_text)))
    if draw(st.booleans()):
        msgs.append(Message("user", draw(_text)))
    tools = draw(
        st.lists(
            st.sampled_from([_tool("b", y="string", x="number"), _tool("a", q="string")]),
            max_size=2,
            unique_by=lambda t: t["function"]["name"],
        )
    )
    return Request(msgs, tools=tuple(tools))


def _pairing(r: Request) -> list[tuple[str, int]]:
    """For each tool result: its call id and how many messages back the issuing call sits."""
    out = []
    for i, m in enumerate(r.messages):
        if m.role == "tool":
            j = max(k for k in range(i) if any(c.id == m.tool_call_id for c in r.messages[k].tool_calls))
            out.append((m.tool_call_id or "", i - j))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_conversations(), st.sampled_from(["new_turn", "system_tail"]), st.booleans())
def test_reorder_never_changes_pairing_or_history_order(
    request: Request, placement: str, shuffle_examples: bool
) -> None:
    layout = PromptLayout(volatile_placement=placement)  # type: ignore[arg-type]
    if shuffle_examples:  # a layout that re-orders the example groups too
        layout = PromptLayout.fit([request, request], volatile_placement=placement)  # type: ignore[arg-type]
    out = reorder(request, layout)
    a, b = request.messages, out.request.messages
    assert len(a) == len(b)
    # history and new turn: same messages, same order, same tool calls, same pairing
    sec = layout.sections(request)
    tail = slice(sec.few_shot[1], None)
    assert [(m.role, m.tool_calls, m.tool_call_id, m.name) for m in a[tail]] == [
        (m.role, m.tool_calls, m.tool_call_id, m.name) for m in b[tail]
    ]
    assert _pairing(request) == _pairing(out.request)
    # only user messages may gain moved lines, and they keep their own text at the end
    for x, y in zip(a[tail], b[tail], strict=True):
        if x != y:
            assert x.role == "user" and y.text.endswith(x.text)
    # nothing is lost: every original system line is still sent somewhere
    sent = "\n".join(m.text for m in b)
    for m in a[sec.system[0] : sec.system[1]]:
        for line in m.text.splitlines():
            assert line in sent
    assert sorted(json.dumps(t, sort_keys=True) for t in request.tools) == sorted(
        json.dumps(t, sort_keys=True) for t in out.request.tools
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_conversations(), min_size=1, max_size=4))
def test_analyze_handles_any_stream_and_locations_are_valid(requests: list[Request]) -> None:
    from tokenlean.layout.canonical import message_text

    report = analyze(requests)
    assert 0 <= report.reused_prefix_tokens <= report.prompt_tokens
    assert 0 <= report.common_prefix_tokens <= report.prompt_tokens
    for b in report.breakers:
        assert 0 <= b.request_index < len(requests)
        if b.message_index is not None:
            msgs = requests[b.request_index].messages
            assert 0 <= b.message_index < len(msgs)
            assert 0 <= b.char_offset <= len(message_text(msgs[b.message_index]))
