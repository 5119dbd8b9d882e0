"""LangChain adapter: a real agent (create_agent + ChatOpenAI on the local llama.cpp server) with
TokenleanCompactionMiddleware on; compact_messages in both modes; the expand_omitted tool."""

from __future__ import annotations

import subprocess
import sys

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_tokenlean.compaction import (
    TokenleanCompactionMiddleware,
    compact_messages,
    expand_omitted_tool,
)
from tokenlean.compaction import Compactor, MemoryOmissionStore
from tokenlean.compaction.omissions import HANDLE_PATTERN
from tokenlean.errors import ConfigError

LOG = "\n".join(
    f"2024-05-01 12:00:{i:02d} INFO worker-{i} finished job {i * 7} in {i + 3} ms; queue depth {40 - i}"
    for i in range(40)
)


def _history() -> list:
    return [
        HumanMessage("Read the worker log and tell me which worker finished job 91.", id="h1"),
        AIMessage(
            "Reading the log.",
            tool_calls=[{"id": "call_1", "name": "read_log", "args": {"name": "workers"}}],
            id="a1",
        ),
        ToolMessage(LOG, tool_call_id="call_1", name="read_log", id="t1"),
        AIMessage("The log lists forty workers; job 91 was finished by worker-13.", id="a2"),
        HumanMessage("Thanks. Which worker finished job 91, and how long did it take?", id="h2"),
    ]


def test_compact_messages_dual_mode() -> None:
    msgs = _history()
    out = compact_messages(msgs, ratio=0.7, keep_last_turns=1, mode="lexical")
    assert len(out) == len(msgs)
    assert out[0] is msgs[0] and out[-1] is msgs[-1]
    assert len(out[2].content) < len(LOG) and "worker-13 finished job 91" in out[2].content
    assert out[2].tool_call_id == "call_1" and out[2].id == "t1"
    assert out[1].tool_calls == msgs[1].tool_calls  # the call stays paired with its result
    runnable = compact_messages(ratio=0.7, keep_last_turns=1, mode="lexical")
    assert runnable.invoke(msgs)[2].content == out[2].content


def test_expand_tool_returns_omitted_text() -> None:
    comp = Compactor(ratio=0.8, keep_last_turns=1, mode="lexical")
    out = compact_messages(_history(), compactor=comp)
    marker_text = out[2].content
    assert "om-" in marker_text
    handle = HANDLE_PATTERN.search(marker_text).group()
    assert len(handle) == 3 + 32  # 128-bit handles
    tool = expand_omitted_tool(comp)
    restored = tool.invoke({"handle": handle})
    assert restored and restored in LOG
    assert tool.invoke({"handle": "om-" + "f" * 32}).startswith("error:")


def test_rewritten_history_expands_in_a_new_middleware_and_a_new_process(tmp_path) -> None:
    """rewrite_history keeps only markers in the checkpoint: their text must outlive the compactor."""
    store = tmp_path / "omissions.sqlite3"
    first = TokenleanCompactionMiddleware(
        ratio=0.7, keep_last_turns=1, mode="lexical", rewrite_history=True, store=store
    )
    update = first.before_model({"messages": _history()}, None)
    assert update is not None
    rewritten = update["messages"][1:]
    handles = [h for m in rewritten for h in HANDLE_PATTERN.findall(str(m.content))]
    assert handles
    originals = {m.id: m.content for m in _history()}
    # a new middleware (a restart of the app) reads every omission back, through the agent's tool
    tool = TokenleanCompactionMiddleware(
        ratio=0.7, rewrite_history=True, expose_expand_tool=True, store=store
    ).tools[0]
    for m in rewritten:
        for h in HANDLE_PATTERN.findall(str(m.content)):
            text = tool.invoke({"handle": h})
            assert not text.startswith("error:") and text in originals[m.id]
    # and so does another process
    code = (
        "import sys; from tokenlean.compaction import Compactor\n"
        "c = Compactor(store=sys.argv[1])\n"
        "print('\\x00'.join(c.expand_omitted(h) for h in sys.argv[2:]), end='')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(store), *handles], capture_output=True, text=True, check=True
    ).stdout
    assert out.split("\x00") == [first.compactor.expand_omitted(h) for h in handles]


def test_rewrite_history_refuses_a_volatile_store() -> None:
    with pytest.raises(ConfigError, match="durable"):
        TokenleanCompactionMiddleware(ratio=0.5, rewrite_history=True, store="memory")
    with pytest.raises(ConfigError):
        TokenleanCompactionMiddleware(compactor=Compactor(store=MemoryOmissionStore()), rewrite_history=True)
    assert (
        TokenleanCompactionMiddleware(ratio=0.5, store="memory").compactor.store.durable is False
    )  # a view: fine


def test_bad_messages_pass_through() -> None:
    odd = [ToolMessage("orphan result", tool_call_id="")]  # no id: tokenlean refuses, chain survives
    assert compact_messages(odd, ratio=0.5)[0].content == "orphan result"


