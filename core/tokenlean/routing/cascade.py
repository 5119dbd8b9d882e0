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
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tokenlean.errors import ConfigError
from tokenlean.routing.decision import Decision, OutputControl, check_count
from tokenlean.routing.wire import mean_logprob
from tokenlean.types import Message, Request, Response

__all__ = [
    "Cascade",
    "Consistency",
    "LearnedVerifier",
    "MeanLogprob",
    "SelfCheck",
    "Signal",
    "Validate",
    "Verdict",
    "answer_features",
    "arithmetic_errors",
    "arithmetic_validator",
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
        return replace(
            request,
            params={**request.params, "temperature": self.temperature, "seed": seed, "logprobs": False},
        )

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
        check_count(max_tokens, "SelfCheck.max_tokens", minimum=1)
        self.prompt, self.max_tokens = prompt, max_tokens

    def prepare(self, request: Request) -> Request:
        return request

    def extra_request(self, request: Request, answer: Response) -> Request | None:
        last = request.last_user
        q = last.text if last is not None else ""
        msg = Message("user", self.prompt.format(question=q, answer=answer.text))
        return Request(
            (msg,),
            model=request.model,
            params={"max_tokens": self.max_tokens, "temperature": 0},
            metadata=request.metadata,
        )

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
        return Decision(
            self.cheap,
            f"cascade: {self.cheap} first, escalate to {self.strong} on {names}",
            self.name,
            output=self.output,
            cascade=self,
        )

    def prepare(self, request: Request) -> Request:
        for s in self.signals:
            request = s.prepare(request)
        return request

    def extra_requests(self, request: Request, answer: Response) -> list[Request | None]:
        return [s.extra_request(request, answer) for s in self.signals]

    def judge(
        self, request: Request, answer: Response, extras: Sequence[Response | None]
    ) -> tuple[bool, list[Verdict]]:
        verdicts = [s.judge(request, answer, e) for s, e in zip(self.signals, extras, strict=True)]
        fired = [v.escalate for v in verdicts]
        escalate = any(fired) if self.mode == "any" else all(fired)
        return escalate, verdicts


# -- arithmetic check and a learned verifier ----------------------------------------------------------

_ANNOTATED = re.compile(r"<<([^=<>]{1,200})=([^<>]{1,60})>>")
_INLINE = re.compile(
    r"(-?\d[\d,]*(?:\.\d+)?)\s*([-+*/x×÷])\s*(\d[\d,]*(?:\.\d+)?)\s*=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)"
)
_HEDGES = re.compile(
    r"\b(however|but wait|wait|actually|mistake|incorrect|re-?evaluate|re-?calculate|assum\w*|approximately|round(?:ed|ing)?|cannot|can't|unclear|not sure)\b",
    re.I,
)


def _safe_arith(expr: str) -> float | None:
    """Evaluate + - * / ** and parentheses over numbers; anything else is ``None`` (never ``eval``)."""
    import ast
    import operator

    ops: dict[type, Callable[..., float]] = {
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: operator.mul,
        ast.Div: operator.truediv,
        ast.Pow: operator.pow,
        ast.USub: operator.neg,
        ast.UAdd: operator.pos,
    }

    def ev(node: ast.AST) -> float:
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool)
        ):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            right = ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 12:
                raise ValueError("exponent too large")
            return ops[type(node.op)](ev(node.left), right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.operand))
        raise ValueError("not arithmetic")

    try:
        return ev(
            ast.parse(
                expr.replace(",", "").replace("x", "*").replace("×", "*").replace("÷", "/"), mode="eval"
            ).body
        )
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None


def arithmetic_errors(text: str) -> tuple[int, int]:
    """``(wrong, checked)`` arithmetic steps in ``text`` (``<<a*b=c>>`` annotations and ``a * b = c``).

    A cheap "unit test" for chain-of-thought answers: a step whose stated result is not what the
    expression evaluates to is a strong sign the final answer is wrong.
    """
    wrong = checked = 0
    for m in _ANNOTATED.finditer(text):
        checked += 1
        got = _safe_arith(m.group(1))
        try:
            want = float(m.group(2).replace(",", "").strip().rstrip("."))
        except ValueError:
            wrong += 1
            continue
        if got is None or abs(got - want) > 1e-4 * max(1.0, abs(want)):
            wrong += 1
    for m in _INLINE.finditer(_ANNOTATED.sub(" ", text)):
        checked += 1
        got = _safe_arith(f"({m.group(1)}){m.group(2)}({m.group(3)})")
        want = float(m.group(4).replace(",", ""))
        if got is None or abs(got - want) > 1e-2 * max(1.0, abs(want)):
            wrong += 1
    return wrong, checked


