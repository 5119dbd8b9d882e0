"""A small support agent that knows nothing about tokenlean: only the ``openai`` SDK.

It reads ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` like any OpenAI client, keeps a conversation
history and asks a few questions, one of them twice. The only tokenlean-specific line is the
optional ``x-tokenlean-task`` header, which groups its calls into one task in the gateway's report.

    OPENAI_BASE_URL=http://127.0.0.1:8787/v1 python agent.py --task ticket-1
"""

from __future__ import annotations

import argparse
import os

from openai import OpenAI

POLICY = "You are the support assistant of ACME Home. Answer in one short sentence."
MANUAL = "\n".join(
    f"Section {i}: orders placed before {i % 12 + 1} pm ship the same day from warehouse W{i % 5}; "
    f"returns within {20 + i % 10} days are free for members."
    for i in range(40)
)
QUESTIONS = (
    "When do orders ship?",
    "Are returns free?",
    "When do orders ship?",  # asked again: the gateway's cache answers it
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default=None, help="a task id for the gateway's report")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    client = OpenAI(
        api_key=os.environ.get("OPENAI_API_KEY", "unused"),
        default_headers={"x-tokenlean-task": args.task} if args.task else None,
    )
    model = os.environ.get("AGENT_MODEL") or client.models.list().data[0].id
    for question in QUESTIONS:
        # each question is asked with the manual as context: the same prefix every time
        messages = [
            {"role": "system", "content": POLICY},
            {"role": "user", "content": "Our manual:\n" + MANUAL},
            {"role": "assistant", "content": "Understood."},
            {"role": "user", "content": question},
        ]
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=messages, temperature=0, max_tokens=args.max_tokens  # type: ignore[arg-type]
        )
        answer = raw.parse()
        print(
            f"{question!r:32} -> {answer.choices[0].message.content!r:.60}  "
            f"[cache {raw.headers.get('x-tokenlean-cache', '-')}, finish {answer.choices[0].finish_reason}, "
            f"saved {raw.headers.get('x-tokenlean-tokens-saved', '-')} tokens]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
