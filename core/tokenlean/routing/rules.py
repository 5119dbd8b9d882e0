"""Declarative rules: the cheapest policy (no model), fully predictable, so it goes first."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tokenlean._checks import str_items
from tokenlean.errors import ConfigError, InputError
from tokenlean.routing.decision import Decision, OutputControl, check_count
from tokenlean.types import Request

__all__ = ["Rule", "RulesPolicy"]


def _uses_tools(request: Request) -> bool:
    return bool(request.tools) or any(m.tool_calls or m.role == "tool" for m in request.messages)


@dataclass(frozen=True)
class Rule:
    """A declarative match; every given condition must hold.

    ``tags``: all must be in ``request.metadata["tags"]``; ``task_type``: equals
    ``metadata["task_type"]``; ``min_tokens``/``max_tokens``: bounds on the prompt's token count;
    ``has_tools``: whether the request uses tools, i.e. tools are attached *or* the conversation is
    a tool loop (a tool call or a tool result in its messages). Traces often leave the tool schemas
    out while keeping the calls, and a turn that must act on a tool's result is an agent step, not
    a short question; ``when``: any extra predicate.
    """

    target: str
    tags: tuple[str, ...] = ()
    task_type: str | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    has_tools: bool | None = None
    when: Callable[[Request], bool] | None = None
    output: OutputControl | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.target, str):
            raise ConfigError(f"Rule.target must name a target (str), got {self.target!r}")
        object.__setattr__(self, "tags", str_items(self.tags, "Rule.tags"))
        if self.has_tools is not None and not isinstance(self.has_tools, bool):
            raise ConfigError(f"Rule.has_tools must be True, False or None, got {self.has_tools!r}")
        if self.when is not None and not callable(self.when):
            raise ConfigError("Rule.when must be a predicate (a callable) or None")
        if self.output is not None and not isinstance(self.output, OutputControl):
            raise ConfigError("Rule.output must be an OutputControl or None")
        check_count(self.min_tokens, "Rule.min_tokens", minimum=0)
        check_count(self.max_tokens, "Rule.max_tokens", minimum=0)
        if self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ConfigError(
                f"Rule.min_tokens ({self.min_tokens}) is above Rule.max_tokens ({self.max_tokens}): "
                "the rule could never match"
            )

    def matches(self, request: Request, n_tokens: Callable[[], int]) -> str | None:
        """The reason when the rule matches, else ``None``."""
        why: list[str] = []
        md = request.metadata
        if self.tags:
            raw = md.get("tags") or ()
            if isinstance(raw, str):
                have = {raw}
            elif isinstance(raw, (Mapping, list, tuple, set, frozenset)):
                have = {t for t in raw if isinstance(t, str)}  # a mapping's keys are its tags
            else:
                raise InputError(f"metadata 'tags' must be a str, a list of str or a mapping, got {raw!r}")
            if not set(self.tags) <= have:
                return None
            why.append(f"tags {sorted(self.tags)}")
        if self.task_type is not None:
            if md.get("task_type") != self.task_type:
                return None
            why.append(f"task_type={self.task_type}")
        if self.has_tools is not None:
            if _uses_tools(request) != self.has_tools:
                return None
            why.append("tools present" if self.has_tools else "no tools")
        if self.min_tokens is not None or self.max_tokens is not None:
            n = n_tokens()
            if self.min_tokens is not None and n < self.min_tokens:
                return None
            if self.max_tokens is not None and n > self.max_tokens:
                return None
            why.append(f"{n} prompt tokens")
        if self.when is not None:
            if not self.when(request):
                return None
            why.append(getattr(self.when, "__name__", "predicate"))
        return ", ".join(why) or "always"


class RulesPolicy:
    """First matching rule wins. Cheap (no model) and fully predictable: put it first."""

    name = "rules"

    def __init__(self, rules: Sequence[Rule], *, model_for_tokens: str | None = None) -> None:
        self.rules = list(rules)
        self.model_for_tokens = model_for_tokens

    def decide(self, request: Request) -> Decision | None:
        cache: list[int] = []

        def n_tokens() -> int:
            if not cache:
                from tokenlean.tokens import count_messages

                cache.append(count_messages(request.messages, self.model_for_tokens))
            return cache[0]

        for i, rule in enumerate(self.rules):
            why = rule.matches(request, n_tokens)
            if why is not None:
                label = rule.name or f"rule {i}"
                return Decision(rule.target, f"{label}: {why}", self.name, output=rule.output)
        return None
