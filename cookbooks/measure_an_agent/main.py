"""Measure tokens, latency and cost per task of a LangChain agent.

Runs a one-tool ``create_agent`` agent on two tasks against an OpenAI-compatible server, meters
every model call with tokenlean, appends the records to a crash-safe JSONL ledger and prints
the per-task table (the same one ``tokenlean ledger summary FILE`` prints).

    python cookbooks/measure_an_agent/main.py [--ledger ledger.jsonl]

The server is ``TOKENLEAN_BASE_URL`` / ``TOKENLEAN_MODEL`` when set (any OpenAI-compatible
endpoint); otherwise a small local model (SmolLM2-135M on llama.cpp) is started for the run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from langchain.agents import create_agent
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from langchain_tokenlean.callbacks import track_task
from tokenlean.cli import main as tokenlean_cli
from tokenlean.metering import Ledger, Meter, ModelPrice, PriceTable


@tool
def get_weather(city: str) -> str:
    """Return the current weather for a city."""
    return f"It is 18°C and sunny in {city}."


def run(base_url: str, model: str, ledger_path: Path) -> None:
    llm = ChatOpenAI(
        base_url=base_url,
        api_key=os.environ.get("OPENAI_API_KEY", "not-needed"),
        model=model,
        temperature=0,
        extra_body={"max_tokens": 32},  # llama.cpp reads max_tokens, not max_completion_tokens
    )
    agent = create_agent(
        llm, tools=[get_weather], system_prompt="Use the weather tool when asked about weather."
    )
    meter = Meter(Ledger(sink=ledger_path))

    # 1. A self-hosted model has no list price: price its GPU time using the throughput we measure.
    with track_task("calibrate", meter=meter):
        llm.invoke("Count from one to ten.")
    tokens_per_s = meter.ledger.throughput(model) or 1.0
    meter.prices = PriceTable.default().with_price(
        model, ModelPrice.self_hosted("0.80", tokens_per_s=tokens_per_s)
    )
    print(f"measured {tokens_per_s:.1f} output tokens/s -> priced at $0.80 per GPU hour")

    # 2. The tasks we want to measure: every model call inside a block is grouped under its name.
    for task, question in [
        ("weather-paris", "What is the weather in Paris?"),
        ("weather-rome", "Should I take an umbrella in Rome today?"),
    ]:
        with track_task(task, meter=meter) as t:
            agent.invoke({"messages": [{"role": "user", "content": question}]})
        s = t.summary()
        cost = "unpriced" if s.cost is None else f"${s.cost:.6f}"
        print(f"{task}: {s.calls} calls, {s.input_tokens} in / {s.output_tokens} out tokens, cost {cost}")

    # 3. The same tokens at a hosted model's list price, for comparison.
    total = meter.ledger.summary()
    hosted = PriceTable.default().cost("gpt-4o-mini", total.usage)
    print(f"all tasks on gpt-4o-mini list prices would cost ${hosted:.6f}")

    # 4. The per-task table from the JSONL file (what `tokenlean ledger summary` prints).
    tokenlean_cli(["ledger", "summary", str(ledger_path)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", type=Path, default=Path("ledger.jsonl"), help="JSONL file to append to")
    args = parser.parse_args()
    from tokenlean.server import model_endpoint  # $TOKENLEAN_BASE_URL, or a local llama.cpp server

    with model_endpoint() as (base_url, model):
        run(base_url, model, args.ledger)


if __name__ == "__main__":
    main()
