"""Grading the demo's answers against the references bundled with the workload.

One grader for both runs: an answer is correct when every fact of its step's ``Reference``
appears (in any of its phrasings), no forbidden phrasing does, and, for an agent step, the
reply's first command is one the repository's state allows. An answer that repeats the first line
of its system prompt (a base model continuing the prompt) is not an answer, whatever it quotes.
Matching is on normalised words
(lower case; anything but letters and digits is a space), so "AES-256" matches "aes 256" and
"$45" matches "45", but "135 days" does not contain "35 days".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["correct_answers", "first_command", "grade", "normalise"]

_VERBS = ("open", "run_tests", "edit", "submit")


def normalise(text: str) -> str:
    """Lower-case words separated by single spaces, padded with one space on each side."""
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split()) + " "


def first_command(reply: str) -> str | None:
    """The first line of ``reply`` that is an agent command (verb and path), or ``None``.

    Markdown code fences, backticks and a leading ``$`` are ignored; a path keeps only
    trailing sentence punctuation stripped (``open src/x.py:10`` is not ``open src/x.py``).
    """
    for raw in reply.splitlines():
        line = raw.strip().strip("`").strip()
        if line.startswith("$ "):
            line = line[2:].strip()
        parts = line.split()
        if not parts or parts[0] not in _VERBS:
            continue
        if parts[0] == "submit" or len(parts) < 2:
            return parts[0]
        return f"{parts[0]} {parts[1].rstrip('.,;')}"
    return None


def grade(text: str, reference: Any, system: str | None = None) -> bool:
    """Whether ``text`` is a correct answer to a step with this ``Reference`` (and system prompt)."""
    words = normalise(text)
    if system and system.strip() and normalise(system.strip().splitlines()[0]) in words:
        return False
    if reference.commands:
        cmd = first_command(text)
        if cmd is None or cmd not in {" ".join(c.split()[:2]) for c in reference.commands}:
            return False
    for fact in reference.facts:
        if not any(normalise(p) in words for p in fact):
            return False
    return not any(normalise(p) in words for p in reference.forbidden)


def correct_answers(records: Sequence[Any], steps: Sequence[Any]) -> dict[str, tuple[int, int]]:
    """Per task: (answers graded correct, answers), for one run's records in step order."""
    out: dict[str, tuple[int, int]] = {}
    for rec, step in zip(records, steps, strict=True):
        ok, n = out.get(step.task_id, (0, 0))
        msgs = step.request.messages
        system = msgs[0].content if msgs and msgs[0].role == "system" else None
        system = system if isinstance(system, str) else None
        out[step.task_id] = (ok + int(grade(rec.text, step.reference, system)), n + 1)
    return out
