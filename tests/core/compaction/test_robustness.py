"""Compaction never breaks the caller: odd characters, slow or broken embedders, huge inputs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tokenlean.compaction import Compactor
from tokenlean.errors import ConfigError


def _chat(body: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Answer from the notes."},
        {"role": "user", "content": body},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Which topic came up most?"},
    ]


NOTES = "\n\n".join(
    f"Note {i}: the meeting discussed topic {i % 7} and budget line {i * 13}." for i in range(150)
)


class _Embedder:
    """A deterministic bag-of-characters embedder, optionally slow or broken."""

    dim = 32

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail, self.calls = delay, fail, 0

    def embed(self, texts):
        self.calls += 1
        if self.fail:
            raise RuntimeError("CUDA error: device-side assert triggered")
        time.sleep(self.delay)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for ch in t.encode("utf-8", "surrogatepass"):
                out[i, ch % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def embed_one(self, text):
        return self.embed([text])[0]


def test_lone_surrogates_with_the_real_embedder(static_embedder) -> None:
    """A truncated emoji in a tool output used to raise TypeError from the tokenizer."""
    body = "Log line with a broken emoji \ud83d here.\n\n" + NOTES + "\n\nTrailing \udc00 half."
    for embedder in (None, static_embedder):
        comp = Compactor(ratio=0.5, keep_last_turns=0, store="memory", embedder=embedder)
        res = comp.compact(_chat(body))
        res.verify()
        assert res.tokens_after < res.tokens_before and comp.stats["lexical_fallbacks"] == 0
        assert all("\ud83d" in comp.expand_omitted(o.handle) for o in res.omissions if o.policy == "mask")


def test_sentence_transformer_embeds_lone_surrogates() -> None:
    pytest.importorskip("sentence_transformers")
    from tokenlean.embeddings import get_default_embedder

    vecs = get_default_embedder().embed(["broken \ud83d emoji", "broken \ufffd emoji"])
    assert vecs.shape[0] == 2 and np.allclose(vecs[0], vecs[1], atol=1e-5)


@pytest.mark.parametrize("embedder", [_Embedder(delay=0.05), _Embedder(fail=True)], ids=["slow", "broken"])
def test_slow_or_broken_embedder_falls_back_to_lexical(embedder, caplog) -> None:
    comp = Compactor(
        ratio=0.5, keep_last_turns=0, store="memory", mode="embedding", embedder=embedder, deadline=0.2
    )
    t0 = time.monotonic()
    res = comp.compact(_chat(NOTES * 4))
    elapsed = time.monotonic() - t0
    res.verify()
    assert res.tokens_after < res.tokens_before  # still compacted, lexically
    assert comp.stats["lexical_fallbacks"] == 1 and comp.stats["pass_throughs"] == 0
    assert "lexically" in caplog.text
    assert elapsed < 0.2 + 1.0  # gave up at the deadline, not after embedding everything
    lexical = Compactor(ratio=0.5, keep_last_turns=0, store="memory", mode="lexical").compact(
        _chat(NOTES * 4)
    )
    assert [m.text for m in res.messages] == [m.text for m in lexical.messages]


def test_huge_input_passes_through_when_out_of_time(caplog) -> None:
    huge = "\n".join(f"row {i}: value {i * 7 % 1000} unit {i % 13}." for i in range(60_000))
    comp = Compactor(
        ratio=0.5, keep_last_turns=0, store="memory", mode="lexical", deadline=0.01, incremental=True
    )
    res = comp.compact(_chat(huge), session="t1")
    assert [m.text for m in res.messages] == [m["content"] for m in _chat(huge)]
    assert res.tokens_after == res.tokens_before and not res.omissions
    res.verify()
    assert comp.stats["pass_throughs"] == 1 and "passed 4 messages through" in caplog.text
    docs = comp.compact_documents([huge, "short"], query="value 7")
    assert [m.text for m in docs.messages] == [huge, "short"] and comp.stats["pass_throughs"] == 2


def test_huge_input_compacts_within_the_default_deadline_with_embeddings() -> None:
    """Auto mode on a big message embeds only its lexically best units, within the default deadline."""
    huge = "\n".join(f"row {i}: value {i * 7 % 1000} unit {i % 13}." for i in range(30_000))
    embedder = _Embedder(delay=0.01)
    comp = Compactor(ratio=0.5, keep_last_turns=0, store="memory", embedder=embedder, embed_max_tokens=4_000)
    t0 = time.monotonic()
    res = comp.compact(_chat(huge))
    assert time.monotonic() - t0 < 30 and res.tokens_after < res.tokens_before
    assert comp.stats["embedding_preselected"] == 1 and comp.stats["lexical_fallbacks"] == 0
    res.verify()
    # what was embedded is bounded by the cap, not by the input (joined sentences, 64 per call)
    assert embedder.calls * 64 < 30_000 / 2


def test_a_slow_embedder_past_the_deadline_falls_back_to_lexical_scores() -> None:
    text = "\n".join(f"row {i}: value {i * 7 % 1000} unit {i % 13}." for i in range(3_000))
    comp = Compactor(
        ratio=0.5, keep_last_turns=0, store="memory", embedder=_Embedder(delay=0.2), deadline=1.0
    )
    res = comp.compact(_chat(text))
    assert res.tokens_after < res.tokens_before and comp.stats["lexical_fallbacks"] == 1


def test_sessions_are_bounded() -> None:
    comp = Compactor(
        ratio=0.5, keep_last_turns=0, store="memory", mode="lexical", incremental=True, max_sessions=2
    )
    for s in ("a", "b", "a", "c"):
        comp.compact(_chat(NOTES), session=s)
    assert list(comp._sessions) == ["a", "c"] and comp.stats["sessions_evicted"] == 1


def test_bad_settings_are_typed_errors() -> None:
    for kw in ({"deadline": 0}, {"deadline": -1.0}, {"max_sessions": 0}):
        with pytest.raises(ConfigError):
            Compactor(**kw)


def test_an_embedding_cap_smaller_than_any_sentence_scores_lexically() -> None:
    text = "\n".join(f"row {i}: value {i * 7 % 1000} unit {i % 13}." for i in range(200))
    comp = Compactor(ratio=0.5, keep_last_turns=0, store="memory", embedder=_Embedder(), embed_max_tokens=1)
    res = comp.compact(_chat(text))
    res.verify()
    assert res.tokens_after < res.tokens_before and comp.stats["embedding_preselected"] == 1
