"""Realised hit rate from usage blocks of every provider shape, and from a real llama.cpp log."""

from __future__ import annotations

import pytest

from tokenlean.errors import UsageFormatError
from tokenlean.layout import read_llamacpp_prefix_reuse, realised_hit_rate
from tokenlean.types import Usage


def test_hit_rate_over_provider_shapes() -> None:
    usages = [
        {"prompt_tokens": 2000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 1536}},
        {"usage": {"prompt_tokens": 1000, "completion_tokens": 5}},  # a whole response body
        {
            "input_tokens": 50,
            "output_tokens": 7,
            "cache_read_input_tokens": 900,
            "cache_creation_input_tokens": 50,
        },
        Usage(input_tokens=1000, output_tokens=1, cached_input_tokens=500),
    ]
    hr = realised_hit_rate(usages)
    assert hr.requests == 4 and hr.requests_with_hit == 3
    assert hr.input_tokens == 2000 + 1000 + 1000 + 1000
    assert hr.cached_tokens == 1536 + 900 + 500
    assert hr.cache_write_tokens == 50
    assert hr.rate == pytest.approx(2936 / 5000)
    assert hr.to_dict()["rate"] == round(2936 / 5000, 4)


def test_cached_counts_from_elsewhere_and_errors() -> None:
    hr = realised_hit_rate([{"prompt_tokens": 100, "completion_tokens": 1}] * 2, cached_tokens=[0, 150])
    assert hr.cached_tokens == 100 and hr.requests_with_hit == 1
    with pytest.raises(UsageFormatError):
        realised_hit_rate([{"prompt_tokens": 1}], cached_tokens=[1, 2])
    with pytest.raises(UsageFormatError):
        realised_hit_rate([{"nothing": 1}])
    assert realised_hit_rate([]).rate == 0.0


def test_llamacpp_log_lines(tmp_path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "llama_perf_context_print: prompt eval time =  10.0 ms /   202 tokens (...)\n"
        "Llama.generate: 191 prefix-match hit, remaining 11 prompt tokens to eval\n"
        "llama_perf_context_print: prompt eval time =  1.0 ms /    11 tokens (...)\n"
        "Llama.generate: full prompt already cached, skipping reset\n"
        "llama_perf_context_print: prompt eval time =  0.0 ms /     0 tokens (...)\n"
        "Llama.generate: 5 prefix-match hit, remaining 3 prompt tokens to eval\n"  # unfinished call
    )
    calls, offset = read_llamacpp_prefix_reuse(log)
    assert [(c.reused_tokens, c.evaluated_tokens, c.full_hit) for c in calls] == [
        (0, 202, False),
        (191, 11, False),
        (0, 0, True),
    ]
    assert calls[2].cached_of(202) == 202 and calls[1].cached_of(100) == 100
    with log.open("a") as fh:
        fh.write("llama_perf_context_print: prompt eval time =  1.0 ms /     3 tokens (...)\n")
    more, _ = read_llamacpp_prefix_reuse(log, offset=offset)
    assert [(c.reused_tokens, c.evaluated_tokens) for c in more] == [(5, 3)]


@pytest.mark.integration
def test_real_llamacpp_server_reports_prefix_reuse(local_llm) -> None:
    import httpx

    if getattr(local_llm, "log_file", None) is None:
        pytest.skip("the local server was started without a log file")
    _, offset = read_llamacpp_prefix_reuse(local_llm.log_file)
    system = "You are the support assistant of ACME Home. " * 15
    usages = []
    for q in ("Where is my order?", "Can I return shoes?"):
        r = httpx.post(
            f"{local_llm.base_url}/chat/completions",
            json={
                "model": local_llm.model,
                "max_tokens": 4,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}],
            },
            timeout=120,
        )
        usages.append(r.json()["usage"])
    import time

    for _ in range(20):  # the log line may trail the HTTP answer by a moment
        calls, _ = read_llamacpp_prefix_reuse(local_llm.log_file, offset=offset)
        if len(calls) >= 2:
            break
        time.sleep(0.1)
    assert len(calls) == 2
    second = calls[1].cached_of(usages[1]["prompt_tokens"])
    assert second >= 100  # the shared system prompt was reused from the KV cache
    hr = realised_hit_rate(
        usages, cached_tokens=[c.cached_of(u["prompt_tokens"]) for c, u in zip(calls, usages, strict=True)]
    )
    assert hr.cached_tokens >= second and 0 < hr.rate < 1
