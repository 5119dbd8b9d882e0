"""ErrorBound: a user-set false-hit rate held by a threshold learned from audited lookups."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tokenlean.cache import CacheResult, SemanticCache
from tokenlean.cache.bound import ErrorBound, binomial_upper_bound, max_allowed_exceedances
from tokenlean.errors import ConfigError, InputError


def test_allowed_exceedances_match_the_binomial_tail() -> None:
    # k = 0 is allowed once (1 - rate)^n <= alpha: 299 wrong audits for 1% at 95%.
    assert max_allowed_exceedances(298, 0.01) == -1
    assert max_allowed_exceedances(299, 0.01) == 0
    for n in (500, 3_000, 20_000):
        k = max_allowed_exceedances(n, 0.01)
        assert 0 <= k < n * 0.01  # always below the plain expected count
        # the bound at k is within the rate, the one at k + 1 is not
        assert binomial_upper_bound(k, n) <= 0.01 + 1e-9 < binomial_upper_bound(k + 1, n)
    assert binomial_upper_bound(0, 300) == pytest.approx(1 - 0.05 ** (1 / 300), rel=1e-6)


def test_the_bound_holds_across_repeated_samples() -> None:
    """Wrong-candidate scores ~ U(0, 1): the true false-hit rate above threshold t is 1 - t."""
    rng = np.random.default_rng(7)
    rate, trials, over, realised = 0.05, 300, 0, []
    for _ in range(trials):
        bound = ErrorBound(rate)
        for s in rng.random(400):
            bound.observe(float(s), False)
        true_rate = 1.0 - bound.threshold
        realised.append(true_rate)
        over += true_rate > rate
    # promised: P(true rate > 5%) <= 5%; 300 trials allow sampling noise of ~3 sigma
    assert over / trials <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)
    assert np.mean(realised) > rate / 2  # and not uselessly strict


def test_bad_options_are_typed_errors(tmp_path: Path) -> None:
    for kwargs in (
        {"max_false_hit_rate": 0.0},
        {"max_false_hit_rate": float("nan")},
        {"max_false_hit_rate": 1},
    ):
        with pytest.raises(ConfigError):
            ErrorBound(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ErrorBound(0.01, explore=1.5)
    with pytest.raises(ConfigError):
        ErrorBound(0.01).observe(float("nan"), True)
    bad = tmp_path / "bound.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError):
        ErrorBound(0.01, path=bad)
    with pytest.raises(ConfigError):
        SemanticCache(max_false_hit_rate=2.0)


def test_window_forgets_the_oldest_audits() -> None:
    bound = ErrorBound(0.05, max_audits=100)
    for _ in range(100):
        bound.observe(0.9, False)
    high = bound.threshold
    for _ in range(100):
        bound.observe(0.3, False)
    assert bound.report()["audits"] == 200 and len(bound.to_dict()["audits_kept"]) == 100
    assert bound.threshold < high  # the 0.9 scores are gone


TOPICS = [
    "volcanoes", "penguins", "bitcoin", "photosynthesis", "the roman empire", "black holes",
    "jazz music", "the stock market", "quantum computing", "honey bees", "the french revolution",
    "climate change", "vaccines", "chess openings", "solar panels", "the human heart",
    "coral reefs", "machine learning", "the olympic games", "coffee brewing",
]  # fmt: skip


def _answer(topic: str) -> str:
    return f"Here is what to know about {topic}."


def test_cache_serves_nothing_semantically_until_certified_then_holds(
    embedder: object, tmp_path: Path
) -> None:
    path = tmp_path / "audits.json"
    bound = ErrorBound(0.05, explore=0.25, path=path, save_every=10, seed=3)
    judge_calls: list[tuple[str, str]] = []

    def judge(fresh: str, cached: str) -> bool:
        judge_calls.append((fresh, cached))
        return fresh == cached

    # min_cosine=0: every candidate is scored, so the learned threshold is a real cosine
    cache = SemanticCache(embedder=embedder, max_false_hit_rate=bound, answer_judge=judge, min_cosine=0.0)
    for t in TOPICS[:10]:
        cache.store(f"Tell me about {t}", _answer(t))
    assert cache.lookup(f"Tell me about {TOPICS[0]}").tier == "exact"  # exact hits are never audited
    # Uncertified: a paraphrase is not served, and every lookup with a candidate is audited.
    first = cache.lookup(f"Could you tell me about {TOPICS[0]}?")
    assert not first.hit and first.audited and first.candidate is not None
    cache.store(f"Could you tell me about {TOPICS[0]}?", _answer(TOPICS[0]))  # settles the audit
    assert judge_calls and bound.audits == 1
    # Wrong candidates: questions about topics the cache does not hold, labelled through feedback().
    templates = [
        "What do you know about {}?",
        "Explain {} to me",
        "Give me facts on {}",
        "I want to learn about {}",
    ]
    suffixes = [
        "",
        " please",
        " now",
        " briefly",
        " in detail",
        " simply",
        " today",
        " again",
        " quickly",
        " here",
    ]
    asked = 0
    for template, suffix in [(t, x) for x in suffixes for t in templates]:
        for t in TOPICS[10:]:
            r = cache.lookup(template.format(t) + suffix)
            asked += 1
            if r.audited:
                assert r.candidate is not None
                cache.feedback(r, correct=False)
            if bound.certified and bound.report()["audited_wrong_candidates"] >= 120:
                break
        if bound.certified and bound.report()["audited_wrong_candidates"] >= 120:
            break
    report = bound.report()
    assert report["certified"], (report, asked)
    assert report["realised_false_hit_rate"] <= report["false_hit_upper_bound"] <= 0.05 + 1e-9
    assert cache.stats()["error_bound"]["threshold"] == pytest.approx(bound.threshold)
    # Each wrong audit raised that entry's own threshold: the same wrong question never hits it now.
    wrong_again = cache.lookup(templates[0].format(TOPICS[10]))
    assert not wrong_again.hit
    with pytest.raises(InputError):  # only audited lookups belong to the bound's sample
        cache.feedback(CacheResult(hit=False, query="x", namespace="n"), correct=True)
    cache.close()  # saves the audits
    again = ErrorBound(0.05, path=path)
    assert again.threshold == bound.threshold and again.audits == bound.audits


def test_audit_of_a_would_be_hit_costs_a_model_call(embedder: object) -> None:
    bound = ErrorBound(0.05, explore=1.0, seed=0)
    for s in np.linspace(0.0, 0.5, 80):  # certified: every wrong audit scored <= 0.5
        bound.observe(float(s), False)
    assert bound.certified and bound.threshold <= 0.5 + 1e-9
    cache = SemanticCache(embedder=embedder, max_false_hit_rate=bound)
    cache.store("How do I reset my password?", "Use the reset link on the login page.")
    r = cache.lookup("How can I reset my password?")
    assert not r.hit and r.audited and r.rejected_by == "audit"  # explore=1: always audited
    # The model's fresh answer says the same: the default judge (answer embeddings) calls it right.
    cache.store("How can I reset my password?", "Use the reset link on the login page.")
    report = bound.report()
    assert report["model_calls"] == 1 and report["audited_right_candidates"] == 1
    bound.explore = 0.0
    served = cache.lookup("How could I reset my password?")
    assert served.hit and not served.audited and served.tier == "semantic"


def test_error_bound_benchmark_quick(tmp_path: Path) -> None:
    import json
    import sys

    root = Path(__file__).resolve().parents[3]
    data = root.parent / "shared" / "datasets"
    if not (data / "semantic_cache" / "meancache" / "val.csv").exists():
        pytest.skip("shared datasets not present")
    sys.path.insert(0, str(root / "benchmarks"))
    import semantic_cache_bound

    out = tmp_path / "bound.json"
    assert semantic_cache_bound.main(["--quick", "--json", str(out), "--data", str(data)]) == 0
    block = json.loads(out.read_text())["error_bound"]
    assert set(block["results"]) == {"0.005", "0.01", "0.02"}
    for delta, by_explore in block["results"].items():
        for cell in by_explore.values():
            for run in cell["runs"]:
                # the bound's own upper bound from its audits never exceeds the rate it was given
                assert run["upper_bound"] <= float(delta) + 1e-9
                assert (
                    0.0 <= run["report_false_hit_rate"] <= 1.0
                    and 0.0 <= run["baseline_false_hit_rate"] <= 1.0
                )
            assert cell["audits_mean"] > 0
