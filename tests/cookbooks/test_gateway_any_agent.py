"""cookbooks/gateway_any_agent: the real ``tokenlean serve`` command in front of the local model,
an agent that only knows the ``openai`` SDK run twice through it, and the gateway's report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def test_gateway_any_agent(run_cookbook: Any, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = run_cookbook("gateway_any_agent", "--json", str(out), cwd=tmp_path)
    report = json.loads(out.read_text())
    tasks = report["tasks"]
    assert set(tasks) == {"ticket-1", "ticket-2"}
    assert tasks["ticket-1"]["calls"] == tasks["ticket-2"]["calls"] == 3
    # ticket-1 asks one question twice: two model calls, each with the manual compacted
    one = tasks["ticket-1"]
    assert one["cache_hits"] == 1 and one["tokens_saved"] > 0
    # ticket-2 repeats ticket-1 word for word: all from the cache, nothing compacted or sent
    two = tasks["ticket-2"]
    assert two["cache_hits"] == 3 and two["tokens_saved"] == 0
    assert report["keys"]["anonymous"]["calls"] == 6
    assert "[cache hit" in proc.stdout and "tokenlean_llm_calls_total" in proc.stdout
