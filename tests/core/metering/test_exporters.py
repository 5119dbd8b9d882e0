"""JSONL (crash-safe append, tolerant reader) and Prometheus exposition, plus the ledger CLI."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tokenlean.errors import MeteringError, TextEncodingError
from tokenlean.metering import (
    JsonlSink,
    Ledger,
    Meter,
    UsageRecord,
    read_jsonl,
    to_prometheus,
    write_prometheus,
)
from tokenlean.metering.cli import register_cli
from tokenlean.types import Usage

ROOT = Path(__file__).resolve().parents[3]


def _meter_with_file(path: Path) -> Meter:
    return Meter(Ledger(sink=path))


def _fill(meter: Meter) -> None:
    with meter.task("search"):
        meter.record(
            model="gpt-4o", usage=Usage(1200, 80, 1000), started_at=1.0, first_token_at=1.3, ended_at=2.0
        )
        meter.record(model="gpt-4o", usage=Usage(800, 40), started_at=3.0, first_token_at=3.2, ended_at=3.5)
    with meter.task('odd "name"\nwith newline'):
        meter.record(model="local-model", usage=Usage(50, 10), started_at=4.0, ended_at=5.0)
        meter.record(
            model="gpt-4o", usage=Usage(1200, 80, 1000), cache_hit=True, started_at=6.0, ended_at=6.0
        )


def test_jsonl_round_trip_reproduces_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    meter = _meter_with_file(path)
    _fill(meter)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["usage"] for line in lines)
    back = Ledger.from_jsonl(path)
    assert back.records() == meter.ledger.records()
    assert back.tasks() == meter.ledger.tasks()


def test_reader_skips_a_torn_last_line_and_sink_repairs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.jsonl"
    meter = _meter_with_file(path)
    _fill(meter)
    for sink in meter.ledger._sinks:  # release the descriptor like a crashed process would
        sink.close()  # type: ignore[attr-defined]
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines()[0][:37])  # a crash mid-write
    assert len(list(read_jsonl(path))) == 4
    assert "torn" in caplog.text
    # the next writer cuts the fragment off instead of gluing its record onto it
    with JsonlSink(path) as sink:
        sink(UsageRecord(model="gpt-4o", usage=Usage(1, 1), task_id="after-crash"))
    recs = list(read_jsonl(path))
    assert [r.task_id for r in recs][-1] == "after-crash" and len(recs) == 5
    assert path.read_bytes().endswith(b"\n")


def test_killed_writer_loses_no_acknowledged_record(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        from tokenlean.metering import Ledger, Meter
        meter = Meter(Ledger(sink={str(path)!r}))
        i = 0
        while True:
            meter.record(model="gpt-4o", usage={{"prompt_tokens": i, "completion_tokens": 1}}, task_id="t")
            i += 1
            print(i, flush=True)
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "core"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    acknowledged = 0
    deadline = time.monotonic() + 60
    while acknowledged < 30 and time.monotonic() < deadline:
        acknowledged = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    recs = list(read_jsonl(path))
    assert len(recs) >= acknowledged >= 30
    assert [r.usage.input_tokens for r in recs] == list(range(len(recs)))


def test_corrupt_middle_lines_are_reported_with_their_number(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    good = json.dumps(UsageRecord(model="gpt-4o", usage=Usage(1, 1)).to_dict())
    path.write_bytes(f"{good}\n{{not json\n{good}\n".encode())
    with pytest.raises(MeteringError, match=r"ledger\.jsonl:2"):
        list(read_jsonl(path))
    assert len(list(read_jsonl(path, strict=False))) == 2
    path.write_bytes(good.encode() + b"\n" + b'{"model": "caf\xe9"}\n' + good.encode() + b"\n")
    with pytest.raises(TextEncodingError, match=r":2: line is not valid UTF-8"):
        list(read_jsonl(path))
    path.write_bytes(b'{"model": "gpt-4o"}\n')  # JSON, but not a record
    with pytest.raises(MeteringError, match="usage"):
        list(read_jsonl(path))


def test_prometheus_exposition_parses_and_matches_the_ledger(tmp_path: Path) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    meter = Meter()
    _fill(meter)
    text = to_prometheus(meter.ledger)
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    calls = {(s.labels["task"], s.labels["model"]): s.value for s in families["tokenlean_llm_calls"].samples}
    assert calls == {
        ("search", "gpt-4o"): 2,
        ('odd "name"\nwith newline', "local-model"): 1,
        ('odd "name"\nwith newline', "gpt-4o"): 1,
    }
    cost = {s.labels["task"]: s.value for s in families["tokenlean_cost_usd"].samples}
    assert cost["search"] == pytest.approx(float(meter.ledger.task("search").cost or Decimal(0)))
    ttft = next(
        s.value for s in families["tokenlean_ttft_p50_seconds"].samples if s.labels["task"] == "search"
    )
    assert ttft == pytest.approx(0.25)
    unpriced = {s.labels["model"]: s.value for s in families["tokenlean_unpriced_calls"].samples}
    assert unpriced["local-model"] == 1
    out = tmp_path / "metrics" / "tokenlean.prom"
    write_prometheus(meter.ledger, out, by_task=False)
    flat = {f.name: f for f in parser.text_string_to_metric_families(out.read_text())}
    assert {s.labels["model"]: s.value for s in flat["tokenlean_llm_calls"].samples} == {
        "gpt-4o": 3,
        "local-model": 1,
    }
    assert to_prometheus([]) == ""


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tokenlean")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_summary_prints_the_per_task_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ledger.jsonl"
    _fill(_meter_with_file(path))
    assert _cli(["ledger", "summary", str(path)]) == 0
    out = capsys.readouterr().out
    for expected in ("search", "TOTAL", "2,000", "unpriced", "TTFT p50"):
        assert expected in out
    assert _cli(["ledger", "summary", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"]["calls"] == 4
    assert {g["task_id"]: g["calls"] for g in data["groups"]}["search"] == 2
    assert _cli(["ledger", "export-prometheus", str(path)]) == 0
    assert 'tokenlean_llm_calls_total{task="search",model="gpt-4o"} 2' in capsys.readouterr().out


def test_cli_reports_bad_files_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"usage": \xff}\n{}\n')
    assert _cli(["ledger", "summary", str(bad)]) == 2
    assert "not valid UTF-8" in capsys.readouterr().err
    assert _cli(["ledger", "summary", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
