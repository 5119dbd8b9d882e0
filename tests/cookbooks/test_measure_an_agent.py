"""cookbooks/measure_an_agent runs end to end against the local model and leaves a readable ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.mark.integration
def test_measure_an_agent(run_cookbook: Any, tmp_path: Path) -> None:
    pytest.importorskip("langchain")
    pytest.importorskip("langchain_openai")
    from tokenlean.metering import Ledger

    ledger_path = tmp_path / "ledger.jsonl"
    proc = run_cookbook(
        "measure_an_agent", "--ledger", str(ledger_path), cwd=tmp_path, env={"COLUMNS": "200"}
    )
    ledger = Ledger.from_jsonl(ledger_path)
    tasks = ledger.tasks()
    assert list(tasks) == ["calibrate", "weather-paris", "weather-rome"]
    for name in ("weather-paris", "weather-rome"):
        s = tasks[name]
        assert s.calls >= 1 and s.input_tokens > 0 and s.output_tokens > 0
        assert s.cost is not None and s.cost > 0  # priced from GPU time via measured tokens/s
        assert f"{name}: {s.calls} calls, {s.input_tokens} in / {s.output_tokens} out tokens" in proc.stdout
    assert tasks["calibrate"].cost is None  # recorded before the self-hosted price was set
    assert "TOTAL" in proc.stdout and "gpt-4o-mini list prices" in proc.stdout
