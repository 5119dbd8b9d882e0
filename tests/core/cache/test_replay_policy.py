"""What the cache may store and serve: only answers the same request would get again (issue 13).

Sampling is explicit (an unset temperature is the provider's default, which samples), truncated /
filtered / unknown-reason answers are never stored, and per-request lines that the layout lever
moves into the new turn are matched exactly, not semantically.
"""

from __future__ import annotations

import pytest

from tokenlean.cache import SemanticCache
from tokenlean.cache.scope import ScopeConfig, scope_of, split_volatile
from tokenlean.errors import ConfigError
from tokenlean.types import Message, Request, Response


def _call(text: str, model: str = "m", **params: object) -> Request:
    return Request(messages=(Message(role="user", content=text),), model=model, params=params)


def _answer(text: str, finish: str | None = "stop") -> Response:
    return Response(message=Message(role="assistant", content=text), finish_reason=finish)


@pytest.fixture
def exact() -> SemanticCache:
    return SemanticCache(semantic=False)


def test_unset_temperature_is_sampled_not_deterministic(exact: SemanticCache) -> None:
    unset = _call("Name a colour.")
    stored = exact.store(unset, _answer("Red."))
    assert not stored and "temperature unset" in str(stored.reason)
    assert exact.lookup(unset).rejected_by == "uncacheable"
    # explicit 0 is deterministic; explicit 1.0 is sampled
    assert exact.store(_call("Name a colour.", temperature=0), _answer("Red."))
    assert exact.lookup(_call("Name a colour.", temperature=0)).hit
    assert not exact.store(_call("Name a colour.", temperature=1.0), _answer("Blue."))
    assert exact.lookup(_call("Name a colour.", temperature=1.0)).rejected_by == "uncacheable"
    # a temperature that is not a number is not guessed at
    assert "not a number" in str(exact.store(_call("x", temperature="hot"), _answer("y")).reason)


def test_assume_deterministic_for_all_or_named_models() -> None:
    every = SemanticCache(semantic=False, assume_deterministic=True)
    assert every.store(_call("Name a colour."), _answer("Red."))
    assert every.lookup(_call("Name a colour.")).hit
    assert not every.store(_call("Poem", temperature=0.8), _answer("Roses."))  # explicit sampling stays

    named = SemanticCache(semantic=False, assume_deterministic={"local-greedy"})
    assert named.store(_call("Q?", model="local-greedy"), _answer("A."))
    assert not named.store(_call("Q?", model="hosted"), _answer("A."))
    with pytest.raises(ConfigError):
        SemanticCache(assume_deterministic="local-greedy")  # type: ignore[arg-type]


def test_several_choices_are_not_one_answer(exact: SemanticCache) -> None:
    assert "n=3" in str(exact.store(_call("Q?", temperature=0, n=3), _answer("A.")).reason)
    assert exact.store(_call("Q?", temperature=0, n=1), _answer("A."))
    assert not exact.lookup(_call("Q?", temperature=0, n=3)).hit


@pytest.mark.parametrize(
    ("finish", "stored"),
    [
        ("stop", True),
        ("STOP", True),  # Google spells it in capitals
        ("end_turn", True),
        (None, True),  # not reported: nothing says it was cut
        ("length", False),
        ("max_tokens", False),
        ("content_filter", False),
        ("SAFETY", False),
        ("error", False),
        ("something_new", False),  # an unknown reason is not assumed complete
    ],
)
def test_only_complete_answers_are_stored(exact: SemanticCache, finish: str | None, stored: bool) -> None:
    result = exact.store(_call("Explain DNS.", temperature=0), _answer("DNS maps names", finish))
    assert bool(result) is stored
    assert exact.lookup(_call("Explain DNS.", temperature=0)).hit is stored


def test_text_only_store_and_lookup_need_no_sampling_settings(exact: SemanticCache) -> None:
    """A plain string is not a model call: there is no temperature to judge."""
    assert exact.store("What is our refund policy?", "30 days.")
    assert exact.lookup("what is our refund policy").hit


def test_volatile_lines_split_off_the_question() -> None:
    assert split_volatile("Current time: 10:42:13\nWhat is the capital of France?") == (
        "Current time: 10:42:13\n",
        "What is the capital of France?",
    )
    assert split_volatile("What is the capital of France?") == ("", "What is the capital of France?")
    only = "Current time: 10:42:13"
    assert split_volatile(only) == ("", only)  # nothing would remain: keep it whole


def test_volatile_lines_are_matched_exactly_not_semantically(exact: SemanticCache) -> None:
    day1 = _call("Today is 2026-12-05.\nWhat is the capital of France?", temperature=0)
    day1_again = _call("Today is 2026-12-05.\nwhat is the capital of france", temperature=0)
    day2 = _call("Today is 2026-12-06.\nWhat is the capital of France?", temperature=0)
    s1, s2 = scope_of(day1), scope_of(day2)
    assert s1.query == s2.query == "What is the capital of France?"
    assert s1.namespace != s2.namespace
    exact.store(day1, _answer("Paris."))
    assert exact.lookup(day1_again).hit
    assert not exact.lookup(day2).hit
    ignoring = SemanticCache(semantic=False, scope=ScopeConfig(volatile="ignore"))
    ignoring.store(day1, _answer("Paris."))
    assert ignoring.lookup(day2).hit  # the user declared that answers never depend on the date
    with pytest.raises(ConfigError):
        ScopeConfig(volatile="drop")


def test_message_extras_and_user_names_are_part_of_the_key(exact: SemanticCache) -> None:
    a = Request(
        messages=(Message(role="user", content="Describe it.", extra={"attachment": "sha:1"}),),
        params={"temperature": 0},
    )
    b = Request(
        messages=(Message(role="user", content="Describe it.", extra={"attachment": "sha:2"}),),
        params={"temperature": 0},
    )
    assert scope_of(a).namespace != scope_of(b).namespace
    exact.store(a, _answer("A cat."))
    assert not exact.lookup(b).hit
