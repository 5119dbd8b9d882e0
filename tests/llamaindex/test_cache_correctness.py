"""Issue 13 (LlamaIndex): ``TokenleanCachedLLM``'s key is the whole call, through one lossless converter.

LlamaIndex's own ``MockLLM`` where the point is the key; the local llama.cpp server where the point is
real generation parameters (per-call ``max_tokens``, the default sampling temperature).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.base.llms.types import ImageBlock, TextBlock, ToolCallBlock
from llama_index.core.llms import ChatMessage, MockLLM

from llama_index.llms.tokenlean import TokenleanCachedLLM
from llama_index.llms.tokenlean.convert import message_to_core, messages_to_core, with_text
from llama_index.memory.tokenlean import TokenleanCompactedHistoryBlock
from tokenlean.cache import SemanticCache
from tokenlean.cache.scope import scope_of
from tokenlean.types import Request


def _hit(resp: Any) -> bool:
    return bool(resp.additional_kwargs["tokenlean_cache"]["hit"])


@pytest.fixture
def cached() -> TokenleanCachedLLM:
    # MockLLM has no temperature: the user declares it deterministic, visibly
    return TokenleanCachedLLM(MockLLM(), SemanticCache(semantic=False, assume_deterministic=True))


def _image(data: bytes | None = None, url: str | None = None) -> list[ChatMessage]:
    image = ImageBlock(image=data) if data is not None else ImageBlock(url=url)
    return [ChatMessage(role="user", blocks=[TextBlock(text="What is in this picture?"), image])]


def test_a_different_image_is_a_different_request(cached: TokenleanCachedLLM) -> None:
    assert not _hit(cached.chat(_image(b"\x89PNG cat")))
    assert _hit(cached.chat(_image(b"\x89PNG cat")))
    assert not _hit(cached.chat(_image(b"\x89PNG dog")))
    assert not _hit(cached.chat(_image(url="https://example.org/cat.png")))
    assert not _hit(cached.chat(_image(url="https://example.org/dog.png")))
    assert not _hit(cached.chat([ChatMessage(role="user", content="What is in this picture?")]))


def _tool_history(city: str, as_block: bool) -> list[ChatMessage]:
    if as_block:
        call = ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id="c1", tool_name="weather", tool_kwargs={"city": city})],
        )
    else:
        call = ChatMessage(
            role="assistant",
            content="",
            additional_kwargs={
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": f'{{"city": "{city}"}}'},
                    }
                ]
            },
        )
    return [
        ChatMessage(role="user", content="What's the weather?"),
        call,
        ChatMessage(role="tool", content="sunny", additional_kwargs={"tool_call_id": "c1"}),
        ChatMessage(role="user", content="Should I take an umbrella?"),
    ]


@pytest.mark.parametrize("as_block", [False, True])
def test_tool_call_arguments_are_part_of_the_key(cached: TokenleanCachedLLM, as_block: bool) -> None:
    assert not _hit(cached.chat(_tool_history("Paris", as_block)))
    assert _hit(cached.chat(_tool_history("Paris", as_block)))
    assert not _hit(cached.chat(_tool_history("Rome", as_block)))


def test_per_call_arguments_are_part_of_the_key(cached: TokenleanCachedLLM) -> None:
    q = [ChatMessage(role="user", content="Name a fruit.")]
    assert not _hit(cached.chat(q, max_tokens=3))
    assert _hit(cached.chat(q, max_tokens=3))
    assert not _hit(cached.chat(q, max_tokens=500))
    assert not _hit(cached.chat(q, temperature=0))
    assert _hit(cached.chat(q, temperature=0))
    assert not _hit(cached.chat(q, temperature=1.0))
    assert not _hit(cached.chat(q, temperature=1.0)), "an explicit 1.0 samples: never stored"
    assert not _hit(cached.complete("Name a fruit.", max_tokens=3))
    assert _hit(cached.complete("Name a fruit.", max_tokens=3))
    assert not _hit(cached.complete("Name a fruit.", max_tokens=4))

    async def both() -> tuple[Any, Any]:
        return await cached.achat(q, seed=1), await cached.achat(q, seed=2)

    one, two = asyncio.run(both())
    assert not _hit(one) and not _hit(two)


def test_unkeyable_call_argument_is_not_cached(
    cached: TokenleanCachedLLM, caplog: pytest.LogCaptureFixture
) -> None:
    q = [ChatMessage(role="user", content="Name a fruit.")]
    with caplog.at_level("WARNING", logger="tokenlean.llamaindex.cache"):
        cached.chat(q, sampler=lambda x: x)
        second = cached.chat(q, sampler=lambda x: x)
    assert not _hit(second) and cached.cache.stats()["stores"] == 0
    assert sum("cannot key on" in r.getMessage() for r in caplog.records) == 1


def test_wrapped_llm_settings_are_part_of_the_key() -> None:
    cache = SemanticCache(semantic=False, assume_deterministic=True)
    q = [ChatMessage(role="user", content="Name a fruit.")]
    TokenleanCachedLLM(MockLLM(max_tokens=5), cache).chat(q)
    assert _hit(TokenleanCachedLLM(MockLLM(max_tokens=5), cache).chat(q))
    assert not _hit(TokenleanCachedLLM(MockLLM(max_tokens=6), cache).chat(q))
    assert not _hit(TokenleanCachedLLM(MockLLM(max_tokens=5, system_prompt="Be rude."), cache).chat(q))


def test_one_converter_for_every_adapter() -> None:
    """Cache, router and memory read messages the same lossless way."""
    from llama_index.llms.tokenlean import router

    msgs = [*_image(b"cat"), ChatMessage(role="tool", content="ok", additional_kwargs={"tool_call_id": "t9"})]
    core = messages_to_core(msgs)
    assert router._core(msgs).messages == tuple(core)
    assert core[0].is_multimodal and core[1].tool_call_id == "t9"
    extra = message_to_core(ChatMessage(role="user", content="hi", additional_kwargs={"lang": "fr"}))
    plain = message_to_core(ChatMessage(role="user", content="hi"))
    assert scope_of(Request((extra,))).namespace != scope_of(Request((plain,))).namespace


def test_memory_block_keeps_images_and_kwargs_when_it_compacts() -> None:
    from tests.llamaindex.test_compaction import PASSAGES

    long_text = " ".join(PASSAGES)
    picture = ChatMessage(role="user", blocks=[TextBlock(text=long_text), ImageBlock(image=b"png-bytes")])
    notes = [ChatMessage(role="user", content=p, additional_kwargs={"note": "kept"}) for p in PASSAGES]
    block = TokenleanCompactedHistoryBlock(ratio=0.6)
    asyncio.run(block.aput([picture, *notes]))
    out = asyncio.run(block.aget([ChatMessage(role="user", content="How tall is the Eiffel Tower?")]))
    assert len(out) == 1 + len(notes)
    assert any(isinstance(b, ImageBlock) for b in out[0].blocks), "the image survives"
    assert sum(len(m.content or "") for m in out[1:]) < len(long_text), "text-only history is compacted"
    assert all(m.additional_kwargs == {"note": "kept"} for m in out[1:])
    rewritten = with_text(picture, "short")
    assert [type(b) for b in rewritten.blocks] == [TextBlock, ImageBlock] and rewritten.content == "short"


@pytest.mark.integration
def test_real_server_default_temperature_and_truncation(local_openai_like: Any) -> None:
    # OpenAILike samples at temperature 0.1 unless told otherwise: nothing is stored
    sampled = TokenleanCachedLLM(
        local_openai_like(temperature=None, max_tokens=64), SemanticCache(semantic=False)
    )
    q = [ChatMessage(role="user", content="Name the largest planet.")]
    sampled.chat(q)
    assert not _hit(sampled.chat(q)) and sampled.cache.stats()["stores"] == 0
    story = [ChatMessage(role="user", content="Write a long story about Jupiter.")]
    cut = TokenleanCachedLLM(local_openai_like(max_tokens=3), SemanticCache(semantic=False))
    short = cut.chat(story)
    assert cut.last_result is not None and not cut.last_result.hit
    assert cut.cache.stats()["stores"] == 0, "a truncated answer is never stored"
    assert not _hit(cut.chat(story))
    full = TokenleanCachedLLM(local_openai_like(max_tokens=400), cut.cache).chat(story)
    assert not _hit(full) and len(full.message.content or "") > len(short.message.content or "")
