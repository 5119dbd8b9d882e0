"""The cache key: everything that decides whether two requests share a cached answer.

A cached answer is served to a request only when both requests have the same *namespace* and
their query texts either have the same *exact key* or pass the semantic tier (guards and scorer,
which only ever compare entries of one namespace). This module holds the whole key:

- :func:`scope_of` splits a request into its namespace (a hash of tenant, model, sampling
  parameters, tools, system prompt, the conversation around the last user turn and its volatile
  lines, per :class:`ScopeConfig`) and its query text (the last user turn, volatile lines removed);
- :func:`split_volatile` decides which leading lines of that turn are per-request values (a clock,
  a request id) that are matched exactly rather than semantically;
- :func:`normalize_text` and :func:`exact_key` decide which query texts are the same request.

It is one module because a mistake here is a wrong answer served to another user, or another
conversation, and no guard downstream can catch it: a field left out of the namespace merges
requests that must stay apart. Keeping every ingredient of the key in one file makes that
reviewable in one read. The hashes are persistent: stored entries (SQLite files, Redis indexes)
are found by them, so any change to what goes in, or how it is serialised, orphans every existing
entry (``tests/core/cache/test_scope.py`` pins known keys).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenlean.errors import ConfigError, EmptyInputError, InputError, TextEncodingError
from tokenlean.layout.patterns import is_volatile_line
from tokenlean.types import Message, Request

__all__ = [
    "IGNORED_PARAMS",
    "Scope",
    "ScopeConfig",
    "as_request",
    "exact_key",
    "normalize_text",
    "scope_of",
    "split_volatile",
]

#: Request keys that do not change the answer and so are not part of the scope.
IGNORED_PARAMS = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "timeout", "extra_headers", "service_tier"}
)

_WS = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n\r.?!,;:…\"'`"


def normalize_text(text: str) -> str:
    """The exact-tier key text: NFKC unicode folding, case folding, collapsed whitespace.

    Edge punctuation is dropped too ("What is X?" and "what is x" are the same request), but nothing
    inside the text, so numbers, quotes and code keep their meaning.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _WS.sub(" ", folded).strip(_EDGE_PUNCT)


def _h(obj: object) -> str:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def exact_key(query: str) -> str:
    """The exact-tier key of a query text: the hash of its normalised form."""
    return _h(normalize_text(query))


@dataclass(frozen=True, slots=True)
class ScopeConfig:
    """Which parts of a request must match for a cached answer to be served.

    ``context``: ``"last_user"`` (only the last user turn matters: FAQ-style bots), ``"last_n"``
    (the ``last_n`` messages before it must match too) or ``"prefix"`` (the whole conversation
    before it; the default, because a follow-up such as "What are its types?" means nothing without
    it). Messages after the last user turn (tool calls and results) are always part of the scope.
    Under ``"prefix"`` every conversation turn is a namespace of its own; the embedded backend keeps
    only its ``max_shards`` most recently used namespaces in memory (the rest load from the store
    when needed) and counts the ones it drops in ``stats()["backend"]["shard_evictions"]``.

    ``volatile``: what to do with per-request lines (a clock, a request id, "today is ...") at the
    start of the last user turn, where the layout lever moves them out of the system prompt.
    ``"scope"`` (default) matches them exactly, as part of the namespace, and keeps them out of the
    text that is embedded and guarded: the question is compared semantically, the clock exactly,
    so a date line lets repeats hit all day while a per-second clock makes every request distinct
    (the cache cannot know that an answer does not depend on the time). ``"ignore"`` leaves them
    out of the key altogether: only for bots whose answers never depend on such values.
    """

    context: str = "prefix"
    last_n: int = 2
    ignored_params: frozenset[str] = IGNORED_PARAMS
    volatile: str = "scope"

    def __post_init__(self) -> None:
        if self.context not in {"last_user", "last_n", "prefix"}:
            raise ConfigError(f"context must be 'last_user', 'last_n' or 'prefix', got {self.context!r}")
        if self.last_n < 0:
            raise ConfigError("last_n must be >= 0")
        if self.volatile not in {"scope", "ignore"}:
            raise ConfigError(f"volatile must be 'scope' or 'ignore', got {self.volatile!r}")


