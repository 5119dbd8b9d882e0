"""``tokenlean profile`` with no path: this machine's Claude Code and Codex sessions, per session and
per day, priced field by field, written as HTML; a model no price source knows stays unpriced."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from tokenlean.cli import main
from tokenlean.metering import PriceTable
from tokenlean.profile.coding_agents import find_claude_code_sessions, find_codex_sessions
from tokenlean.profile.readers import read_traces

FIXTURES = Path(__file__).parent / "fixtures"
MTOK = Decimal(1_000_000)


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with the fixture sessions where Claude Code and Codex CLI keep theirs."""
    shutil.copytree(FIXTURES / "claude_code" / "projects", tmp_path / "claude" / "projects")
    shutil.copytree(FIXTURES / "codex" / "sessions", tmp_path / "codex" / "sessions")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude"))
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex"))
    return tmp_path


def _list_price(prices: PriceTable, call: object) -> Decimal:
    """The list-price computation, field by field (cache read, 5-minute and 1-hour writes, output)."""
    u = call.usage  # type: ignore[attr-defined]
    p = prices.price(call.model)  # type: ignore[attr-defined]
    w1h = int(call.extra.get("cache_write_1h_tokens", 0))  # type: ignore[attr-defined]
    assert p.cached_input is not None and p.cache_write is not None and p.cache_write_1h is not None
    return (
        p.input * u.uncached_input_tokens
        + p.cached_input * u.cached_input_tokens
        + p.cache_write * (u.cache_write_tokens - w1h)
        + p.cache_write_1h * w1h
        + p.output * u.output_tokens
    ) / MTOK


def test_profile_without_a_path_reads_local_sessions(
    machine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_html = machine / "report.json", machine / "report.html"
    assert main(["profile", "--no-progress", "--json", str(out_json), "--html", str(out_html)]) == 0
    printed = capsys.readouterr().out
    assert "Sessions" in printed and "Days" in printed and "Found" in printed
    report = json.loads(out_json.read_text())
    trace = read_traces([*find_claude_code_sessions(), *find_codex_sessions()], skip_empty=True)
    prices = PriceTable.default()
    tasks = trace.tasks()
    assert {r["key"] for r in report["sessions"]} == set(tasks)
    for row in report["sessions"]:
        calls = tasks[row["key"]]
        assert row["calls"] == len(calls)
        assert row["input_tokens"] == sum(c.usage.input_tokens for c in calls)
        assert row["cache_read_tokens"] == sum(c.usage.cached_input_tokens for c in calls)
        assert row["output_tokens"] == sum(c.usage.output_tokens for c in calls)
        priced = [c for c in calls if c.model in prices]
        assert Decimal(row["cost"]) == sum((_list_price(prices, c) for c in priced), Decimal(0))
        assert row["unpriced_calls"] == len(calls) - len(priced)
    assert sum(r["calls"] for r in report["days"]) == len(trace.calls)
    assert any("Prices:" in a for a in report["assumptions"])
    html = out_html.read_text()
    assert "<h2>Sessions</h2>" in html and "<h2>Days (UTC)</h2>" in html


def test_an_unknown_model_is_unpriced_not_priced_as_another(machine: Path) -> None:
    session = next((machine / "claude" / "projects").rglob("*.jsonl"))
    text = session.read_text()
    models = {json.loads(line).get("message", {}).get("model") for line in text.splitlines() if line.strip()}
    for model in models - {None, "<synthetic>"}:
        text = text.replace(f'"{model}"', '"claude-nonexistent-9"')
    session.write_text(text)
    out = machine / "report.json"
    assert main(["profile", "--no-progress", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    row = next(r for r in report["sessions"] if "claude-nonexistent-9" in r["models"])
    calls = read_traces([*find_claude_code_sessions(), *find_codex_sessions()], skip_empty=True).tasks()[
        row["key"]
    ]
    unknown = [c for c in calls if c.model == "claude-nonexistent-9"]
    assert unknown and row["unpriced_calls"] == len(unknown)
    prices = PriceTable.default()
    known = [c for c in calls if c.model != "claude-nonexistent-9"]
    assert Decimal(row["cost"]) == sum(
        (_list_price(prices, c) for c in known), Decimal(0)
    )  # not priced as another
    assert row["input_tokens"] == sum(c.usage.input_tokens for c in calls)  # its tokens are still counted
    assert any("claude-nonexistent-9" in a and "unpriced" in a for a in report["assumptions"])


def test_no_path_and_no_sessions_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "none"))
    assert main(["profile", "--no-progress"]) == 2
    assert "CLAUDE_CONFIG_DIR" in capsys.readouterr().err


def test_profile_on_a_folder_of_projects_prints_the_tables(
    machine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tokenlean profile ~/.claude/projects``: every session below it, tables shown, HTML written."""
    html = machine / "folder.html"
    assert main(["profile", "--no-progress", str(machine / "claude" / "projects"), "--html", str(html)]) == 0
    printed = capsys.readouterr().out
    assert "Sessions" in printed and "Days" in printed and "cache-safe-compaction" in printed
    assert "<h2>Sessions</h2>" in html.read_text()
