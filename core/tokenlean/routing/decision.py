"""Decisions: where a request goes and why, and the one-method protocol every policy follows.

A policy looks at a ``Request`` and returns a ``Decision`` (target, reason, score, output
control) or ``None`` for "no opinion" so policies chain: cheap rules first, then semantic routes,
then a learned router, then the router's default. Every decision carries a human-readable
``reason``; a decision nobody can explain cannot be debugged or trusted.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from tokenlean._checks import str_items
from tokenlean.errors import ConfigError, InputError
from tokenlean.types import Message, Request

__all__ = ["Decision", "OutputControl", "RoutingPolicy", "check_count", "prompt_text"]


def check_count(value: object, name: str, *, minimum: int) -> None:
    """Raise ``ConfigError`` unless ``value`` is ``None`` or a whole number >= ``minimum``.

    Token bounds are compared and sent as they are: a negative or fractional one would be
    silently meaningless (a rule that never matches, a cap every server refuses).
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class OutputControl:
    """ "Generate less": a per-route cap on output, applied to the request before it is sent.

    Output tokens cost several times what input tokens do at most providers and dominate latency, so a route for
    short factual answers should say so. ``instruction`` is appended as a system message.
    """

    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    instruction: str | None = None

    def __post_init__(self) -> None:
        check_count(self.max_tokens, "OutputControl.max_tokens", minimum=1)
        # a bare string would be spread into one stop sequence per character
        object.__setattr__(self, "stop", str_items(self.stop, "OutputControl.stop"))
        if self.instruction is not None and not isinstance(self.instruction, str):
            raise ConfigError(f"OutputControl.instruction must be a str or None, got {self.instruction!r}")

    def apply(self, request: Request) -> Request:
        params = dict(request.params)
        if self.max_tokens is not None:
            current = params.get("max_tokens", params.get("max_completion_tokens"))
            if isinstance(current, bool) or not isinstance(current, int) or current < 1:
                current = None  # no usable cap of the caller's (check_request refuses one before sending)
            params["max_tokens"] = self.max_tokens if current is None else min(current, self.max_tokens)
            params.pop("max_completion_tokens", None)
        if self.stop:
            old = params.get("stop") or []
            old = [old] if isinstance(old, str) else old
            if not isinstance(old, (list, tuple)) or not all(isinstance(x, str) for x in old):
                raise InputError(f"the request's 'stop' must be a str or a list of str, got {old!r}")
            params["stop"] = list(dict.fromkeys([*old, *self.stop]))[:4]  # OpenAI allows 4
        messages = request.messages
        if self.instruction:
            messages = (*messages, Message("system", self.instruction))
        return replace(request, params=params, messages=messages)

    def to_dict(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "stop": list(self.stop), "instruction": self.instruction}


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes and why.

    ``target`` names a model group of the router. ``score`` is the policy's number (similarity,
    predicted strong-win probability) when it has one. ``replica``, ``escalated`` and
    ``fallback_from`` are filled in by the router once the call has run.
    """

    target: str
    reason: str
    policy: str
    score: float | None = None
    output: OutputControl | None = None
    cascade: Any = None  # a Cascade when the target is "cheap first, maybe escalate"
    replica: str | None = None
    escalated: bool = False
    fallback_from: tuple[str, ...] = ()
    latency_ms: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "reason": self.reason,
            "policy": self.policy,
            "score": self.score,
            "output": None if self.output is None else self.output.to_dict(),
            "replica": self.replica,
            "escalated": self.escalated,
            "fallback_from": list(self.fallback_from),
            "latency_ms": self.latency_ms,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }


@runtime_checkable
class RoutingPolicy(Protocol):
    """One method: a decision, or ``None`` to let the next policy decide."""

    name: str

    def decide(self, request: Request) -> Decision | None: ...


def prompt_text(request: Request, max_chars: int = 2000) -> str:
    """The text a quality policy judges: the last user turn (what the model must answer now)."""
    last = request.last_user
    text = last.text if last is not None else (request.messages[-1].text if request.messages else "")
    return text[:max_chars]
