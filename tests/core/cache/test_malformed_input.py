"""SemanticCache options and arguments of the wrong type are typed errors (found by ``reliability_fuzz``)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tokenlean.cache import SemanticCache
from tokenlean.errors import ConfigError, InputError


@pytest.mark.parametrize(
    "options",
    [
        {"guards": 5132},  # tuple(int) raised TypeError
        {"assume_deterministic": None},  # frozenset(None) raised TypeError
        {"ttl": math.nan},  # passed ``ttl <= 0``: every expiry would have been NaN
        {"top_k": 0},
        {"top_k": 2.5},
        {"min_cosine": math.nan},
        {"max_query_chars": -1},
        {"feedback_margin": math.inf},
        {"scope": "last_user"},
        {"backend": 42},
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SemanticCache(semantic=False, **options)


def test_chunks_that_are_not_a_list_of_str_are_an_input_error() -> None:
    cache = SemanticCache(semantic=False, assume_deterministic=True)
    with pytest.raises(InputError):
        cache.store("What is 2+2?", "4", chunks=object())  # type: ignore[arg-type]
    with pytest.raises(InputError):
        cache.store("What is 2+2?", "4", chunks=["4", 4])  # type: ignore[list-item]
    assert cache.store("What is 2+2?", "4", chunks=["4"]).stored


def test_a_tenant_that_is_not_a_string_is_refused_not_turned_into_a_namespace() -> None:
    cache = SemanticCache(semantic=False, assume_deterministic=True)
    cache.store("What is 2+2?", "4", tenant="5")
    with pytest.raises(InputError):
        cache.lookup("What is 2+2?", tenant=5)  # type: ignore[arg-type]
    assert cache.lookup("What is 2+2?", tenant="5").hit
