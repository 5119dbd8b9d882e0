"""An answer already paid for is never lost to its own characters: lone surrogates in answers and
queries, on the embedded and the Redis backend."""

from __future__ import annotations

import pytest

from tokenlean.cache import RedisBackend, SemanticCache
from tokenlean.types import Message, Request, Response

ANSWER = "Half an emoji at the cut: \ud83d and a stray \udc00 — ünïcødé stays."


def _call(text: str) -> Request:
    return Request(messages=(Message(role="user", content=text),), model="m", params={"temperature": 0})


def _check(cache: SemanticCache) -> None:
    assert cache.store("What did the stream end with?", ANSWER, chunks=["Half an emoji", ANSWER[13:]]).stored
    hit = cache.lookup("What did the stream end with?")
    assert hit.hit and hit.text == ANSWER and "".join(hit.entry.chunks) == ANSWER
    resp = Response(Message(role="assistant", content=ANSWER), model="m", finish_reason="stop")
    assert cache.store(_call("And as a model call?"), resp).stored
    assert cache.lookup(_call("And as a model call?")).text == ANSWER
    # a query that cannot be keyed is a miss and a skipped store, never an exception in the chain
    bad = _call("broken \ud800 question")
    assert not cache.lookup(bad).hit and cache.lookup(bad).rejected_by == "uncacheable"
    assert not cache.store(bad, resp).stored


def test_embedded_backend(tmp_path) -> None:
    _check(SemanticCache(str(tmp_path / "c.db"), semantic=False))


@pytest.mark.integration
def test_redis_backend(redis_stack: str) -> None:
    backend = RedisBackend(redis_stack, prefix="odd:")
    try:
        _check(SemanticCache(backend, semantic=False))
    finally:
        backend.clear()
