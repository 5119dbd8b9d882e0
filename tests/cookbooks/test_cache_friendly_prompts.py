"""The cache-friendly-prompts cookbook runs end to end against the local llama.cpp server."""

from __future__ import annotations

import json

import pytest


@pytest.mark.integration
def test_cookbook_finds_breakers_and_raises_the_realised_cached_share(
    local_llm, tmp_path, run_cookbook
) -> None:
    if getattr(local_llm, "log_file", None) is None:
        pytest.skip("the local server was started without a log file")
    out = tmp_path / "result.json"
    proc = run_cookbook(
        "cache_friendly_prompts",
        "--json",
        str(out),
        timeout=400,
        env={"TOKENLEAN_SERVER_LOG": str(local_llm.log_file)},
    )
    assert "realised cached share" in proc.stdout
    result = json.loads(out.read_text())
    assert set(result["breakers"]) == {"timestamp", "request_id", "per_user_data", "tool_order"}
    assert result["expected_share_after"] > result["expected_share_before"]
    before, after = result["realised_before"], result["realised_after"]
    assert before["prompt_tokens"] == after["prompt_tokens"] > 0
    # measured on the server: the fixed stream reuses far more of its prompts
    assert after["share"] > before["share"] + 0.2, (before, after)
