"""The cache key is persistent: the same request must keep the same namespace and exact key.

Stored entries (SQLite files, Redis indexes) are found by these hashes, so a change to what goes
into the key, or to how it is serialised, orphans every existing entry. The values below were
computed before the key moved to ``tokenlean.cache.scope`` (issue 19); a change that breaks them
must be deliberate.
"""

from __future__ import annotations

import pytest

from tokenlean.cache import ScopeConfig, normalize_text, scope_of
from tokenlean.cache.scope import exact_key
from tokenlean.types import Message, Request, ToolCall

_REQUEST = Request(
    messages=(
        Message(role="system", content="You are a  helpful assistant."),
        Message(role="user", content="What is DNS?"),
        Message(role="assistant", content="It maps names to addresses."),
        Message(
            role="user",
            content="Today is 2026-12-05.\nWhat are its record types?",
            name="ana",
            extra={"k": 1},
        ),
        Message(
            role="assistant",
            content=None,
            tool_calls=(ToolCall(id="c1", name="lookup", arguments='{"q": "dns"}'),),
        ),
        Message(role="tool", content="A, AAAA, MX", tool_call_id="c1"),
    ),
    model="gpt-4o-mini",
    params={"temperature": 0, "max_tokens": 200, "stream": True},
    tools=({"type": "function", "function": {"name": "lookup", "parameters": {}}},),
)


@pytest.mark.parametrize(
    ("config", "namespace"),
    [
        (ScopeConfig(), "3ac9ab2e12061a7c50db16b2233ef00c"),
        (ScopeConfig(context="last_user"), "13f5e590da23878926d1804397642df0"),
        (ScopeConfig(context="last_n", last_n=1), "6d9af4a175d90a578e4cf96370f70aee"),
        (ScopeConfig(volatile="ignore"), "8bbb496c8ac35d63e57ebbf323655187"),
    ],
)
def test_known_request_keeps_its_namespace(config: ScopeConfig, namespace: str) -> None:
    scope = scope_of(_REQUEST, config, tenant="acme")
    assert scope.namespace == namespace
    assert scope.query == "What are its record types?"
    assert scope.tenant == "acme"
    assert exact_key(scope.query) == "0129b28f7e5880bf7fea749c2dd21db2"


def test_plain_text_keeps_its_namespace_and_exact_key() -> None:
    scope = scope_of(Request(messages=(Message(role="user", content="  What is ＡＩ?  "),)))
    assert scope.namespace == "7d80a7d3dd88c9066da78f43ff5575ce"
    assert scope.tenant == "default"
    assert exact_key(scope.query) == "5c342b4baa9d72806f37eee743043bba"
    assert exact_key(scope.query) == exact_key("what is ai")
    assert normalize_text(scope.query) == "what is ai"
