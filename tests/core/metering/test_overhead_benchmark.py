"""benchmarks/overhead.py runs end to end (--quick) against the real local model and writes its JSON.

Only the shape and sanity of the numbers are checked here; the performance targets are the
benchmark's business (a timed assertion on a shared CI machine would be flaky, not informative).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.integration
def test_overhead_benchmark_quick(local_llm: Any, tmp_path: Path) -> None:
    pytest.importorskip("langchain_openai")
    pytest.importorskip("llama_index.llms.openai_like")
    out = tmp_path / "overhead.json"
    env = {
        **os.environ,
        "TOKENLEAN_BASE_URL": local_llm.base_url,
        "TOKENLEAN_MODEL": local_llm.model,
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--quick", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Metering overhead per LLM call" in proc.stdout
    data = json.loads(out.read_text())
    assert data["benchmark"] == "overhead" and data["quick"] is True
    for adapter in ("langchain", "llamaindex"):
        fake = data["in_process"][adapter]
        # Timings themselves are not asserted (a quick run on a shared CPU is noise); what is
        # checked is that every part was measured and the total adds them up.
        assert fake["bare_us"] > 0 and fake["metered_us"] > 0
        assert fake["deferred_build_us"] > 0  # the adapters really queued their records
        assert fake["overhead_us"] == pytest.approx(
            fake["metered_us"] - fake["bare_us"] + fake["deferred_build_us"]
        )
        rel = data["local_model"][adapter]
        assert rel["bare_call_ms_median"] > 0
        assert rel["overhead_ratio"] == pytest.approx(
            fake["overhead_us"] / (rel["bare_call_ms_median"] * 1000)
        )
    assert data["local_model"]["model"] == local_llm.model
    assert set(data["pass"]) >= {"langchain_under_50us", "langchain_under_1pct_of_local_call"}
    # OpenTelemetry export on: its own rows, measured the same way (the flush counted in).
    if importlib.util.find_spec("opentelemetry.sdk") is not None:
        assert "langchain + OTel" in proc.stdout and "llamaindex + OTel" in proc.stdout
        for adapter in ("langchain", "llamaindex"):
            otel = data["in_process"][f"{adapter}_otel"]
            assert otel["bare_us"] == data["in_process"][adapter]["bare_us"]  # same interleaved run
            assert otel["metered_us"] > 0 and otel["spans_exported"] > 0
            assert otel["overhead_us"] == pytest.approx(
                otel["metered_us"] - otel["bare_us"] + otel["deferred_build_us"]
            )
            assert otel["deferred_build_us"] >= otel["otel_flush_us"] >= 0
            assert f"{adapter}_otel_under_50us" in data["pass"]
        # The SDK's own floor, timed with no tokenlean code: span + flush + three histogram points.
        floor = data["in_process"]["otel_sdk_floor"]
        assert floor["span_attributes"] > 10 and floor["histogram_points_per_call"] == 3
        assert floor["span_with_attributes_us"] > 0 and floor["histogram_point_us"] > 0
        assert floor["sdk_floor_us"] == pytest.approx(
            floor["span_with_attributes_us"] + floor["span_flush_us"] + 3 * floor["histogram_point_us"]
        )
        assert "OTel SDK floor per call" in proc.stdout
