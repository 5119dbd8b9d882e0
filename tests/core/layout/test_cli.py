"""``tokenlean layout analyze FILE.jsonl``."""

from __future__ import annotations

import argparse
import json

from layout_corpus import planted_stream

from tokenlean.layout import BreakerKind
from tokenlean.layout.cli import register_cli


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tokenlean")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_analyze_prints_breakers_and_stable_prefix(tmp_path, capsys) -> None:
    stream = planted_stream([BreakerKind.TIMESTAMP, BreakerKind.TOOL_ORDER], seed=1, n_requests=5)
    path = tmp_path / "requests.jsonl"
    lines = [json.dumps(r) for r in stream.requests]
    lines[1] = json.dumps({"request": stream.requests[1], "response": {"usage": {}}})  # log shape
    path.write_text("\n".join(lines) + "\n\n")
    assert _run(["layout", "analyze", str(path), "--provider", "anthropic"]) == 0
    out = capsys.readouterr().out
    assert "timestamp" in out and "tool_order" in out and "stable prefix" in out
    assert "anthropic plan" in out
    assert _run(["layout", "analyze", str(path), "--json", "--provider", "openai"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {b["kind"] for b in data["breakers"]} == {"timestamp", "tool_order"}
    assert data["requests"] == 5 and data["cache_plan"]["provider"] == "openai"
    assert data["reused_prefix_tokens_after"] > data["reused_prefix_tokens"]


def test_bad_input_is_exit_code_2(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"no": "messages"}\n')
    assert _run(["layout", "analyze", str(bad)]) == 2
    assert "messages" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert _run(["layout", "analyze", str(empty)]) == 2
