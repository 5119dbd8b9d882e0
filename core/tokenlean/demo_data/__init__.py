"""The bundled workload of ``tokenlean demo``: three kinds of traffic every team has.

* **agent** — a tool-using coding agent fixing a failing test, replayed turn by turn: the system
  prompt carries the current time and a request id (the classic prompt-cache breaker), tool
  schemas arrive with a different key order on some turns, the agent opens the same file twice
  and runs a long test suite whose log goes stale.
* **rag** — a retrieval-augmented session: six retrieved passages, of which one or two answer
  each question, sent with every question.
* **support** — repeated support questions, with paraphrases of earlier ones and near-misses
  that must *not* be served from a cache (a different number of days, a different format).

Texts are inline (no files to find at run time); ``build_workload`` turns them into
``tokenlean.Request`` objects with ``metadata`` naming the task and its kind.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tokenlean.types import Message, Request, ToolCall

__all__ = ["DemoStep", "build_workload"]


@dataclass(frozen=True, slots=True)
class DemoStep:
    """One model call of the workload."""

    task_id: str
    kind: str  # "agent" | "rag" | "support"
    request: Request


_AGENT_SYSTEM = """You are a careful coding agent working in a Python repository.
Current time: {now}
Request id: {rid}
Work in small steps. Call exactly one tool per turn. Read a file before you edit it.
Run the tests after every edit. Keep explanations to one short sentence.
When the tests pass, answer DONE and summarise the fix in one line."""

_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Return the content of a file in the repository, with line numbers.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_tests",
            "description": "Run pytest on a path and return its output.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "edit_file",
            "description": "Replace one exact snippet of a file with new text.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "old": {"type": "string"}, "new": {"type": "string"}},
                "required": ["path", "old", "new"],
            },
        },
    },
]

_SOURCE = '''"""Parse human durations such as "1h30m" or "90s" into seconds."""

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\\d+)([smhd])")


def parse_duration(text: str) -> int:
    """Seconds in ``text``; raises ValueError on anything that is not a duration."""
    text = text.strip().lower()
    if not text:
        raise ValueError("empty duration")
    total = 0
    pos = 0
    for match in _PART.finditer(text):
        if match.start() != pos:
            raise ValueError(f"unexpected text at {pos}: {text[pos:]!r}")
        value, unit = match.groups()
        total += int(value) * _UNITS[unit]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"trailing text: {text[pos:]!r}")
    return total


def format_duration(seconds: int) -> str:
    """The shortest string that parse_duration reads back as ``seconds``."""
    if seconds < 0:
        raise ValueError("negative duration")
    parts = []
    for unit, size in sorted(_UNITS.items(), key=lambda kv: -kv[1]):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def total_duration(texts: list[str]) -> int:
    """Sum of several durations."""
    return sum(parse_duration(t) for t in texts)
'''


def _numbered(text: str) -> str:
    return "\n".join(f"{i:>3}: {line}" for i, line in enumerate(text.splitlines(), 1))


def _test_log(passing: bool) -> str:
    lines = [
        "============================= test session starts ==============================",
        "platform linux -- Python 3.11.9, pytest-8.3.3, pluggy-1.5.0",
        "rootdir: /repo",
        "configfile: pyproject.toml",
        "collected 18 items",
        "",
    ]
    names = [
        "test_seconds", "test_minutes", "test_hours", "test_days", "test_combined", "test_whitespace",
        "test_uppercase", "test_empty", "test_garbage", "test_trailing", "test_format_zero",
        "test_format_roundtrip", "test_format_negative", "test_total", "test_total_empty",
        "test_weeks", "test_large_values", "test_leading_zero",
    ]  # fmt: skip
    for n in names:
        ok = passing or n != "test_weeks"
        lines.append(f"tests/test_durations.py::{n} {'PASSED' if ok else 'FAILED'}")
    if not passing:
        lines += [
            "",
            "=================================== FAILURES ===================================",
            "__________________________________ test_weeks __________________________________",
            "",
            "    def test_weeks():",
            '>       assert parse_duration("2w") == 2 * 7 * 86400',
            "",
            "tests/test_durations.py:61: ",
            "_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _",
            "",
            "text = '2w'",
            "",
            "    def parse_duration(text: str) -> int:",
            "        text = text.strip().lower()",
            "        if not text:",
            '            raise ValueError("empty duration")',
            "        total = 0",
            "        pos = 0",
            "        for match in _PART.finditer(text):",
            "            ...",
            "        if pos != len(text):",
            ">           raise ValueError(f\"trailing text: {text[pos:]!r}\")",
            "E           ValueError: trailing text: '2w'",
            "",
            "src/durations.py:22: ValueError",
            "=========================== short test summary info ============================",
            "FAILED tests/test_durations.py::test_weeks - ValueError: trailing text: '2w'",
            "========================= 1 failed, 17 passed in 0.41s =========================",
        ]
    else:
        lines.append("============================== 18 passed in 0.38s ==============================")
    return "\n".join(lines)


def _shuffled_tools(turn: int) -> list[dict[str, object]]:
    """The same tool schemas, serialised with a different key order on odd turns (a real SDK habit)."""
    if turn % 2 == 0:
        return [dict(t) for t in _TOOLS]
    out = []
    for t in reversed(_TOOLS):
        fn = dict(t["function"])  # type: ignore[arg-type]
        out.append({"function": {k: fn[k] for k in reversed(list(fn))}, "type": "function"})
    return out


def _agent_turns() -> list[tuple[str, ToolCall, str]]:
    """The agent's recorded thoughts, tool calls and what each returned."""
    fixed = _SOURCE.replace('"d": 86400}', '"d": 86400, "w": 604800}').replace("([smhd])", "([smhdw])")
    return [
        ("Reproduce the failure first.", ToolCall("call_1", "run_tests", json.dumps({"path": "tests/test_durations.py"})), _test_log(False)),
        ("The parser rejects '2w'; read it.", ToolCall("call_2", "read_file", json.dumps({"path": "src/durations.py"})), _numbered(_SOURCE)),
        (
            "Add weeks to the unit table.",
            ToolCall(
                "call_3",
                "edit_file",
                json.dumps({"path": "src/durations.py", "old": '"d": 86400}', "new": '"d": 86400, "w": 604800}'}),
            ),
            "Edited src/durations.py: 1 replacement.",
        ),
        ("Run the tests again.", ToolCall("call_4", "run_tests", json.dumps({"path": "tests/test_durations.py"})), _test_log(False)),
        ("Still failing; look at the regex.", ToolCall("call_5", "read_file", json.dumps({"path": "src/durations.py"})), _numbered(fixed.replace("([smhdw])", "([smhd])"))),
        (
            "The regex lacks 'w'; add it.",
            ToolCall(
                "call_6",
                "edit_file",
                json.dumps({"path": "src/durations.py", "old": "([smhd])", "new": "([smhdw])"}),
            ),
            "Edited src/durations.py: 1 replacement.",
        ),
        ("Run the tests to confirm.", ToolCall("call_7", "run_tests", json.dumps({"path": "tests/test_durations.py"})), _test_log(True)),
    ]


