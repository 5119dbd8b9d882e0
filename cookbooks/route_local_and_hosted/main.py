"""Route between a local model (vLLM) and a hosted API with a cascade; meter what it saved.

The local model answers first; the answer goes to the hosted model only when a check fails
(here: a JSON-schema validator for the structured request, self-consistency for the others).
Every call is metered per task, so the share of calls that stayed local shows up directly.

    python main.py --local-url http://gpu-box:8000/v1 --vllm \
                   --hosted-url https://api.openai.com/v1 --hosted-model gpt-4o-mini  # key: OPENAI_API_KEY
    python main.py      # no URLs: starts two local llama.cpp servers as both ends

``TOKENLEAN_BASE_URL`` / ``TOKENLEAN_MODEL`` (set by the test) point both ends at one server.
"""

from __future__ import annotations

import argparse
import os
from contextlib import ExitStack

from tokenlean.metering import Ledger, Meter
from tokenlean.routing import (
    Cascade,
    Consistency,
    OpenAICompatibleEndpoint,
    OutputControl,
    Router,
    Rule,
    RulesPolicy,
    Validate,
    VLLMEndpoint,
    json_schema_validator,
)
from tokenlean.types import Message, Request

CITY = {
    "type": "object",
    "required": ["city", "country"],
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
}


def build_router(
    local_url: str,
    local_model: str | None,
    hosted_url: str,
    hosted_model: str,
    *,
    vllm: bool,
    key: str | None,
) -> Router:
    local = (
        VLLMEndpoint(local_url, local_model, name="local")
        if vllm
        else OpenAICompatibleEndpoint(local_url, local_model or "local", name="local")
    )
    hosted = OpenAICompatibleEndpoint(hosted_url, hosted_model, name="hosted", api_key=key)
    short = OutputControl(max_tokens=48, instruction="Answer in one short sentence.")
    return Router(
        {"local": local, "hosted": hosted},
        policies=[
            # structured requests: local first, hosted when the JSON does not validate
            RulesPolicy([Rule("hosted", has_tools=True, name="tool use goes hosted")]),
            _JsonCascade(
                Cascade("local", "hosted", [Validate(json_schema_validator(CITY), name="city schema")])
            ),
            Cascade("local", "hosted", [Consistency(min_agreement=0.3)], output=short),
        ],
        fallbacks={"local": ["hosted"]},  # local down → hosted answers, the user sees no error
        meter=Meter(Ledger()),
    )


class _JsonCascade:
    """Use the JSON-validating cascade only for requests tagged ``json``."""

    name = "json-cascade"

    def __init__(self, cascade: Cascade) -> None:
        self.cascade = cascade

    def decide(self, request: Request):  # type: ignore[no-untyped-def]
        return self.cascade.decide(request) if "json" in (request.metadata.get("tags") or ()) else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--local-url", default=os.environ.get("TOKENLEAN_LOCAL_URL") or os.environ.get("TOKENLEAN_BASE_URL")
    )
    p.add_argument("--local-model", default=os.environ.get("TOKENLEAN_MODEL"))
    p.add_argument(
        "--hosted-url", default=os.environ.get("TOKENLEAN_HOSTED_URL") or os.environ.get("TOKENLEAN_BASE_URL")
    )
    p.add_argument(
        "--hosted-model",
        default=os.environ.get("TOKENLEAN_HOSTED_MODEL") or os.environ.get("TOKENLEAN_MODEL"),
    )
    p.add_argument(
        "--vllm", action="store_true", help="the local server is vLLM (health, metrics, cache_salt)"
    )
    args = p.parse_args()
    with ExitStack() as stack:
        if not args.local_url or not args.hosted_url:
            from tokenlean.server import LocalModelServer

            a = stack.enter_context(LocalModelServer())
            b = stack.enter_context(LocalModelServer())
            args.local_url, args.local_model = args.local_url or a.base_url, args.local_model or a.model
            args.hosted_url, args.hosted_model = args.hosted_url or b.base_url, args.hosted_model or b.model
        router = build_router(
            args.local_url,
            args.local_model,
            args.hosted_url,
            args.hosted_model or "gpt-4o-mini",
            vllm=args.vllm,
            key=os.environ.get("OPENAI_API_KEY"),
        )
        questions = [
            Request([Message("user", "What is the capital of France?")], params={"temperature": 0}),
            Request(
                [
                    Message(
                        "user",
                        'Reply with JSON only, like {"city": "...", "country": "..."}: the largest city in Japan.',
                    )
                ],
                params={"temperature": 0, "max_tokens": 40},
                metadata={"tags": ["json"]},
            ),
            Request([Message("user", "Name one primary colour.")], params={"temperature": 0}),
        ]
        with router.meter.task("cookbook") as task:
            for req in questions:
                resp, d = router.complete_with_decision(req)
                print(f"[{d.target}{' (escalated)' if d.escalated else ''}] {req.messages[-1].text[:60]!r}")
                print(f"    answer: {resp.text.strip()[:100]!r}")
                print(f"    why:    {d.reason}")
        s = task.summary()
        local = sum(1 for r in task.records() if r.tags.get("route") == "local")
        print(f"calls: {s.calls} ({local} local), tokens: {s.total_tokens}")
        router.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
