"""Compact a LangChain agent's context: the model sees a verbatim, shortened history.

Run: ``python cookbooks/compact_langchain_agent/main.py`` (starts the local llama.cpp server) or
point it at any OpenAI-compatible server with ``TOKENLEAN_BASE_URL`` / ``TOKENLEAN_MODEL``.
"""

from __future__ import annotations

from langchain.agents import create_agent
from langchain.agents.middleware.types import AgentMiddleware
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from langchain_tokenlean.compaction import TokenleanCompactionMiddleware
from tokenlean.tokens import count_tokens

# A long tool observation from earlier in the session: 60 log lines, one of them matters.
LOG = "\n".join(
    f"2026-11-23 09:{i // 60:02d}:{i % 60:02d} INFO worker-{i % 7} job={1000 + i} status=ok took={i % 13 + 2}ms"
    for i in range(60)
).replace("job=1042 status=ok", "job=1042 status=FAILED error=E4012 disk quota exceeded on /var/spool/jobs")


@tool
def read_log(name: str) -> str:
    """Read a service log by name."""
    return LOG


class ShowWhatTheModelSees(AgentMiddleware):
    """Prints the size of each model call's input (runs inside the compaction middleware)."""

    def wrap_model_call(self, request, handler):
        tokens = sum(count_tokens(str(m.content)) for m in request.messages)
        print(f"model call: {len(request.messages)} messages, {tokens} content tokens")
        return handler(request)


def run(base_url: str, model_name: str) -> None:
    model = ChatOpenAI(
        base_url=base_url,
        api_key="local",
        model=model_name,
        temperature=0,
        extra_body={"max_tokens": 32},
        max_retries=0,
        timeout=120,
    )
    compaction = TokenleanCompactionMiddleware(
        ratio=0.8,  # remove 80% of the compactable history
        keep_last_turns=1,  # the current turn is never touched
        mode="lexical",  # "auto" uses sentence-transformers when installed
        expose_expand_tool=True,  # the agent can fetch omitted text back by handle
    )
    agent = create_agent(
        model,
        tools=[read_log],
        system_prompt="You are an SRE assistant. Answer briefly.",
        middleware=[compaction, ShowWhatTheModelSees()],
    )
    history = [
        HumanMessage("Check the jobs log for failures."),
        AIMessage(
            "Reading the log.", tool_calls=[{"id": "c1", "name": "read_log", "args": {"name": "jobs"}}]
        ),
        ToolMessage(LOG, tool_call_id="c1", name="read_log"),
        AIMessage("One job failed; the rest are fine."),
        HumanMessage("Which job failed, with which error code, and where is the disk full?"),
    ]
    state = agent.invoke({"messages": history})
    r = compaction.last_result
    assert r is not None
    r.verify()  # every kept byte is the original's, in order
    print(f"history tokens: {r.tokens_before} -> {r.tokens_after} ({r.reduction:.0%} fewer)")
    print("what the model saw of the log:")
    print(r.messages[3].text if r.messages[3].role == "tool" else r.messages[2].text)
    print(f"stored history still complete: {state['messages'][2].content == LOG}")
    print(f"answer: {state['messages'][-1].content!r}")


def main() -> None:
    from tokenlean.server import model_endpoint  # $TOKENLEAN_BASE_URL, or a local llama.cpp server

    with model_endpoint() as (base_url, model):
        run(base_url, model)


if __name__ == "__main__":
    main()