_DOCS = [
    (
        "Acme Cloud backups",
        "Acme Cloud takes a snapshot of every volume each night at 02:00 in the volume's region. "
        "Snapshots are incremental: only blocks changed since the previous snapshot are stored. "
        "Daily snapshots are kept for 14 days on the Standard plan and 35 days on the Pro plan. "
        "Restoring a snapshot creates a new volume; the original volume is never overwritten.",
    ),
    (
        "Acme Cloud regions",
        "Acme Cloud runs in five regions: Frankfurt, Dublin, Virginia, Oregon and Singapore. "
        "Each region has three availability zones connected by private fibre. Data never leaves "
        "the region you choose unless you configure cross-region replication yourself. Latency "
        "between zones of one region is below two milliseconds.",
    ),
    (
        "Acme Cloud pricing",
        "The Standard plan costs 20 dollars per month and includes 100 GB of storage and 1 TB of "
        "egress. The Pro plan costs 45 dollars per month and includes 500 GB of storage, 5 TB of "
        "egress and priority support. Extra storage is billed at 4 cents per GB per month.",
    ),
    (
        "Acme Cloud encryption",
        "All volumes and snapshots are encrypted at rest with AES-256. Keys are managed by the "
        "Acme key service and rotated every 90 days. Pro customers can bring their own keys "
        "from an external key manager. Traffic between zones is encrypted with TLS 1.3.",
    ),
    (
        "Acme Cloud support",
        "Standard support answers tickets within one business day by email. Priority support, "
        "included in the Pro plan, answers within two hours around the clock and adds a phone "
        "line. Outages are announced on the status page and by email to account owners.",
    ),
    (
        "Acme Cloud limits",
        "An account can create up to 50 volumes per region by default. A single volume can grow "
        "to 16 TB. Snapshots count against the storage quota of the plan. Limits can be raised "
        "by opening a ticket; raises are usually granted within a day.",
    ),
]

