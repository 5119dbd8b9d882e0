"""Measure: what every LLM call costs in tokens, money and time, per task and overall.

``Meter.record`` prices a call (``PriceTable``) and stores a ``UsageRecord`` in a ``Ledger``;
the ledger summarises per task (``TaskSummary``: tokens, cost, p50/p95 TTFT, tokens/s, cached
share). ``JsonlSink`` / ``read_jsonl`` keep a crash-safe log, ``to_prometheus`` exposes metrics.
The LangChain and LlamaIndex adapters only turn framework events into ``Meter.record`` calls.
"""

from __future__ import annotations

from tokenlean.metering.exporters import JsonlSink, read_jsonl, to_prometheus, write_prometheus
from tokenlean.metering.ledger import UNTRACKED, Ledger, Meter, TaskHandle, get_default_meter
from tokenlean.metering.prices import ModelPrice, PriceTable, normalize_model_name
from tokenlean.metering.records import UNKNOWN_MODEL, UsageRecord, current_task_id, task_scope
from tokenlean.metering.summary import TaskSummary, percentile, summarize

__all__ = [
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
