"""The cache-friendly-prompts cookbook runs end to end against the local llama.cpp server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cookbooks" / "cache_friendly_prompts" / "main.py"


@pytest.mark.integration
def test_cookbook_finds_breakers_and_raises_the_realised_cached_share(local_llm, tmp_path) -> None:
    if getattr(local_llm, "log_file", None) is None:
        pytest.skip("the local server was started without a log file")
    out = tmp_path / "result.json"
    env = {
        **os.environ,
        "TOKENLEAN_BASE_URL": local_llm.base_url,
        "TOKENLEAN_MODEL": local_llm.model,
        "TOKENLEAN_SERVER_LOG": str(local_llm.log_file),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=400, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "realised cached share" in proc.stdout
    result = json.loads(out.read_text())
    assert set(result["breakers"]) == {"timestamp", "request_id", "per_user_data", "tool_order"}
    assert result["expected_share_after"] > result["expected_share_before"]
    before, after = result["realised_before"], result["realised_after"]
    assert before["prompt_tokens"] == after["prompt_tokens"] > 0
    # measured on the server: the fixed stream reuses far more of its prompts
    assert after["share"] > before["share"] + 0.2, (before, after)
