"""The bundled workload of ``tokenlean demo``: three kinds of traffic every team has.

* **agent** — a tool-using coding agent (SWE-agent style: one command per reply, the command's
  output comes back as the next user turn) fixing a failing test, replayed turn by turn: the
  system prompt carries the current time and a request id (the classic prompt-cache breaker),
  the agent runs the same failing tests twice and opens the same file twice.
* **rag** — a retrieval-augmented session: six retrieved passages, of which one or two answer
  each question, sent with every question.
* **support** — repeated support questions, with paraphrases of earlier ones and near-misses
  that must *not* be served from a cache (a different number of days, a different format).

Texts are inline (no files to find at run time); ``build_workload`` turns them into
``tokenlean.Request`` objects with ``metadata`` naming the task and its kind.

Every step carries a ``Reference``: what a correct answer contains (facts from the documents or
the support FAQ in the prompt) or, for the agent, which next commands the repository's state and
the system prompt's rules allow. ``tokenlean.demo.grade`` grades both runs against them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tokenlean.types import Message, Request

__all__ = ["DemoStep", "Reference", "build_workload"]


@dataclass(frozen=True, slots=True)
class Reference:
    """What a correct answer to one step is, written from the task alone (not from any model's output).

    ``answer`` is a correct answer in words (shown to the reader; it grades correct itself).
    ``facts``: each entry is one fact, given as the phrasings that state it; every fact must appear.
    ``forbidden``: phrasings that make the answer wrong (the opposite verdict).
    ``commands`` (agent steps): the reply's first command must be one of these (verb and path).
    Matching is on normalised words: lower case, anything but letters and digits is a space.
    """

    answer: str
    facts: tuple[tuple[str, ...], ...] = ()
    forbidden: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DemoStep:
    """One model call of the workload, and the reference its answer is graded against."""

    task_id: str
    kind: str  # "agent" | "rag" | "support"
    request: Request
    reference: Reference


_AGENT_SYSTEM = """You are a careful coding agent working in a Python repository.
Current time: {now}
Request id: {rid}
Commands: open <path> | run_tests <path> | edit <path> <old> <new> | submit
Reply with one short thought and exactly one command. Read a file before you edit it.
Run the tests after every edit. When they pass, reply: submit"""

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
'''


def _numbered(text: str) -> str:
    return "\n".join(f"{i:>3}: {line}" for i, line in enumerate(text.splitlines(), 1))


def _test_log(passing: bool) -> str:
    lines = [
        "============================= test session starts ==============================",
        "platform linux -- Python 3.11.9, pytest-8.3.3, pluggy-1.5.0",
        "rootdir: /repo",
        "configfile: pyproject.toml",
        "collected 6 items",
        "",
    ]
    names = ["test_seconds", "test_hours", "test_combined", "test_empty", "test_garbage", "test_weeks"]
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
            "E           ValueError: trailing text: '2w'",
            "src/durations.py:22: ValueError",
            "=========================== short test summary info ============================",
            "FAILED tests/test_durations.py::test_weeks - ValueError: trailing text: '2w'",
            "========================= 1 failed, 5 passed in 0.41s ==========================",
        ]
    else:
        lines.append("=============================== 6 passed in 0.38s ==============================")
    return "\n".join(lines)


_TESTS = "run_tests tests/test_durations.py"
_OPEN_SRC, _OPEN_TESTS, _EDIT_SRC = (
    "open src/durations.py",
    "open tests/test_durations.py",
    "edit src/durations.py",
)

# The next commands the state allows at agent step k (after k recorded turns): the recorded one
# first, then any other that makes progress under the system prompt's rules (read before edit,
# run the tests after every edit).
_AGENT_REFERENCES = [
    # only the task: reproduce the failure, or read the code or the test
    Reference(_TESTS, commands=(_TESTS, _OPEN_SRC, _OPEN_TESTS)),
    # the failing log (ValueError at src/durations.py:22): read the code (or the test) before editing
    Reference(_OPEN_SRC, commands=(_OPEN_SRC, _OPEN_TESTS)),
    # the source is read and the unit table lacks "w": edit it
    Reference(_EDIT_SRC + ' \'"d": 86400}\' \'"d": 86400, "w": 604800}\'', commands=(_EDIT_SRC,)),
    # an edit was made: the rules say run the tests
    Reference(_TESTS, commands=(_TESTS,)),
    # still failing: read the file again, or edit the regex (the file was read before)
    Reference(_OPEN_SRC, commands=(_OPEN_SRC, _EDIT_SRC)),
]


def _agent_turns() -> list[tuple[str, str]]:
    """The agent's recorded replies (thought + command) and what each command printed."""
    half_fixed = _SOURCE.replace('"d": 86400}', '"d": 86400, "w": 604800}')
    return [
        ("Reproduce the failure first.\nrun_tests tests/test_durations.py", _test_log(False)),
        ("The parser rejects '2w'; read it.\nopen src/durations.py", _numbered(_SOURCE)),
        (
            'Add weeks to the unit table.\nedit src/durations.py \'"d": 86400}\' \'"d": 86400, "w": 604800}\'',
            "Edited src/durations.py: 1 replacement.",
        ),
        ("Run the tests again.\nrun_tests tests/test_durations.py", _test_log(False)),
        ("Still failing; look at the regex.\nopen src/durations.py", _numbered(half_fixed)),
        (
            "The regex lacks 'w'; add it.\nedit src/durations.py '([smhd])' '([smhdw])'",
            "Edited src/durations.py: 1 replacement.",
        ),
        ("Run the tests to confirm.\nrun_tests tests/test_durations.py", _test_log(True)),
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

# Each question with its reference: the facts of the document that answers it.
_RAG_QUESTIONS = [
    (
        "How long are daily snapshots kept on the Pro plan?",
        Reference("35 days [1]", facts=(("35 days", "35 day"),)),
    ),
    (
        "Which encryption is used for snapshots at rest?",
        Reference("AES-256 [4]", facts=(("aes 256", "aes256"),)),
    ),
    (
        "How fast does priority support answer a ticket?",
        Reference(
            "Within two hours, around the clock [5]", facts=(("two hours", "2 hours", "two hour", "2 hour"),)
        ),
    ),
]

_SUPPORT_SYSTEM = (
    "You are the support assistant of Acme Cloud. Answer in one short sentence, from these facts:\n"
    '- Password reset: click "Forgot password" on the sign-in page; a reset link arrives by email.\n'
    "- Plans: Standard costs 20 dollars per month, Pro costs 45 dollars per month.\n"
    "- Refunds: a full refund within 14 days of purchase; no refunds after 14 days.\n"
    "- Data export: CSV from Settings > Data > Export; JSON only through the API (GET /v1/export?format=json).\n"
    "If you do not know, say that a human agent will follow up."
)

_PASSWORD = Reference(
    'Click "Forgot password" on the sign-in page; a reset link arrives by email.',
    facts=(("forgot password", "reset link"),),
)
_PRO_PRICE = Reference("The Pro plan costs 45 dollars per month.", facts=(("45",),))
# The refund near-misses have opposite answers: yes within 14 days, no at 30 days.
_REFUND_14 = Reference(
    "Yes, you get a full refund within 14 days of purchase.",
    facts=(("yes", "14 days", "14 day"),),
    forbidden=("no", "cannot", "can t", "not able", "unable", "not eligible", "not possible"),
)
_REFUND_30 = Reference(
    "No: refunds are given only within 14 days of purchase.",
    facts=(("no", "not", "cannot", "can t", "14 days", "14 day"),),
    forbidden=("yes",),
)
_EXPORT_CSV = Reference("Export CSV from Settings > Data > Export.", facts=(("settings",), ("csv",)))
_EXPORT_JSON = Reference(
    "JSON export is only through the API: GET /v1/export?format=json.",
    facts=(("api", "v1 export"), ("json",)),
)

SUPPORT_MAX_TOKENS = 96
_SUPPORT = [
    ("How do I reset my password?", _PASSWORD),
    ("What does the Pro plan cost per month?", _PRO_PRICE),
    ("how do i reset my password", _PASSWORD),
    ("Can I get a refund within 14 days of purchase?", _REFUND_14),
    ("I forgot my password. How can I reset it?", _PASSWORD),
    ("How much is the Pro plan per month?", _PRO_PRICE),
    ("Can I get a refund within 30 days of purchase?", _REFUND_30),
    ("How do I export my data as CSV?", _EXPORT_CSV),
    ("How do I export my data as JSON?", _EXPORT_JSON),
    ("How do I reset my password?", _PASSWORD),
]


def build_workload(*, quick: bool = False, start: datetime | None = None) -> list[DemoStep]:
    """The demo's calls in order. ``quick`` keeps every kind of traffic but fewer turns."""
    now = start or datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
    steps: list[DemoStep] = []

    # SWE-agent style: commands in the assistant's text, command output back as a user turn.
    turns = _agent_turns()[: 3 if quick else 4]
    task = "agent: fix failing test"
    history: list[Message] = [
        Message("user", "tests/test_durations.py::test_weeks fails. Find the cause and fix it.")
    ]
    for k in range(len(turns) + 1):
        system = Message(
            "system",
            _AGENT_SYSTEM.format(
                now=(now + timedelta(seconds=17 * k)).strftime("%Y-%m-%d %H:%M:%S UTC"),
                rid=str(uuid.UUID(int=0x5EED0000 + k)),
            ),
        )
        req = Request(
            messages=(system, *history),
            params={"max_tokens": 24, "temperature": 0},
            metadata={"task_id": task, "task_type": "agent"},
        )
        steps.append(DemoStep(task, "agent", req, _AGENT_REFERENCES[k]))
        if k < len(turns):
            reply, output = turns[k]
            history += [Message("assistant", reply), Message("user", f"Observation:\n{output}")]

    task = "rag: product docs"
    docs = "\n\n".join(f"Document [{i}](Title: {t}) {body}" for i, (t, body) in enumerate(_DOCS, 1))
    for q, ref in _RAG_QUESTIONS[: 2 if quick else 3]:
        req = Request(
            messages=(
                Message(
                    "system", "Answer the question from the documents. Be brief and cite the document number."
                ),
                Message("user", f"Documents:\n{docs}"),
                Message("user", f"Question: {q}"),
            ),
            params={"max_tokens": 24, "temperature": 0},
            metadata={"task_id": task, "task_type": "rag"},
        )
        steps.append(DemoStep(task, "rag", req, ref))

    task = "support: repeated questions"
    for q, ref in _SUPPORT[: 7 if quick else len(_SUPPORT)]:
        req = Request(
            messages=(Message("system", _SUPPORT_SYSTEM), Message("user", q)),
            # room to finish: the cache never stores an answer cut off at max_tokens
            params={"max_tokens": SUPPORT_MAX_TOKENS, "temperature": 0},
            metadata={"task_id": task, "task_type": "support"},
        )
        steps.append(DemoStep(task, "support", req, ref))
    return steps
