"""Prompt-layout benchmark: breaker detection and cacheable prefix before/after the layout.

    python benchmarks/layout.py [--data DIR] [--json OUT] [--quick] [--seeds N] [--requests N]

1. **Detection** on the planted-breaker corpus (``layout_corpus.py``, next to this file): request streams of
   a support assistant (tools, a policy prompt, few-shot examples, multi-turn conversations of
   several users) with breakers of every kind planted at random places, several per stream in
   some, and clean streams whose stable dates, prices and version numbers must *not* be reported.
   Recall = planted breakers found (right kind, right message / tool block, right line) over
   planted; precision = reported breakers that match a planted one over all reported.
2. **Cacheable prefix**: tokens an ideal prefix cache (each request reuses its longest common
   token prefix with any of the last 64 requests) serves over each stream, as sent and after
   ``reorder`` with the layout learned from the same stream.
3. **Real agent traces** (SWE-agent trajectories from ``--data``): one request per model call
   (the history up to it). As recorded they are append-only; the benchmark also runs them the
   way apps with a dynamic system prompt send them (a clock and a request id on the first lines,
   fresh per call) and reports the share before and after the layout for both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # layout_corpus.py sits next to this file

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
TRACES = Path("agent_traces") / "swe-agent"


def detection(seeds: int, n_requests: int) -> tuple[dict[str, Any], dict[str, Any]]:
    from layout_corpus import planted_corpus, score

    from tokenlean.layout import analyze

    per_kind: dict[str, dict[str, int]] = defaultdict(
        lambda: {"planted": 0, "found": 0, "reported": 0, "correct": 0}
    )
    streams = requests = 0
    prompt = before = after = 0
    t_analyze = 0.0
    misses: list[str] = []
    false: list[str] = []
    for seed in range(seeds):
        for stream in planted_corpus(seed=seed, n_requests=n_requests):
            t0 = time.perf_counter()
            report = analyze(stream.requests)
            t_analyze += time.perf_counter() - t0
            result = score(stream, report)
            streams += 1
            requests += len(stream.requests)
            prompt += report.prompt_tokens
            before += report.reused_prefix_tokens
            after += report.reused_prefix_tokens_after
            for p in stream.planted:
                per_kind[str(p.kind)]["planted"] += 1
            for p, _ in result.found:
                per_kind[str(p.kind)]["found"] += 1
            wrong = {id(b) for b in result.false}
            for b in report.breakers:
                per_kind[str(b.kind)]["reported"] += 1
                per_kind[str(b.kind)]["correct"] += id(b) not in wrong
            misses += [f"{stream.name}: {p.kind} at {p.label or p.section}" for p in result.missed]
            false += [f"{stream.name}: {b.kind} {b.location} {b.excerpt!r}" for b in result.false]
    planted = sum(v["planted"] for v in per_kind.values())
    found = sum(v["found"] for v in per_kind.values())
    reported = sum(v["reported"] for v in per_kind.values())
    correct = sum(v["correct"] for v in per_kind.values())
    det = {
        "streams": streams,
        "requests": requests,
        "planted": planted,
        "found": found,
        "reported": reported,
        "recall": round(found / planted, 4) if planted else 1.0,
        "precision": round(correct / reported, 4) if reported else 1.0,
        "per_kind": {
            k: {
                **v,
                "recall": round(v["found"] / v["planted"], 4) if v["planted"] else None,
                "precision": round(v["correct"] / v["reported"], 4) if v["reported"] else None,
            }
            for k, v in sorted(per_kind.items())
        },
        "missed": misses[:20],
        "false_positives": false[:20],
        "analyze_requests_per_s": round(requests / t_analyze, 1) if t_analyze else None,
    }
    return det, _prefix_shares(prompt, before, after)


def _prefix_shares(prompt: int, before: int, after: int) -> dict[str, Any]:
    """Prompt tokens a prefix cache can reuse as sent (before) and as laid out (after), with shares."""
    return {
        "prompt_tokens": prompt,
        "cacheable_before": before,
        "cacheable_after": after,
        "share_before": round(before / prompt, 4) if prompt else 0.0,
        "share_after": round(after / prompt, 4) if prompt else 0.0,
    }


def _trace_streams(data: Path, limit: int | None) -> list[list[dict[str, Any]]]:
    folder = data / TRACES
    files = sorted(folder.glob("*.traj"))
    if not files:
        raise SystemExit(
            f"no SWE-agent trajectories under {folder}; pass --data DIR (see the datasets README)"
        )
    streams = []
    for f in files[:limit]:
        history = json.loads(f.read_text(encoding="utf-8"))["history"]
        msgs = [
            {
                "role": m["role"],
                "content": m["content"] if isinstance(m["content"], str) else json.dumps(m["content"]),
            }
            for m in history
            if m.get("role") in ("system", "user", "assistant")
        ]
        calls = [
            msgs[:k] for k in range(1, len(msgs) + 1) if k == len(msgs) or msgs[k]["role"] == "assistant"
        ]
        streams.append([{"model": "gpt-4o", "messages": c} for c in calls if c[-1]["role"] == "user"])
    return streams


def _clocked(stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same calls as an app with a dynamic system prompt sends them."""
    t0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    out = []
    for i, body in enumerate(stream):
        msgs = [dict(m) for m in body["messages"]]
        stamp = f"Current time: {t0 + timedelta(seconds=41 * i):%Y-%m-%dT%H:%M:%SZ}\nRequest id: req_{7919 * (i + 3):08x}\n"
        msgs[0] = {**msgs[0], "content": stamp + msgs[0]["content"]}
        out.append({**body, "messages": msgs})
    return out