_RAG_QUESTIONS = [
    "How long are daily snapshots kept on the Pro plan?",
    "Which encryption is used for snapshots at rest?",
    "How fast does priority support answer a ticket?",
]

_SUPPORT_SYSTEM = (
    "You are the support assistant of Acme Cloud. Answer in one short sentence. "
    "If you do not know, say that a human agent will follow up."
)

_SUPPORT = [
    "How do I reset my password?",
    "What does the Pro plan cost per month?",
    "how do i reset my password",
    "Can I get a refund within 14 days of purchase?",
    "I forgot my password. How can I reset it?",
    "How much is the Pro plan per month?",
    "Can I get a refund within 30 days of purchase?",
    "How do I export my data as CSV?",
    "How do I export my data as JSON?",
    "How do I reset my password?",
]


def build_workload(*, quick: bool = False, start: datetime | None = None) -> list[DemoStep]:
    """The demo's calls in order. ``quick`` keeps every kind of traffic but fewer turns."""
    now = start or datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
    steps: list[DemoStep] = []

    turns = _agent_turns()[: 4 if quick else 6]
    task = "agent: fix failing test"
    user = Message("user", "tests/test_durations.py::test_weeks fails. Find the cause and fix it.")
    history: list[Message] = []
    for k in range(len(turns) + 1):
        system = Message(
            "system",
            _AGENT_SYSTEM.format(
                now=(now + timedelta(seconds=17 * k)).strftime("%Y-%m-%d %H:%M:%S UTC"),
                rid=str(uuid.UUID(int=0x5EED0000 + k)),
            ),
        )
        req = Request(
            messages=(system, user, *history),
            tools=tuple(_shuffled_tools(k)),
            params={"max_tokens": 24, "temperature": 0},
            metadata={"task_id": task, "task_type": "agent"},
        )
        steps.append(DemoStep(task, "agent", req))
        if k < len(turns):
            thought, call, result = turns[k]
            history += [
                Message("assistant", thought, tool_calls=(call,)),
                Message("tool", result, tool_call_id=call.id),
            ]

    task = "rag: product docs"
    docs = "\n\n".join(f"Document [{i}](Title: {t}) {body}" for i, (t, body) in enumerate(_DOCS, 1))
    for q in _RAG_QUESTIONS[: 2 if quick else 3]:
        req = Request(
            messages=(
                Message("system", "Answer the question from the documents. Be brief and cite the document number."),
                Message("user", f"Documents:\n{docs}"),
                Message("user", f"Question: {q}"),
            ),
            params={"max_tokens": 24, "temperature": 0},
            metadata={"task_id": task, "task_type": "rag"},
        )
        steps.append(DemoStep(task, "rag", req))

    task = "support: repeated questions"
    for q in _SUPPORT[: 7 if quick else len(_SUPPORT)]:
        req = Request(
            messages=(Message("system", _SUPPORT_SYSTEM), Message("user", q)),
            params={"max_tokens": 24, "temperature": 0},
            metadata={"task_id": task, "task_type": "support"},
        )
        steps.append(DemoStep(task, "support", req))
    return steps
