"""The metering package's public names are pinned, and importing it stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import tokenlean.metering

PINNED = [
    "UNKNOWN_MODEL",
    "UNTRACKED",
    "JsonlSink",
    "Ledger",
    "Meter",
    "ModelPrice",
    "PriceTable",
    "TaskHandle",
    "TaskSummary",
    "UsageRecord",
    "current_task_id",
    "get_default_meter",
    "normalize_model_name",
    "percentile",
    "read_jsonl",
    "summarize",
    "task_scope",
    "to_prometheus",
    "write_prometheus",
]


def test_all_is_pinned_and_resolves() -> None:
    assert tokenlean.metering.__all__ == PINNED
    for name in PINNED:
        assert getattr(tokenlean.metering, name) is not None


def test_import_metering_pulls_in_no_framework() -> None:
    code = (
        "import sys, json, tokenlean.metering, tokenlean.metering.cli; print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy = [
        m
        for m in json.loads(out.stdout)
        if m.split(".")[0] in {"torch", "numpy", "langchain_core", "llama_index", "rich"}
    ]
    assert heavy == []