def traces(data: Path, limit: int | None) -> dict[str, Any]:
    from tokenlean.layout import analyze

    out: dict[str, Any] = {}
    streams = _trace_streams(data, limit)
    for variant, make in (("as_recorded", lambda s: s), ("dynamic_system_prompt", _clocked)):
        prompt = before = after = breakers = calls = 0
        t0 = time.perf_counter()
        for s in streams:
            report = analyze(make(s))
            prompt += report.prompt_tokens
            before += report.reused_prefix_tokens
            after += report.reused_prefix_tokens_after
            breakers += len(report.observed())
            calls += report.requests
        out[variant] = {
            "trajectories": len(streams),
            "calls": calls,
            **_prefix_shares(prompt, before, after),
            "observed_breakers": breakers,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="datasets folder (default ../shared/datasets)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="one seed, three trajectories (< 30 s)")
    parser.add_argument("--seeds", type=int, default=None, help="corpus seeds (default 5; 1 with --quick)")
    parser.add_argument("--requests", type=int, default=8, help="requests per planted stream")
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 5)

    t0 = time.perf_counter()
    det, prefix = detection(seeds, args.requests)
    trace = traces(args.data, 3 if args.quick else None) if (args.data / TRACES).is_dir() else None
    if trace is None:
        print(f"note: no SWE-agent traces under {args.data / TRACES}; pass --data DIR", file=sys.stderr)
    result = {
        "benchmark": "layout",
        "quick": args.quick,
        "detection": det,
        "cacheable_prefix": {"planted_corpus": prefix, **({"swe_agent": trace} if trace else {})},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    _print(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    det = result["detection"]
    t = Table(title=f"breaker detection: {det['streams']} streams, {det['requests']} requests")
    for col in ("kind", "planted", "found", "recall", "reported", "precision"):
        t.add_column(col, justify="right" if col != "kind" else "left")
    for kind, v in det["per_kind"].items():
        t.add_row(
            kind,
            str(v["planted"]),
            str(v["found"]),
            _pct(v["recall"]),
            str(v["reported"]),
            _pct(v["precision"]),
        )
    t.add_row(
        "all",
        str(det["planted"]),
        str(det["found"]),
        _pct(det["recall"]),
        str(det["reported"]),
        _pct(det["precision"]),
        style="bold",
    )
    console.print(t)
    p = Table(title="cacheable prefix (ideal prefix cache), before -> after the layout")
    for col in (
        "workload",
        "calls",
        "prompt tokens",
        "cacheable before",
        "share before",
        "cacheable after",
        "share after",
    ):
        p.add_column(col, justify="right" if col != "workload" else "left")
    rows = [("planted corpus", det["requests"], result["cacheable_prefix"]["planted_corpus"])]
    for name, v in result["cacheable_prefix"].get("swe_agent", {}).items():
        rows.append((f"swe-agent {name}", v["calls"], v))
    for name, calls, v in rows:
        p.add_row(
            name, str(calls), str(v["prompt_tokens"]), str(v["cacheable_before"]), _pct(v["share_before"]),
            str(v["cacheable_after"]), _pct(v["share_after"]),
        )  # fmt: skip
    console.print(p)
    console.print(f"analyze: {det['analyze_requests_per_s']} requests/s; total {result['seconds']} s")
    for line in det["missed"]:
        console.print(f"[red]missed[/] {line}")
    for line in det["false_positives"]:
        console.print(f"[yellow]false positive[/] {line}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


if __name__ == "__main__":
    raise SystemExit(main())
