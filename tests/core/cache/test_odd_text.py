"""An answer already paid for is never lost to its own characters: lone surrogates in answers
(stored and replayed identical) and queries (a typed error), on the embedded and the Redis backend."""

from __future__ import annotations

import pytest

from tokenlean.cache import RedisBackend, SemanticCache
from tokenlean.errors import TextEncodingError
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
    # a query that cannot be keyed is a typed error (the framework adapters turn it into a
    # pass-through), never a UnicodeEncodeError
    bad = _call("broken \ud800 question")
    with pytest.raises(TextEncodingError):
        cache.lookup(bad)
    with pytest.raises(TextEncodingError):
        cache.store(bad, resp)


def test_embedded_backend(tmp_path) -> None:
    _check(SemanticCache(str(tmp_path / "c.db"), semantic=False))


@pytest.mark.integration
def test_redis_backend(redis_stack: str) -> None:
    backend = RedisBackend(redis_stack, prefix="odd:")
    try:
        _check(SemanticCache(backend, semantic=False))
    finally:
        backend.clear()