@dataclass(frozen=True, slots=True)
class Scope:
    """A request as the cache keys it: the namespace searched, the query text compared, the tenant."""

    namespace: str
    query: str
    tenant: str


def _message_key(m: Message) -> list[Any]:
    content: Any = normalize_text(m.content) if isinstance(m.content, str) else m.content
    return [m.role, content, [tc.to_openai() for tc in m.tool_calls], m.tool_call_id, m.name, dict(m.extra)]


def _check_text(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TextEncodingError(f"query is not valid UTF-8 text: {exc}") from exc
    return text


def split_volatile(text: str) -> tuple[str, str]:
    """``text``'s leading lines that carry per-request values, and the rest.

    The layout lever moves clock, id and current-date lines from the system prompt to the start of
    the new turn; they are context, not the question. Nothing is split off when no question would
    remain.
    """
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].strip() and is_volatile_line(lines[i]):
        i += 1
    if i == 0 or not "".join(lines[i:]).strip():
        return "", text
    return "".join(lines[:i]), "".join(lines[i:])


def as_request(query: Request | str | Sequence[Message | Mapping[str, Any]], model: str | None) -> Request:
    """``query`` as the request the cache keys: a str is one user message, a list the messages."""
    if isinstance(query, Request):
        return query
    if isinstance(query, bytes):
        try:
            query = query.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextEncodingError(f"query bytes are not UTF-8: {exc}") from exc
    if isinstance(query, str):
        return Request(messages=(Message(role="user", content=query),), model=model)
    if isinstance(query, Sequence):
        return Request(messages=tuple(query), model=model)  # type: ignore[arg-type]
    raise InputError(f"lookup takes a Request, a str or a message list, got {type(query).__name__}")


def scope_of(request: Request, config: ScopeConfig = ScopeConfig(), tenant: str | None = None) -> Scope:
    """The namespace and query text of ``request`` under ``config``."""
    if tenant is not None and not isinstance(tenant, str):
        # A tenant is an isolation boundary: 5 and "5", or an object whose repr changes per
        # process, must not silently become namespaces of their own.
        raise InputError(f"tenant must be a string or None, got {type(tenant).__name__}")
    msgs = request.messages
    last = max((i for i, m in enumerate(msgs) if m.role == "user"), default=None)
    if last is None:
        raise EmptyInputError("the request has no user message to cache on")
    user = msgs[last]
    query = _check_text(user.text)
    if not query.strip():
        raise EmptyInputError("the last user message is empty")
    volatile, query = split_volatile(query)
    if config.volatile == "ignore":
        volatile = ""
    system = [_message_key(m) for m in msgs if m.role in ("system", "developer")]
    before = [m for m in msgs[:last] if m.role not in ("system", "developer")]
    if config.context == "last_user":
        before = []
    elif config.context == "last_n":
        before = before[-config.last_n :] if config.last_n else []
    after = msgs[last + 1 :]
    non_text = [p for p in user.content if p.get("type") != "text"] if isinstance(user.content, tuple) else []
    params = {k: v for k, v in request.params.items() if k not in config.ignored_params}
    who = tenant if tenant is not None else (request.tenant or "default")
    namespace = _h(
        {
            "tenant": who,
            "model": request.model or "",
            "params": params,
            "tools": list(request.tools),
            "system": system,
            "context": [_message_key(m) for m in before],
            "after": [_message_key(m) for m in after],
            "parts": non_text,
            "user": [user.name, dict(user.extra)],
            "volatile": volatile,
            "mode": config.context,
        }
    )
    return Scope(namespace=namespace, query=query, tenant=who)