@pytest.mark.integration
def test_real_agent_sees_compacted_history_and_state_keeps_everything(local_chat_model) -> None:
    from langchain.agents import create_agent
    from langchain.agents.middleware.types import AgentMiddleware
    from langchain_core.tools import tool

    seen: list[list] = []

    class Recorder(AgentMiddleware):
        def wrap_model_call(self, request, handler):
            seen.append(list(request.messages))
            return handler(request)

    @tool
    def read_log(name: str) -> str:
        """Read a log file by name."""
        return LOG

    model = local_chat_model(max_retries=0, timeout=120)
    compaction = TokenleanCompactionMiddleware(
        ratio=0.7, keep_last_turns=1, mode="lexical", expose_expand_tool=True
    )
    agent = create_agent(
        model,
        tools=[read_log],
        system_prompt="You answer questions about logs briefly.",
        middleware=[compaction, Recorder()],
    )
    history = _history()
    state = agent.invoke({"messages": history})
    assert seen, "the model was never called"
    sent = seen[0]
    sent_tool = next(m for m in sent if isinstance(m, ToolMessage))
    assert len(sent_tool.content) < len(LOG) * 0.6  # the model saw a compacted observation
    assert "worker-13" in sent_tool.content  # ...that still answers the question
    assert (
        compaction.last_result is not None
        and compaction.last_result.tokens_after < compaction.last_result.tokens_before
    )
    # the graph state keeps the full, original history
    stored = state["messages"]
    assert [m.content for m in stored[: len(history)]] == [m.content for m in history]
    assert isinstance(stored[-1], AIMessage)
    assert "expand_omitted" in {t.name for t in compaction.tools}


@pytest.mark.integration
async def test_real_agent_async_and_rewrite_history(local_chat_model) -> None:
    from langchain.agents import create_agent

    model = local_chat_model(max_retries=0, timeout=120)
    compaction = TokenleanCompactionMiddleware(
        ratio=0.7, keep_last_turns=1, mode="lexical", rewrite_history=True
    )
    agent = create_agent(model, tools=[], middleware=[compaction])
    history = [SystemMessage("Be brief."), *_history()]
    state = await agent.ainvoke({"messages": history})
    stored = state["messages"]
    tool_msg = next(m for m in stored if isinstance(m, ToolMessage))
    assert len(tool_msg.content) < len(LOG)  # stored history was rewritten in before_model
    assert tool_msg.response_metadata.get("tokenlean_compacted") is True
    assert stored[-2].content == history[-1].content


def test_lone_surrogate_does_not_kill_an_agent_run() -> None:
    """A truncated emoji in a tool output once made auto compaction raise TypeError mid-run."""
    pytest.importorskip("sentence_transformers")
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    seen: list[list] = []

    class _Model(GenericFakeChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(list(messages))
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    model = _Model(messages=iter([AIMessage("worker-13")]))
    compaction = TokenleanCompactionMiddleware(
        ratio=0.7, keep_last_turns=1, store="memory"
    )  # auto mode: embeddings
    history = _history()
    history[2] = ToolMessage(LOG + "\nbroken emoji: \ud83d", tool_call_id="call_1", name="read_log", id="t1")
    state = create_agent(model, tools=[], middleware=[compaction]).invoke({"messages": history})
    assert state["messages"][-1].content == "worker-13"
    assert (
        compaction.last_result is not None
        and compaction.last_result.tokens_after < compaction.last_result.tokens_before
    )
    assert len(seen[0][2].content) < len(history[2].content)  # the model saw the compacted tool output


def test_compaction_as_a_context_edit_in_langchains_own_middleware() -> None:
    """TokenleanCompactionEdit runs inside LangChain's ContextEditingMiddleware, after ClearToolUsesEdit."""
    from langchain.agents import create_agent
    from langchain.agents.middleware import ClearToolUsesEdit, ContextEditingMiddleware
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    from langchain_tokenlean import TokenleanCompactionEdit

    seen: list[list] = []

    class _Model(GenericFakeChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(list(messages))
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    edit = TokenleanCompactionEdit(ratio=0.7, keep_last_turns=1, mode="lexical", store="memory")
    editing = ContextEditingMiddleware(edits=[ClearToolUsesEdit(trigger=10**9), edit])
    history = _history()
    state = create_agent(
        _Model(messages=iter([AIMessage("worker-13")])), tools=[], middleware=[editing]
    ).invoke({"messages": history})
    sent_tool = next(m for m in seen[0] if isinstance(m, ToolMessage))
    assert len(sent_tool.content) < len(LOG) * 0.6 and "worker-13 finished job 91" in sent_tool.content
    assert sent_tool.tool_call_id == "call_1"  # still paired with its call
    handle = HANDLE_PATTERN.search(sent_tool.content).group()
    assert edit.compactor.expand_omitted(handle) in LOG  # the omitted text is recoverable
    assert [m.content for m in state["messages"][: len(history)]] == [m.content for m in history]

    # below the trigger the edit leaves the messages alone; a bad option is a typed error
    untouched = list(history)
    TokenleanCompactionEdit(trigger=10**9, ratio=0.7, mode="lexical").apply(
        untouched, count_tokens=lambda m: 100
    )
    assert untouched == history
    with pytest.raises(ConfigError):
        TokenleanCompactionEdit(trigger=-1)


def test_keep_is_the_share_kept_and_ratio_the_share_removed() -> None:
    msgs = _history()
    by_ratio = compact_messages(msgs, ratio=0.7, keep_last_turns=1, mode="lexical")
    by_keep = compact_messages(msgs, keep=0.3, keep_last_turns=1, mode="lexical")
    assert [m.content for m in by_keep] == [m.content for m in by_ratio]
    assert sum(len(m.content) for m in by_keep) < sum(len(m.content) for m in msgs)
    with pytest.raises(ConfigError):
        compact_messages(ratio=0.7, keep=0.3).invoke(msgs)
