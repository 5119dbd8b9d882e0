"""Each guard vetoes the near-miss it is meant for and lets true paraphrases through."""

from __future__ import annotations

import pytest

from tokenlean.cache.guards import ALL_GUARDS, extract, failed_guard
from tokenlean.cache.scope import normalize_text


@pytest.mark.parametrize(
    ("a", "b", "guard"),
    [
        ("How long is a 4 day trip to Rome?", "How long is a 11 day trip to Rome?", "numbers"),
        ("Is it cheaper to book four nights?", "Is it cheaper to book 5 nights?", "numbers"),
        ("Can I use my card abroad?", "Can I not use my card abroad?", "negation"),
        ("Why can't I log in?", "Why can I log in?", "negation"),
        ("How much is a flight from Paris to Rome?", "How much is a flight from Rome to Paris?", "order"),
        ("Is Python better than Java?", "Is Java better than Python?", "order"),
        ('What does the error "disk full" mean?', 'What does the error "disk quota" mean?', "quoted"),
        ("How do I call os.path.join in Python?", "How do I call os.path.split in Python?", "code"),
        ("What is the weather like in March in Rome?", "What is the weather like in June in Rome?", "dates"),
        ("What is the best hotel in Berlin?", "What is the best hotel in Munich?", "entities"),
    ],
)
def test_guard_rejects_near_miss(a: str, b: str, guard: str) -> None:
    assert not ALL_GUARDS[guard](extract(a), extract(b))
    assert failed_guard(extract(a), extract(b)) is not None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reset my password?", "How can I reset my password"),
        ("What is the best way to learn Python?", "What's the best way to learn python?"),
        ("How much is a flight from Paris to Rome?", "What does a flight from Paris to Rome cost?"),
        ("Which is better: Python or Java?", "Which is better, Java or Python?"),
        ("Why can't I log in?", "Why am I not able to log in?"),
        ("How do I call os.path.join?", "How should I use os.path.join?"),
    ],
)
def test_guards_pass_paraphrases(a: str, b: str) -> None:
    assert failed_guard(extract(a), extract(b)) is None


def test_normalize_text_folds_case_space_unicode_and_edge_punctuation() -> None:
    assert normalize_text("  What   is ＡＩ?  ") == normalize_text("what is ai")
    assert normalize_text("4 days") != normalize_text("11 days")


def test_number_forms_agree() -> None:
    assert extract("I need 1,000 tokens").numbers == extract("I need 1000 tokens").numbers
    assert extract("four apples").numbers == extract("4 apples").numbers


def test_negations_are_counted_not_just_noticed() -> None:
    # a second negation flips the meaning back: "not ... without" is not "... without"
    assert (
        failed_guard(
            extract("Is it ok to travel without a visa?"), extract("Is it not ok to travel without a visa?")
        )
        == "negation"
    )
    # the same negation spelled two ways is one negation
    assert failed_guard(extract("Why don't cats like water?"), extract("Why do cats not like water?")) is None
