"""``tokenlean demo``: the grader and the references (fast), and ``--quick`` end to end (slow)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest


def test_every_step_has_a_reference_its_own_answer_passes_and_a_wrong_answer_fails() -> None:
    from tokenlean.demo.grade import grade
    from tokenlean.demo_data import build_workload

    for quick in (False, True):
        steps = build_workload(quick=quick)
        for step in steps:
            ref = step.reference
            assert ref.facts or ref.commands, step
            assert grade(ref.answer, ref), (step.task_id, ref.answer)
            assert not grade("Please write to us by email.", ref), (step.task_id, ref)
    assert len(build_workload()) == 18


def test_grader_reads_facts_near_misses_and_agent_commands() -> None:
    from tokenlean.demo.grade import first_command, grade
    from tokenlean.demo_data import Reference

    rag = Reference("35 days", facts=(("35 days", "35 day"),))
    assert grade("Daily snapshots are kept for 35 days on Pro [1].", rag)
    assert grade("A 35-day retention.", rag)
    assert not grade("They are kept for 135 days.", rag)  # words, not substrings
    assert not grade("14 days.", rag)

    no_30 = Reference("No: only within 14 days.", facts=(("14 days",),), forbidden=("yes",))
    assert grade("Refunds are only given within 14 days of purchase.", no_30)
    assert not grade("Yes, within 14 days of purchase.", no_30)

    agent = Reference("run_tests tests/t.py", commands=("run_tests tests/t.py", "open src/x.py"))
    assert first_command("Reproduce first.\n`run_tests tests/t.py`") == "run_tests tests/t.py"
    assert grade("Read it.\nopen src/x.py", agent)
    assert not grade("Read it.\nopen src/x.py:10:", agent)
    assert not grade("edit src/x.py 'a' 'b'", agent)
    assert not grade("I would run the tests.", agent)


def test_tables_show_correct_before_and_after_and_the_estimate_comparison() -> None:
    from rich.console import Console

    from tokenlean.demo.report import correct_cell, estimate_table, html_section, rich_tables

    row = {
        "task": "t", "tokens_before": 10, "tokens_after": 5, "cost_before": "0.01", "cost_after": "0.005",
        "ttft_p50_before_s": 0.1, "ttft_p50_after_s": 0.2, "tokens_per_s_before": 10.0,
        "tokens_per_s_after": 12.0, "cache_hits": 1, "calls": 3, "routes_after": {"weak": 2},
        "escalations": 0, "correct_before": 2, "correct_after": 1, "same_answers": 1, "answers": 3,
    }  # fmt: skip
    totals = {
        **row,
        "task": "all tasks",
        "hit_rate": 1 / 3,
        "prefix_reuse_before": None,
        "prefix_reuse_after": None,
    }
    assert correct_cell(row) == "2/3 → 1/3"
    estimates = [
        {"lever": "semantic-cache", "estimated_cost_saved": "0.004", "estimated_tokens_saved": 5,
         "estimated_calls": 1, "applied_cost_saved": "0.002", "applied_tokens_saved": 4, "applied_calls": 1,
         "difference": "0.002", "error": 1.0, "basis": "baseline cost of the calls the cache answered"},
    ]  # fmt: skip
    console = Console(width=200, record=True)
    for t in [*rich_tables([row], totals), estimate_table(estimates)]:
        console.print(t)
    text = console.export_text()
    for label in ("correct answers", "2/3 → 1/3", "worded as baseline", "profiler estimate", "+100%"):
        assert label in text, label
    html = html_section([row], totals, ["n"], estimates)
    assert "correct before" in html and "correct after" in html and 'id="estimate-vs-applied"' in html


@pytest.mark.integration
@pytest.mark.slow
def test_demo_quick_prints_before_after_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], local_model_file: Path
) -> None:
    from tokenlean.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    for label in ("baseline vs every lever on", "tokens per task", "cost per task", "TTFT p50", "tokens/s",
                  "cache hit rate", "routing mix", "correct answers", "worded as baseline", "correct",
                  "profiler estimate", "Report:"):  # fmt: skip
        assert label in stdout, label
    assert str((out / "report.html").resolve()) in stdout.replace("\n", "")

    result = json.loads((out / "demo_result.json").read_text())
    total = result["measured"]["total"]
    assert total["tokens_after"] < total["tokens_before"]
    assert Decimal(total["cost_after"]) < Decimal(total["cost_before"])
    assert total["cache_hits"] >= 1  # the support questions repeat
    assert total["routes_after"].get("weak", 0) >= 1
    assert {t["task"] for t in result["measured"]["tasks"]} == {
        "agent: fix failing test",
        "rag: product docs",
        "support: repeated questions",
    }
    for r in [*result["measured"]["tasks"], total]:
        assert 0 <= r["correct_before"] <= r["answers"] and 0 <= r["correct_after"] <= r["answers"], r
    assert total["answers"] == total["calls"] == 13
    assert total["correct_before"] == sum(t["correct_before"] for t in result["measured"]["tasks"])
    assert total["correct_after"] == sum(t["correct_after"] for t in result["measured"]["tasks"])
    assert result["profile"]["recommendations"], "the baseline trace was profiled"

    versus = {e["lever"]: e for e in result["profile_vs_applied"]}
    assert set(versus) >= {"semantic-cache", "routing", "compaction", "total (levers applied)"}
    assert Decimal(versus["total (levers applied)"]["applied_cost_saved"]) == Decimal(
        total["cost_before"]
    ) - Decimal(total["cost_after"])
    assert versus["semantic-cache"]["applied_calls"] == total["cache_hits"]

    html = (out / "report.html").read_text()
    assert 'id="measured"' in html and html.count("<svg") == 3
    assert "correct before" in html and 'id="estimate-vs-applied"' in html
    for name in ("baseline_trace.jsonl", "baseline_ledger.jsonl", "levers_ledger.jsonl"):
        assert (out / name).stat().st_size > 0
    # The exported baseline trace is itself a profiler input.
    from tokenlean.profile import read_trace

    assert len(read_trace(out / "baseline_trace.jsonl")) == total["calls"]
