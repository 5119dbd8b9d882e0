"""SemanticCache end to end with the real MiniLM embedder and the embedded faiss + SQLite backend."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tokenlean.cache import CacheResult, ScopeConfig, SemanticCache
from tokenlean.errors import ConfigError, InputError, TextEncodingError
from tokenlean.types import Message, Request, Response, ToolCall


@pytest.fixture
def cache(embedder: object) -> SemanticCache:
    return SemanticCache(embedder=embedder)


def _req(*turns: tuple[str, str], model: str = "m", **params: object) -> Request:
    """A deterministic call (temperature 0 unless ``params`` says otherwise)."""
    return Request(
        messages=tuple(Message(role=r, content=c) for r, c in turns),
        model=model,
        params={"temperature": 0, **params},
    )


def test_exact_then_semantic_hit_and_guard_miss(cache: SemanticCache) -> None:
    assert cache.store("How do I reset my password?", "Use the 'forgot password' link.")
    exact = cache.lookup("  how do I RESET my password ")
    assert exact.hit and exact.tier == "exact" and exact.text == "Use the 'forgot password' link."
    para = cache.lookup("How can I reset my password?")
    assert para.hit and para.tier == "semantic" and para.similarity is not None and para.similarity > 0.9
    neg = cache.lookup("How do I not reset my password?")
    assert not neg.hit and neg.rejected_by == "negation"
    unrelated = cache.lookup("What is the capital of France?")
    assert not unrelated and unrelated.rejected_by == "no_candidate"
    stats = cache.stats()
    assert stats["exact_hits"] == 1 and stats["semantic_hits"] == 1 and stats["rejected_by"]["negation"] == 1


def test_tenants_never_share(cache: SemanticCache) -> None:
    cache.store("What is our refund policy?", "30 days.", tenant="acme")
    assert cache.lookup("What is our refund policy?", tenant="acme").hit
    other = cache.lookup("What is our refund policy?", tenant="globex")
    assert (
        not other.hit
        and other.namespace != cache.lookup("What is our refund policy?", tenant="acme").namespace
    )
    # tenant from request metadata works the same way
    req = Request(
        messages=(Message(role="user", content="What is our refund policy?"),),
        params={"temperature": 0},
        metadata={"tenant": "globex"},
    )
    other = cache.lookup(req)
    assert not other.hit and other.rejected_by != "uncacheable"


def test_scope_model_params_system_and_tools(cache: SemanticCache) -> None:
    base = _req(("system", "You are terse."), ("user", "Define entropy."), temperature=0)
    cache.store(base, "A measure of disorder.")
    assert cache.lookup(base).hit
    assert not cache.lookup(
        _req(("system", "You are terse."), ("user", "Define entropy."), model="other", temperature=0)
    ).hit
    assert not cache.lookup(
        _req(("system", "You are verbose."), ("user", "Define entropy."), temperature=0)
    ).hit
    assert not cache.lookup(
        _req(("system", "You are terse."), ("user", "Define entropy."), temperature=0, max_tokens=5)
    ).hit
    with_tools = Request(
        messages=base.messages,
        model="m",
        params={"temperature": 0},
        tools=({"type": "function", "function": {"name": "f"}},),
    )
    assert not cache.lookup(with_tools).hit
    streamed = Request(messages=base.messages, model="m", params={"temperature": 0, "stream": True})
    assert cache.lookup(streamed).hit  # streaming does not change the answer


def test_follow_up_needs_its_conversation(embedder: object) -> None:
    cache = SemanticCache(embedder=embedder)  # default scope: whole prefix
    conv = [
        ("user", "What is diabetes?"),
        ("assistant", "A disease of blood sugar."),
        ("user", "What are its types?"),
    ]
    cache.store(
        _req(("user", "What is a cloud?"), ("assistant", "Water droplets."), ("user", "What are its types?")),
        "Cumulus, stratus.",
    )
    assert not cache.lookup(_req(*conv)).hit
    assert not cache.lookup("What are its types?", model="m").hit
    cache.store(_req(*conv), "Type 1 and type 2.")
    assert cache.lookup(_req(*conv)).text == "Type 1 and type 2."
    loose = SemanticCache(embedder=embedder, scope=ScopeConfig(context="last_user"))
    loose.store(_req(("user", "hi"), ("assistant", "hello"), ("user", "Define entropy.")), "Disorder.")
    assert loose.lookup(_req(("user", "Define entropy."))).hit
    last2 = SemanticCache(embedder=embedder, scope=ScopeConfig(context="last_n", last_n=2))
    last2.store(
        _req(("user", "old"), ("assistant", "x"), ("user", "q1"), ("assistant", "a1"), ("user", "Why?")),
        "Because.",
    )
    assert last2.lookup(
        _req(("user", "other old"), ("assistant", "y"), ("user", "q1"), ("assistant", "a1"), ("user", "Why?"))
    ).hit
    assert not last2.lookup(_req(("user", "q2"), ("assistant", "a1"), ("user", "Why?"))).hit


def test_policies_skip_errors_refusals_tools_and_temperature(cache: SemanticCache) -> None:
    hot = _req(("user", "Write a poem"), temperature=0.7)
    assert str(cache.store(hot, "Roses...").reason).startswith("temperature > 0")
    assert SemanticCache(embedder=cache.embedder, cache_temperature=True).store(hot, "Roses...").stored
    assert cache.store("Hack the bank", "I'm sorry, but I can't help with that.").reason == "refusal"
    call = Response(message=Message(role="assistant", content=None, tool_calls=(ToolCall(id="1", name="f"),)))
    assert cache.store("Call f", call).reason == "tool-call response"
    assert cache.store(
        "Broken", Response(message=Message(role="assistant", content="x"), finish_reason="error")
    ).reason
    assert cache.store("Empty", "   ").reason == "empty answer"
    assert cache.store("Broken", None).reason == "error"
    assert cache.stats()["stores"] == 0


def test_streaming_is_stored_whole_and_replayed(cache: SemanticCache) -> None:
    chunks = ["The ", "answer ", "is 42."]
    cache.store("What is the answer?", "".join(chunks), chunks=chunks)
    hit = cache.lookup("what is the answer")
    assert hit.hit and list(hit.stream()) == chunks and hit.text == "The answer is 42."


def test_response_round_trip(cache: SemanticCache) -> None:
    resp = Response.from_openai(
        {
            "id": "c1",
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
            ],
        }
    )
    cache.store("Say hi", resp)
    got = cache.lookup("Say hi").response
    assert got is not None and got.to_openai() == resp.to_openai()


def test_ttl_and_lru_eviction(embedder: object) -> None:
    ttl = SemanticCache(embedder=embedder, ttl=0.2)
    ttl.store("Define entropy.", "Disorder.")
    assert ttl.lookup("Define entropy.").hit
    time.sleep(0.25)
    assert not ttl.lookup("Define entropy.").hit
    lru = SemanticCache(embedder=embedder, max_entries=2, semantic=False)
    lru.store("q one", "1")
    lru.store("q two", "2")
    assert lru.lookup("q one").hit  # q one is now the most recently used
    lru.store("q three", "3")
    assert lru.lookup("q one").hit and lru.lookup("q three").hit and not lru.lookup("q two").hit
    lfu = SemanticCache(embedder=embedder, max_entries=2, eviction="lfu", semantic=False)
    lfu.store("a", "1")
    lfu.store("b", "2")
    for _ in range(3):
        lfu.lookup("a")
    lfu.store("c", "3")  # b: 0 hits and older than c -> evicted; a survives despite being older
    assert lfu.lookup("a").hit and not lfu.lookup("b").hit


def test_report_wrong_raises_entry_threshold(cache: SemanticCache) -> None:
    cache.store("How do I reset my password?", "Use the link.")
    hit = cache.lookup("How can I reset my password?")
    assert hit.hit and hit.tier == "semantic"
    cache.report_wrong(hit)
    again = cache.lookup("How can I reset my password?")
    assert not again.hit and again.rejected_by == "entry_threshold"
    assert cache.lookup("how do i reset my password").hit  # exact tier still fine
    exact = cache.lookup("How do I reset my password?")
    cache.report_wrong(exact)  # a wrong exact answer is deleted
    assert not cache.lookup("How do I reset my password?").hit
    with pytest.raises(InputError):
        cache.report_wrong(CacheResult(hit=False))


def test_persistence_across_restart(tmp_path: Path, embedder: object) -> None:
    path = tmp_path / "c.db"
    with SemanticCache(path, embedder=embedder) as first:
        first.store("How do I reset my password?", "Use the link.")
    second = SemanticCache(path, embedder=embedder)
    hit = second.lookup("How can I reset my password?")
    assert hit.hit and hit.tier == "semantic"
    second.close()


def test_bad_input(cache: SemanticCache) -> None:
    empty = cache.lookup("   ")
    assert not empty.hit and empty.rejected_by == "uncacheable"
    assert not cache.store("", "x").stored
    no_user = cache.lookup(Request(messages=(Message(role="system", content="s"),)))
    assert no_user.rejected_by == "uncacheable"
    with pytest.raises(TextEncodingError):
        cache.lookup(b"\xff\xfe bad")  # type: ignore[arg-type]
    with pytest.raises(TextEncodingError):
        cache.lookup("bad \udcff surrogate")
    huge = "word " * 50_000
    assert cache.store(huge, "long answer").stored
    assert cache.lookup(huge).tier == "exact"  # long prompts: exact tier only (embeddings truncate)
    assert cache.lookup(huge + " more").rejected_by == "no_candidate"
    assert not cache.lookup("Define entropy.", model="unknown-model-xyz").hit
    with pytest.raises(InputError):
        cache.lookup(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SemanticCache(guards=["nope"])


async def test_async_lookup_and_store(cache: SemanticCache) -> None:
    assert (await cache.astore("How do I reset my password?", "Use the link.")).stored
    hit = await cache.alookup("How can I reset my password?")
    assert hit.hit and hit.text == "Use the link."


def test_calibrate_reaches_target_on_held_out_pairs(embedder: object) -> None:
    # Labelled pairs made from templates: duplicates are rewordings, non-duplicates change one fact.
    topics = [
        "password",
        "invoice",
        "account",
        "subscription",
        "order",
        "refund",
        "address",
        "email",
        "plan",
        "card",
        "delivery",
        "profile",
        "team",
        "report",
        "backup",
        "license",
        "device",
        "invite",
        "payment",
        "login",
    ]
    pairs: list[tuple[str, str, int]] = []
    for t in topics:
        pairs += [
            (f"How do I change my {t}?", f"How can I change my {t}?", 1),
            (f"How do I change my {t}?", f"What are the steps to change my {t}?", 1),
            (f"How do I change my {t}?", f"How do I delete my {t}?", 0),
            (f"How do I change my {t}?", f"Why can't I change my {t}?", 0),
            (f"How do I change my {t}?", f"How do I change my {t} in 2 days?", 0),
            (f"Where is my {t}?", f"Where can I find my {t}?", 1),
            (f"Where is my {t}?", f"Where is my old {t}?", 0),
        ]
    cache = SemanticCache(embedder=embedder)
    stats = cache.calibrate(pairs, max_false_hit_rate=0.05, folds=3)
    assert stats["false_hit_rate"] <= 0.05 and stats["true_hit_rate"] > 0
    assert cache.scorer.max_false_hit_rate == 0.05
    from tokenlean.errors import CalibrationError

    with pytest.raises(CalibrationError):
        cache.calibrate(pairs[:10], max_false_hit_rate=0.01)