def arithmetic_validator(text: str) -> bool:
    """``Validate(arithmetic_validator)``: reject answers with a wrong arithmetic step."""
    return arithmetic_errors(text)[0] == 0


def answer_features(question: str, answer: str) -> list[float]:
    """Model-agnostic signs of a shaky answer: length, hedging, wrong arithmetic, answer shape."""
    nums = _NUM.findall(answer)
    final = nums[-1].replace(",", "").rstrip(".") if nums else ""
    wrong, checked = arithmetic_errors(answer)
    hedges = len(_HEDGES.findall(answer))
    q_nums = {n.replace(",", "") for n in _NUM.findall(question)}
    return [
        math.log1p(len(answer)),
        math.log1p(len(question)),
        float("####" in answer or "answer is" in answer.lower()),
        float("." in final and not final.endswith(".0")),
        float(final.startswith("-")),
        float(wrong),
        float(wrong > 0),
        math.log1p(checked),
        float(hedges),
        float(hedges > 0),
        float(bool(final) and final in q_nums),
        math.log1p(len(nums)),
    ]


class LearnedVerifier:
    """Escalation signal learned from outcome data: P(cheap answer is wrong | question, answer).

    Trained on rows of (question, the cheap model's answer, whether it was right) with a numpy
    logistic head over the question embedding and ``answer_features``. As a ``Signal`` it needs
    no extra call, so a cascade using it costs one cheap call plus the escalations.
    """

    name = "learned_verifier"

    def __init__(
        self, threshold: float = 0.5, *, embedder: Any = None, use_embedding: bool = True, l2: float = 1e-2
    ) -> None:
        self.threshold = threshold
        self._embedder = embedder
        self.use_embedding = use_embedding
        self.l2 = l2
        self._mu: np.ndarray | None = None
        self._sd: np.ndarray | None = None
        self._head: Any = None

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from tokenlean.embeddings import get_static_embedder

            self._embedder = get_static_embedder()
        return self._embedder

    def _x(
        self, questions: Sequence[str], answers: Sequence[str], vectors: np.ndarray | None, fit: bool
    ) -> np.ndarray:
        f = np.array(
            [answer_features(q, a) for q, a in zip(questions, answers, strict=True)], dtype=np.float64
        )
        if fit:
            self._mu, self._sd = f.mean(axis=0), f.std(axis=0) + 1e-6
        assert self._mu is not None and self._sd is not None
        f = (f - self._mu) / self._sd * 0.3
        if not self.use_embedding:
            return f
        vecs = np.asarray(
            self.embedder.embed(list(questions)) if vectors is None else vectors, dtype=np.float64
        )
        return np.hstack([vecs, f])

    def fit(
        self,
        questions: Sequence[str],
        answers: Sequence[str],
        answer_ok: Sequence[float],
        *,
        vectors: np.ndarray | None = None,
    ) -> LearnedVerifier:
        from tokenlean.routing.scorers import LogisticScorer

        y = 1.0 - np.clip(np.asarray(answer_ok, dtype=np.float64), 0.0, 1.0)
        self._head = LogisticScorer(l2=self.l2).fit(self._x(questions, answers, vectors, True), y)
        return self

    def score(
        self, questions: Sequence[str], answers: Sequence[str], *, vectors: np.ndarray | None = None
    ) -> np.ndarray:
        if self._head is None:
            raise ConfigError("LearnedVerifier.fit() first")
        return np.asarray(self._head.predict(self._x(questions, answers, vectors, False)), dtype=np.float64)

    def calibrate(
        self,
        questions: Sequence[str],
        answers: Sequence[str],
        escalate_share: float,
        *,
        vectors: np.ndarray | None = None,
    ) -> float:
        from tokenlean.routing.scorers import calibrate_threshold

        self.threshold = calibrate_threshold(self.score(questions, answers, vectors=vectors), escalate_share)
        return self.threshold

    def prepare(self, request: Request) -> Request:
        return request

    def extra_request(self, request: Request, answer: Response) -> Request | None:
        return None

    def judge(self, request: Request, answer: Response, extra: Response | None) -> Verdict:
        last = request.last_user
        p = float(self.score([last.text if last else ""], [answer.text])[0])
        verb = ">=" if p >= self.threshold else "<"
        return Verdict(p >= self.threshold, f"P(wrong)={p:.2f} {verb} {self.threshold:.2f}", p)
