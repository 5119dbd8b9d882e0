"""Make your prompts cache-friendly: find what breaks the prefix, fix it, measure the cache.

Run: ``python cookbooks/cache_friendly_prompts/main.py`` (starts the local llama.cpp server) or
point it at a running one with ``TOKENLEAN_BASE_URL`` / ``TOKENLEAN_MODEL`` (and
``TOKENLEAN_SERVER_LOG``, its log file, when the server does not report cached tokens in usage:
``llama_cpp.server`` only logs its prefix reuse). ``--json OUT`` writes the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tokenlean.layout import (
    analyze,
    plan_cache_markers,
    read_llamacpp_prefix_reuse,
    realised_hit_rate,
    reorder,
)

POLICY = """You are the support assistant of ACME Home, an online shop.
Answer in one or two short sentences and never invent order data.
Returns are accepted within 30 days for unused items in their original packaging.
Refunds above 200 EUR need a supervisor; say so and open a ticket.
Standard shipping costs 4.90 EUR and is free above 50 EUR.
For damaged items ask for a photo, then offer a replacement or a refund."""

TOOLS = {
    "lookup_order": {"description": "Look an order up by number.", "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}},
    "open_ticket": {"description": "Open a ticket for a human agent.", "parameters": {"type": "object", "properties": {"summary": {"type": "string"}}}},
}  # fmt: skip

USERS = {"u1": ("Alice Martin", "plus"), "u2": ("Bogdan Nowak", "basic")}
TURNS = [
    ("u1", "Where is my order 4017?"),
    ("u2", "Can I return shoes I wore once?"),
    ("u1", "And can you refund the shipping fee?"),
    ("u2", "OK. What if they arrived damaged?"),
]


def naive_requests(model: str) -> list[dict[str, Any]]:
    """How many apps build prompts: clock, request id and the user first, tools in any order."""
    t0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    history: dict[str, list[dict[str, str]]] = {u: [] for u in USERS}
    out = []
    for i, (user, question) in enumerate(TURNS):
        name, plan = USERS[user]
        system = (
            f"Current time: {(t0 + timedelta(seconds=97 * i)):%Y-%m-%dT%H:%M:%SZ}\n"
            f"Request id: req_{0x5F3A9 + 7919 * i:x}c0ffee\n"
            f"Customer name: {name}\nCustomer plan: {plan}\n{POLICY}"
        )
        names = sorted(TOOLS, reverse=i % 2 == 1)  # e.g. built from a set: order varies
        tools = [{"type": "function", "function": {"name": n, **TOOLS[n]}} for n in names]
        messages = [
            {"role": "system", "content": system},
            *history[user],
            {"role": "user", "content": question},
        ]
        out.append({"model": model, "messages": messages, "tools": tools, "max_tokens": 8, "temperature": 0})
        history[user] += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "Let me check."},
        ]
    return out


def send_all(base_url: str, requests: list[dict[str, Any]], log: Path | None) -> dict[str, Any]:
    """Send the requests in order; read cached prompt tokens from usage, or else from the server log."""
    usages, cached = [], []
    for body in requests:
        offset = read_llamacpp_prefix_reuse(log)[1] if log else 0
        r = httpx.post(f"{base_url}/chat/completions", json=body, timeout=300)
        r.raise_for_status()
        usage = r.json()["usage"]
        usages.append(usage)
        reported = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if reported is None and log is not None:
            calls: list[Any] = []
            for _ in range(50):  # the log line can trail the HTTP answer by a moment
                calls, _ = read_llamacpp_prefix_reuse(log, offset=offset)
                if calls:
                    break
                time.sleep(0.1)
            reported = calls[-1].cached_of(usage["prompt_tokens"]) if calls else 0
        cached.append(int(reported or 0))
    hr = realised_hit_rate(usages, cached_tokens=cached)
    return {
        "prompt_tokens": hr.input_tokens,
        "cached_tokens": hr.cached_tokens,
        "share": hr.rate,
        "per_call": cached,
    }


@contextlib.contextmanager
def local_server():
    """The server named by the environment, or a local llama.cpp server started (and stopped) here."""
    if os.environ.get("TOKENLEAN_BASE_URL"):
        log = os.environ.get("TOKENLEAN_SERVER_LOG")
        yield (
            os.environ["TOKENLEAN_BASE_URL"],
            os.environ.get("TOKENLEAN_MODEL", "smollm2-135m"),
            Path(log) if log else None,
        )
        return
    from tokenlean.server import LocalModelServer

    log = Path(tempfile.mkdtemp(prefix="tokenlean-")) / "server.log"
    with LocalModelServer(log_file=log) as server:
        yield server.base_url, server.model, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="write the measured numbers here")
    args = parser.parse_args(argv)

    with local_server() as (base_url, model, log):
        stream = naive_requests(model)

        # 1. Analyse the stream: what breaks the stable prefix, and where.
        report = analyze(stream, model="gpt-4o")  # token counts with o200k; the server counts its own
        print(report.format())

        # 2. Fix it: the layout learned from the same stream (stable lines, per-user fields, tools).
        fixed = [reorder(r, report.layout).request.to_openai() for r in stream]
        print("\nsystem prompt after the layout:\n" + fixed[0]["messages"][0]["content"][:200] + " ...")
        print("new turn after the layout:\n" + fixed[2]["messages"][-1]["content"])

        # 3. Measure what the server really reused, before and after.
        before = send_all(base_url, stream, log)
        after = send_all(base_url, fixed, log)
        print(
            f"\nrealised cached share on {model}: before {before['share']:.1%} "
            f"({before['cached_tokens']}/{before['prompt_tokens']} tokens) -> after {after['share']:.1%} "
            f"({after['cached_tokens']}/{after['prompt_tokens']} tokens)"
        )

        # 4. Provider markers for the fixed request (a longer prompt would reach the minimums).
        for provider in ("anthropic", "openai"):
            plan = plan_cache_markers(
                fixed[-1], provider, model="claude-sonnet-4-5" if provider == "anthropic" else None
            )
            print(
                f"{provider}: {len(plan.breakpoints)} marker(s), params {dict(plan.params)}; {'; '.join(plan.notes)}"
            )

    result = {
        "breakers": report.by_kind(),
        "expected_share_before": round(report.cacheable_share, 4),
        "expected_share_after": round(report.cacheable_share_after, 4),
        "realised_before": before,
        "realised_after": after,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
