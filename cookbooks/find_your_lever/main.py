"""Find your lever: record a week of traffic, profile it, and see which lever it responds to.

Run: ``python cookbooks/find_your_lever/main.py [--out DIR] [--json OUT] [TRACE ...]``. Without
``TOKENLEAN_BASE_URL`` / ``TOKENLEAN_MODEL`` it starts the local llama.cpp model itself. Extra
TRACE paths (ledger / OpenAI JSONL, LangChain exports, SWE-agent ``.traj`` or a directory) are
profiled as a second workload; by default the SWE-agent trajectories of the shared datasets.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tokenlean.metering import PriceTable
from tokenlean.profile import Profiler, read_traces
from tokenlean.routing import OpenAICompatibleEndpoint
from tokenlean.server import model_endpoint
from tokenlean.types import Message, Request

DAY = 86400.0
POLICY = (
    "You are the help desk of Northwind Travel. Answer in one sentence.\n"
    "Bookings can be changed free of charge up to 48 hours before departure.\n"
    "Cancellations within 48 hours are refunded at 50 percent; no-shows are not refunded.\n"
    "Seat upgrades cost 30 EUR per flight; lounge access is included from Gold status.\n"
    "Checked bags: one 23 kg bag included; extra bags cost 40 EUR each way."
)
# What users asked each day: the same few questions, in other words, plus a near-miss or two.
WEEK = [
    ["Can I change my booking?", "Is a seat upgrade expensive?", "How many bags can I check?"],
    ["can i change my booking", "What does an extra bag cost?"],
    ["Can I cancel 24 hours before departure?", "Can I change my booking?", "Is lounge access included?"],
    ["Can I cancel 72 hours before departure?", "How many bags can I check?"],
    ["What does a seat upgrade cost?", "Can I change my booking?"],
    ["Is a seat upgrade expensive?", "Can I get a refund if I do not show up?"],
    ["Can I change my booking?", "What does an extra bag cost?", "How many bags can I check?"],
]


def record_week(endpoint: OpenAICompatibleEndpoint, path: Path) -> Path:
    """Send the week's questions (streamed, so TTFT is real) and log them as OpenAI-format JSONL.

    Each day's calls are stamped as if they happened on that day, so the trace spans a week.
    """
    with path.open("w", encoding="utf-8") as fh:
        for day, questions in enumerate(WEEK):
            shift = (len(WEEK) - 1 - day) * DAY
            for i, q in enumerate(questions):
                req = Request(
                    messages=(Message("system", POLICY), Message("user", q)),
                    model=endpoint.model,
                    params={"max_tokens": 96, "temperature": 0},
                )
                started, first, final = time.time(), None, None
                for chunk in endpoint.stream(req):
                    if chunk.has_token and first is None:
                        first = time.time()
                    final = chunk.response or final
                ended = time.time()
                row = {
                    "task_id": f"day{day + 1}-chat{i + 1}",
                    "request": req.to_openai(),
                    "response": final.to_openai() if final is not None else None,
                    "started_at": started - shift,
                    "first_token_at": None if first is None else first - shift,
                    "ended_at": ended - shift,
                }
                fh.write(json.dumps(row) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", nargs="*", type=Path, help="more traces to profile (default: SWE-agent)")
    parser.add_argument(
        "--out", type=Path, default=Path("tokenlean-report") / "find-your-lever", help="reports go here"
    )
    parser.add_argument("--json", type=Path, help="write both reports as JSON")
    parser.add_argument("--price-as", default="gpt-4o", help="price the local model as this model")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # 1. A week of support traffic, recorded the way any OpenAI-compatible logger would.
    with model_endpoint() as (base_url, model):
        endpoint = OpenAICompatibleEndpoint(base_url, model, timeout=120)
        try:
            week = record_week(endpoint, args.out / "week.jsonl")
        finally:
            endpoint.close()

    # 2. Profile it: every lever's estimate on *this* traffic, ranked by money saved. The local
    # model has no list price: say explicitly what to price it as (the profiler never guesses).
    prices = PriceTable.default()
    prices = prices.with_price(model, prices.price(args.price_as))
    profiler = Profiler(prices=prices, default_model=args.price_as, show_progress=True)
    results = {}
    report = profiler.profile(read_traces([week]))
    report.print()
    print(f"HTML report: {report.write_html(args.out / 'week.html', title='A week of help-desk traffic')}")
    results["week"] = report.to_dict()

    # 3. A very different workload: coding-agent trajectories respond to other levers.
    default = (
        Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "agent_traces" / "swe-agent"
    )
    traces = args.traces or ([default] if default.is_dir() else [])
    if traces:
        agent = profiler.profile(read_traces(traces))
        agent.print()
        print(f"HTML report: {agent.write_html(args.out / 'agents.html', title='SWE-agent trajectories')}")
        results["agents"] = agent.to_dict()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
