"""Packaging contracts: a light ``import tokenlean`` and pinned public names."""

from __future__ import annotations

import json
import subprocess
import sys

import tokenlean

HEAVY = ("torch", "faiss", "sentence_transformers", "langchain", "langchain_core", "llama_index", "redis")


def test_import_tokenlean_stays_light() -> None:
    # A fresh interpreter: this test process has already imported test dependencies.
    code = (
        "import sys, json, tokenlean, tokenlean.types, tokenlean.errors, tokenlean.cli;"
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == [], f"import tokenlean pulled in {heavy}"


def test_lazy_names_resolve() -> None:
    for name in tokenlean.__all__:
        assert getattr(tokenlean, name) is not None, name


def test_unknown_attribute_is_attribute_error() -> None:
    try:
        tokenlean.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_public_names_are_pinned() -> None:
    # Changing the public surface is a decision: update this list on purpose, not by accident.
    assert tokenlean.__all__ == [
        "CachePlan", "CacheResult", "Cascade", "Compacted", "Compactor", "Decision",
        "Embedder", "HitRate", "JsonlSink", "LayoutReport", "LearnedRouter", "Ledger", "LeverEstimate",
        "LocalModelServer", "Message", "Meter", "ModelPrice", "Omission", "OmissionStore",
        "OpenAICompatibleEndpoint", "PriceTable", "ProfileReport", "Profiler", "PromptLayout",
        "ProtectedPatterns", "RedisStackServer", "ReplicaGroup", "Request", "Response", "Router",
        "RulesPolicy", "ScopeConfig", "SemanticCache", "SemanticRouter", "SentenceTransformerEmbedder",
        "StaticEmbedder", "TaskSummary", "TokenCounter", "TokenleanError", "ToolCall", "Usage", "UsageRecord",
        "VLLMEndpoint", "__version__", "compact_text", "count_messages", "count_tokens", "errors",
        "get_counter", "get_default_embedder", "get_default_meter", "get_static_embedder", "normalize_usage",
        "plan_cache_markers", "read_jsonl", "read_trace", "read_traces", "realised_hit_rate",
        "task_scope", "to_prometheus",
    ]  # fmt: skip
