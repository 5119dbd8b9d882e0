"""Put any agent behind tokenlean: ``tokenlean serve`` in front of the model, the agent unchanged.

Starts the gateway with a config (the cache, prompt layout and compaction on), runs an agent that
only knows the ``openai`` SDK twice with ``OPENAI_BASE_URL`` pointed at the gateway, and prints the
per-task report the gateway kept (``GET /v1/usage``).

    python cookbooks/gateway_any_agent/main.py [--json report.json]

The model is ``TOKENLEAN_BASE_URL`` / ``TOKENLEAN_MODEL`` when set (any OpenAI-compatible
endpoint); otherwise a small local model (SmolLM2-135M on llama.cpp) is started for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tokenlean.server import LocalModelServer, free_port

HERE = Path(__file__).resolve().parent

CONFIG = """\
[server]
host = "127.0.0.1"
port = {port}

[upstreams.model]
base_urls = ["{base_url}"]
model = "{model}"

[[routes]]
match = "*"
targets = ["model"]
cache = true                                   # repeated deterministic questions: no model call
layout = true                                  # stable prefix first
compaction = {{ ratio = 0.5, keep_last_turns = 1 }}  # older turns shortened verbatim
"""


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"tokenlean serve exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit("tokenlean serve did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the gateway's report here")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        base_url, model = os.environ.get("TOKENLEAN_BASE_URL"), os.environ.get("TOKENLEAN_MODEL")
        if not (base_url and model):
            local = stack.enter_context(LocalModelServer())
            base_url, model = local.base_url, local.model
        port = free_port()
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        config = workdir / "tokenlean.toml"
        config.write_text(CONFIG.format(port=port, base_url=base_url, model=model))

        # 1. the gateway: one command
        gateway = subprocess.Popen([sys.executable, "-m", "tokenlean", "serve", "--config", str(config)])
        stack.callback(lambda: (gateway.terminate(), gateway.wait(30)))
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, gateway)

        # 2. the agent, unchanged: only its base URL points at the gateway
        env = {**os.environ, "OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": "unused"}
        for task in ("ticket-1", "ticket-2"):
            print(f"== agent run {task}")
            subprocess.run([sys.executable, str(HERE / "agent.py"), "--task", task], env=env, check=True)

        # 3. the per-task report the gateway kept
        report: dict[str, Any] = httpx.get(f"{url}/v1/usage").json()
        print(f"\n{'task':12} {'calls':>5} {'hits':>4} {'input':>7} {'output':>6} {'saved':>6}  cost")
        for task, s in report["tasks"].items():
            print(
                f"{task:12} {s['calls']:>5} {s['cache_hits']:>4} {s['input_tokens']:>7} "
                f"{s['output_tokens']:>6} {s['tokens_saved']:>6}  ${float(s['cost']):.6f}"
            )
        print("\n" + "\n".join(line for line in httpx.get(f"{url}/metrics").text.splitlines() if "calls_total" in line))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
