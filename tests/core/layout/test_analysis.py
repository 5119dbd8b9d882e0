"""The analyser finds every planted prefix breaker, says where, and nothing else."""

from __future__ import annotations

import json

import pytest
from layout_corpus import PLANTABLE, planted_corpus, planted_stream, score

from tokenlean.errors import EmptyInputError
from tokenlean.layout import BreakerKind, analyze
from tokenlean.layout.canonical import message_text
from tokenlean.types import Request


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_planted_breaker_is_found_and_nothing_else(seed: int) -> None:
    corpus = planted_corpus(seed=seed, n_requests=6, streams_per_kind=1, clean=2)
    kinds_planted = {p.kind for s in corpus for p in s.planted}
    assert kinds_planted == set(PLANTABLE)
    for stream in corpus:
        report = analyze(stream.requests)
        result = score(stream, report)
        assert not result.missed, (stream.name, result.missed)
        assert not result.false, (stream.name, [(b.kind, b.location, b.excerpt) for b in result.false])


def test_several_breakers_in_one_prompt_are_all_reported_with_locations() -> None:
    kinds = [BreakerKind.TIMESTAMP, BreakerKind.UUID, BreakerKind.REQUEST_ID, BreakerKind.PER_USER_DATA]
    stream = planted_stream(kinds, seed=7, n_requests=6)
    report = analyze(stream.requests)
    assert {b.kind for b in report.breakers} == set(kinds)
    labels = {
        BreakerKind.TIMESTAMP: "Current time: ",
        BreakerKind.UUID: "Session: ",
        BreakerKind.REQUEST_ID: "Routing: ",
    }
    for b in report.breakers:
        assert b.observed and b.message_index == 0 and b.section == "system"
        text = message_text(Request.from_openai(stream.requests[b.request_index]).messages[0])
        if b.kind in labels:
            # the offset points at the value itself, right after its label
            assert text[: b.char_offset].endswith(labels[b.kind].split(":")[0] + ": ") or text[
                b.char_offset :
            ].startswith(b.excerpt), (b, text[b.char_offset - 20 : b.char_offset + 20])
            assert text[b.char_offset : b.char_offset + len(b.excerpt)] == b.excerpt
        assert b.tokens_at_risk > 0 and b.occurrences >= 1
    # two per-user lines, one breaker each
    assert sum(b.kind is BreakerKind.PER_USER_DATA for b in report.breakers) == 2


def test_layout_makes_more_of_the_stream_reusable() -> None:
    stream = planted_stream(
        [BreakerKind.TIMESTAMP, BreakerKind.TOOL_ORDER, BreakerKind.FEW_SHOT_ORDER], seed=3, n_requests=8
    )
    report = analyze(stream.requests)
    assert report.reused_prefix_tokens_after > report.reused_prefix_tokens
    assert report.expected_gain_tokens == report.reused_prefix_tokens_after - report.reused_prefix_tokens
    assert report.cacheable_share_after > report.cacheable_share + 0.2
    # the prefix every request shares ends before the first breaker (the tool block)
    assert report.common_prefix_tokens < 20
    data = report.to_dict()
    json.dumps(data)
    assert data["by_kind"] == report.by_kind()


def test_clean_stream_reuses_its_prefix_and_reports_no_breaker() -> None:
    stream = planted_stream([], seed=11, n_requests=6)
    report = analyze(stream.requests)
    assert report.breakers == ()
    assert report.common_prefix_tokens > 300  # tools + system + examples
    assert report.cacheable_share > 0.7
    assert (
        report.reused_prefix_tokens_after >= report.reused_prefix_tokens
    )  # tool keys sorted: same or better


def test_single_request_reports_latent_breakers_by_pattern() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "system",
                "content": "You are helpful.\nToday is 2026-11-23.\nStay on topic.\nKnowledge cutoff: 2024-06-01.",
            },
            {"role": "user", "content": "hi, it's 10:42:07 UTC here"},
        ],
    }
    report = analyze(body)
    assert [(b.kind, b.message_index, b.observed) for b in report.breakers] == [(BreakerKind.DATE, 0, False)]
    assert report.breakers[0].char_offset == body["messages"][0]["content"].index("2026-11-23")
    assert report.notes and "one request" in report.notes[0]
    # stable prefix of a single request ends at its first per-request value
    assert 0 < report.common_prefix_tokens < report.prompt_tokens


def test_empty_stream_is_an_input_error() -> None:
    with pytest.raises(EmptyInputError):
        analyze([])


def test_conversations_that_open_alike_are_not_rewrites() -> None:
    system = {"role": "system", "content": "You are helpful."}

    def conv(replies: list[str], question: str) -> dict:
        msgs = [system]
        for i, r in enumerate(replies):
            msgs += [
                {"role": "user", "content": "Hi" if i == 0 else f"follow-up {r}"},
                {"role": "assistant", "content": r},
            ]
        return {"messages": [*msgs, {"role": "user", "content": question}]}

    stream = [
        conv(["Hello! How can I help?"], "Track order 1"),
        conv(
            ["Hey there, what do you need?", "Sure"], "Cancel order 2"
        ),  # another user, also opened with "Hi"
        conv(["Hello! How can I help?", "Done"], "Thanks"),
    ]
    report = analyze(stream)
    assert [b for b in report.breakers if b.kind is BreakerKind.HISTORY_REWRITE] == []
