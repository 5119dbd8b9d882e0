"""Cascades: ask the cheap model first, escalate to the strong one only when a signal says so.

FrugalGPT and AutoMix show most answers of a good cheap model are fine; the trick is noticing the
ones that are not. Each ``Signal`` looks at the cheap answer, optionally after one extra cheap
call (a second sample, a self-check), and says "escalate" with a reason:

* ``MeanLogprob``: the mean token log-probability is below a threshold (the model was unsure).
* ``Consistency``: a second sample at a higher temperature disagrees with the first.
* ``Validate``: a user validator (regex, JSON schema, or any callable, e.g. a unit test) rejects it.
* ``SelfCheck``: the cheap model, asked whether its answer is correct, does not say yes.

I/O stays out of the signals (``extra_request`` says what to ask, ``judge`` reads the answers),
so the router runs the same logic on its sync and async paths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from tokenlean.errors import ConfigError
from tokenlean.routing.endpoints import mean_logprob
from tokenlean.routing.policies import Decision, OutputControl
from tokenlean.types import Message, Request, Response

__all__ = [
    "Cascade",
    "Consistency",
    "MeanLogprob",
    "SelfCheck",
    "Signal",
    "Validate",
    "Verdict",
    "json_schema_validator",
    "regex_validator",
]


@dataclass(frozen=True, slots=True)
class Verdict:
    escalate: bool
    reason: str
    value: float | None = None


@runtime_checkable
class Signal(Protocol):
    name: str

    def prepare(self, request: Request) -> Request:
        """Adjust the cheap request (e.g. ask for logprobs)."""
        ...

    def extra_request(self, request: Request, answer: Response) -> Request | None:
        """A second cheap call this signal needs, or ``None``."""
        ...

    def judge(self, request: Request, answer: Response, extra: Response | None) -> Verdict: ...


class _NoExtra:
    def prepare(self, request: Request) -> Request:
        return request

    def extra_request(self, request: Request, answer: Response) -> Request | None:
        return None


class MeanLogprob(_NoExtra):
    """Escalate when the mean token logprob is below ``threshold`` (asks the server for logprobs)."""

    name = "mean_logprob"

    def __init__(self, threshold: float = -1.0) -> None:
        self.threshold = threshold

    def prepare(self, request: Request) -> Request:
        return replace(request, params={**request.params, "logprobs": True})

    def judge(self, request: Request, answer: Response, extra: Response | None) -> Verdict:
        m = mean_logprob(answer)
        if m is None:
            return Verdict(False, "no logprobs returned; signal skipped")
        if m < self.threshold:
            return Verdict(True, f"mean logprob {m:.2f} < {self.threshold:.2f}", m)
        return Verdict(False, f"mean logprob {m:.2f} >= {self.threshold:.2f}", m)


_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORD = re.compile(r"\w+")


def _final_number(text: str) -> str | None:
    nums = _NUM.findall(text)
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def agreement(a: str, b: str) -> float:
    """1.0 when two answers agree: same final number if both have one, else word-set Jaccard."""
    na, nb = _final_number(a), _final_number(b)
    if na is not None and nb is not None:
        try:
            return 1.0 if float(na) == float(nb) else 0.0
        except ValueError:
            return 1.0 if na == nb else 0.0
    wa, wb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / max(1, len(wa | wb))


class Consistency:
    """Escalate when a second cheap sample disagrees with the first (self-consistency).

    ``compare`` maps two answer texts to an agreement in [0, 1] (default: final number, else
    word-set Jaccard); below ``min_agreement`` the model is guessing, so escalate.
    """

    name = "consistency"

    def __init__(
        self,
        min_agreement: float = 0.5,
        temperature: float = 0.9,
        compare: Callable[[str, str], float] = agreement,
    ) -> None:
        self.min_agreement, self.temperature, self.compare = min_agreement, temperature, compare

    def prepare(self, request: Request) -> Request:
        return request

    def extra_request(self, request: Request, answer: Response) -> Request | None:
        seed = int(request.params.get("seed", 0)) + 1
        return replace(request, params={**request.params, "temperature": self.temperature, "seed": seed, "logprobs": False})

    def judge(self, request: Request, answer: Response, extra: Response | None) -> Verdict:
        if extra is None:
            return Verdict(False, "no second sample; signal skipped")
        a = self.compare(answer.text, extra.text)
        if a < self.min_agreement:
            return Verdict(True, f"two samples agree {a:.2f} < {self.min_agreement:.2f}", a)
        return Verdict(False, f"two samples agree {a:.2f}", a)


def regex_validator(pattern: str, flags: int = re.S) -> Callable[[str], bool]:
    rx = re.compile(pattern, flags)

    def check(text: str) -> bool:
        return rx.search(text) is not None

    check.__name__ = f"regex {pattern!r}"
    return check


def json_schema_validator(schema: Mapping[str, Any]) -> Callable[[str], bool]:
    """Valid JSON matching ``schema`` (``jsonschema`` when installed, else a type/required/enum subset)."""

    def check(text: str) -> bool:
        body = text.strip()
        if body.startswith("```"):
            body = body.strip("`").split("\n", 1)[-1]
        try:
            doc = json.loads(body)
        except json.JSONDecodeError:
            return False
        try:
            import jsonschema  # type: ignore[import-untyped]
        except ImportError:
            return _mini_validate(doc, schema)
        try:
            jsonschema.validate(doc, schema)
        except jsonschema.ValidationError:
            return False
        return True

    check.__name__ = "json schema"
    return check


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _mini_validate(doc: Any, schema: Mapping[str, Any]) -> bool:
    t = schema.get("type")
    if isinstance(t, str):
        if t not in _TYPES or not isinstance(doc, _TYPES[t]):
            return False
        if t in ("integer", "number") and isinstance(doc, bool):
            return False
    if "enum" in schema and doc not in schema["enum"]:
        return False
    if isinstance(doc, dict):
        if any(k not in doc for k in schema.get("required", ())):
            return False
        for k, sub in (schema.get("properties") or {}).items():
            if k in doc and not _mini_validate(doc[k], sub):
                return False
    if isinstance(doc, list) and isinstance(schema.get("items"), Mapping):
        return all(_mini_validate(x, schema["items"]) for x in doc)
    return True


class Validate(_NoExtra):
    """Escalate when ``check(answer_text)`` is false (or raises): regex, JSON schema, unit test."""

    name = "validator"

    def __init__(self, check: Callable[[str], bool], name: str | None = None) -> None:
        self.check = check
        self.label = name or getattr(check, "__name__", "validator")

    def judge(self, request: Request, answer: Response, extra: Response | None) -> Verdict:
        try:
            ok = bool(self.check(answer.text))
        except Exception as exc:  # a validator that raises has rejected the answer
            return Verdict(True, f"{self.label} raised {type(exc).__name__}: {exc}")
        return Verdict(not ok, f"{self.label} {'passed' if ok else 'failed'}")


SELF_CHECK_PROMPT = (
    "Question:\n{question}\n\nProposed answer:\n{answer}\n\n"
    "Is the proposed answer correct and complete? Reply with exactly one word: yes or no."
)


class SelfCheck:
    """Escalate unless the cheap model, shown its own answer, replies "yes" (AutoMix-style)."""

    name = "self_check"

    def __init__(self, prompt: str = SELF_CHECK_PROMPT, max_tokens: int = 4) -> None:
        self.prompt, self.max_tokens = prompt, max_tokens

    def prepare(self, request: Request) -> Request:
        return request

    def extra_request(self, request: Request, answer: Response) -> Request | None:
        last = request.last_user
        q = last.text if last is not None else ""
        msg = Message("user", self.prompt.format(question=q, answer=answer.text))
        return Request((msg,), model=request.model, params={"max_tokens": self.max_tokens, "temperature": 0}, metadata=request.metadata)

    def judge(self, request: Request, answer: Response, extra: Response | None) -> Verdict:
        if extra is None:
            return Verdict(False, "no self-check answer; signal skipped")
        words = _WORD.findall(extra.text.lower())
        ok = bool(words) and words[0] == "yes"
        return Verdict(not ok, f"self-check said {extra.text.strip()[:20]!r}")


class Cascade:
    """A policy that routes to ``cheap`` and tells the router to escalate to ``strong`` on a signal.

    ``mode="any"`` escalates when any signal fires (safer), ``"all"`` only when all do (cheaper).
    """

    name = "cascade"

    def __init__(
        self,
        cheap: str,
        strong: str,
        signals: Sequence[Signal],
        *,
        mode: str = "any",
        output: OutputControl | None = None,
        strong_output: OutputControl | None = None,
    ) -> None:
        if not signals:
            raise ConfigError("a Cascade needs at least one escalation signal")
        if mode not in ("any", "all"):
            raise ConfigError("mode must be 'any' or 'all'")
        self.cheap, self.strong, self.signals, self.mode = cheap, strong, list(signals), mode
        self.output, self.strong_output = output, strong_output

    def decide(self, request: Request) -> Decision:
        names = ", ".join(s.name for s in self.signals)
        return Decision(self.cheap, f"cascade: {self.cheap} first, escalate to {self.strong} on {names}", self.name, output=self.output, cascade=self)

    def prepare(self, request: Request) -> Request:
        for s in self.signals:
            request = s.prepare(request)
        return request

    def extra_requests(self, request: Request, answer: Response) -> list[Request | None]:
        return [s.extra_request(request, answer) for s in self.signals]

    def judge(self, request: Request, answer: Response, extras: Sequence[Response | None]) -> tuple[bool, list[Verdict]]:
        verdicts = [s.judge(request, answer, e) for s, e in zip(self.signals, extras, strict=True)]
        fired = [v.escalate for v in verdicts]
        escalate = any(fired) if self.mode == "any" else all(fired)
        return escalate, verdicts
