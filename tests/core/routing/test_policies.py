"""Quality policies: rules, semantic routes (real embedder), learned routers, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from tokenlean.errors import ConfigError, EmptyInputError
from tokenlean.routing import (
    KNNScorer,
    LearnedRouter,
    LogisticScorer,
    MatrixFactorizationScorer,
    OutputControl,
    Rule,
    RulesPolicy,
    SemanticRoute,
    SemanticRouter,
    calibrate_threshold,
    share_for_budget,
)
from tokenlean.types import Message, Request

TOOLS = ({"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}},)


def _r(text: str, **md: object) -> Request:
    return Request([Message("user", text)], metadata=md)


def test_rules_first_match_with_reason_and_output_control() -> None:
    short = OutputControl(max_tokens=64, stop=("\n\n",), instruction="Answer in one sentence.")
    policy = RulesPolicy(
        [
            Rule("strong", has_tools=True, name="tools"),
            Rule("strong", tags=("legal",)),
            Rule("weak", task_type="classify", output=short),
            Rule("strong", min_tokens=200),
        ]
    )
    d = policy.decide(Request([Message("user", "hi")], tools=TOOLS))
    assert d is not None and d.target == "strong" and d.reason == "tools: tools present"
    d = policy.decide(_r("hi", tags=["legal", "eu"]))
    assert d is not None and d.target == "strong" and "legal" in d.reason
    d = policy.decide(_r("is this spam?", task_type="classify"))
    assert d is not None and d.target == "weak" and d.output is short
    d = policy.decide(_r("word " * 300))
    assert d is not None and d.target == "strong" and "prompt tokens" in d.reason
    assert policy.decide(_r("short")) is None


def test_a_tool_loop_uses_tools_even_without_schemas() -> None:
    # Traces keep the calls and drop the schemas: a turn acting on a tool result is not "no tools".
    from tokenlean.types import ToolCall

    loop = Request(
        [
            Message("user", "fix the bug"),
            Message(
                "assistant", None, tool_calls=(ToolCall(id="c1", name="bash", arguments='{"cmd": "ls"}'),)
            ),
            Message("tool", "a.py b.py", tool_call_id="c1"),
        ]
    )
    easy = RulesPolicy([Rule("weak", max_tokens=1000, has_tools=False)])
    assert easy.decide(loop) is None
    assert easy.decide(_r("what is 2+2?")) is not None
    d = RulesPolicy([Rule("strong", has_tools=True, name="tools")]).decide(loop)
    assert d is not None and d.target == "strong"


def test_output_control_applies_and_records() -> None:
    oc = OutputControl(max_tokens=50, stop=("END",), instruction="Be brief.")
    req = Request([Message("user", "q")], params={"max_tokens": 500, "stop": "STOP"})
    out = oc.apply(req)
    assert out.params["max_tokens"] == 50 and out.params["stop"] == ["STOP", "END"]
    assert out.messages[-1] == Message("system", "Be brief.")
    assert req.params["max_tokens"] == 500  # the caller's request is untouched
    assert OutputControl(max_tokens=900).apply(req).params["max_tokens"] == 500  # never raises a cap
    assert oc.to_dict() == {"max_tokens": 50, "stop": ["END"], "instruction": "Be brief."}


def test_calibration_helpers() -> None:
    s = np.linspace(0, 1, 101)
    thr = calibrate_threshold(s, 0.3)
    assert np.mean(s >= thr) == pytest.approx(0.3, abs=0.011)
    assert np.mean(s >= calibrate_threshold(s, 0.0)) == 0.0
    assert np.mean(s >= calibrate_threshold(s, 1.0)) == 1.0
    assert share_for_budget(3.0, 1.0, 11.0) == pytest.approx(0.2)
    assert share_for_budget(100, 1, 11) == 1.0 and share_for_budget(0.5, 1, 11) == 0.0
    with pytest.raises(ConfigError):
        calibrate_threshold(s, 1.5)
    with pytest.raises(EmptyInputError):
        calibrate_threshold([], 0.5)
    with pytest.raises(ConfigError):
        share_for_budget(1, 2, 1)


@pytest.mark.parametrize(
    "scorer", [LogisticScorer(), KNNScorer(k=5), MatrixFactorizationScorer(dim=4, epochs=200)]
)
def test_scorers_learn_a_separable_signal(scorer) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = (x[:, 0] > 0).astype(float)
    p = scorer.fit(x[:300], y[:300]).predict(x[300:])
    acc = np.mean((p > np.median(p)) == (y[300:] > 0.5))
    assert acc > 0.8


@pytest.mark.integration
def test_semantic_routes_with_fitted_thresholds(embedder) -> None:
    router = SemanticRouter(
        [
            SemanticRoute(
                "code",
                "strong",
                (
                    "write a python function",
                    "fix this bug in my code",
                    "refactor this class",
                    "why does my program crash",
                ),
            ),
            SemanticRoute(
                "chitchat", "weak", ("hello there", "how are you today", "thanks a lot", "good morning")
            ),
        ],
        embedder=embedder,
    ).fit()
    assert set(router.thresholds) == {"code", "chitchat"}
    d = router.decide(_r("can you debug my python script, it throws an exception"))
    assert d is not None and d.target == "strong" and "code" in d.reason and d.score is not None
    d = router.decide(_r("hi, how's it going?"))
    assert d is not None and d.target == "weak"
    assert router.decide(_r("the mitochondria is the powerhouse of the cell")) is None


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["ensemble", "gap", "knn-gap", "lexical", "logistic", "knn", "mf"])
def test_learned_router_from_outcomes(embedder, kind) -> None:
    hard = [
        f"Prove that the sum of the first {n} odd numbers is a perfect square, step by step."
        for n in range(3, 23)
    ]
    hard += [f"Solve the differential equation y'' + {n}y = 0 and explain each step." for n in range(2, 22)]
    easy = [
        f"What colour is a {w}?"
        for w in ("banana", "tomato", "lemon", "cherry", "grass", "sky", "snow", "coal", "orange", "lime")
    ]
    easy += [
        f"Say hello to {n}." for n in ("Ann", "Bob", "Cem", "Dora", "Eve", "Fay", "Gus", "Hal", "Ida", "Jo")
    ]
    prompts = hard + easy
    strong = [1.0] * len(prompts)
    weak = [0.0] * len(hard) + [1.0] * len(easy)
    r = LearnedRouter("gpt-big", "local-small", scorer=kind, embedder=embedder).fit(prompts, strong, weak)
    scores = r.score(
        ["Prove that the square root of 2 is irrational, step by step.", "What colour is a strawberry?"]
    )
    assert scores[0] > scores[1]
    thr = r.calibrate(prompts, strong_share=2 / 3)  # two thirds are hard: exactly those go strong
    assert thr == r.threshold
    d = r.decide(_r("Solve the differential equation y'' + 40y = 0 and explain each step."))
    label = "P(strong wins)" if kind in ("logistic", "knn", "mf") else "strong-model gain"
    assert d is not None and d.target == "gpt-big" and label in d.reason
    d = r.decide(_r("Say hello to Kim."))
    assert d is not None and d.target == "local-small"
    thr_budget = r.calibrate(prompts, budget=2.0, weak_cost=1.0, strong_cost=11.0)
    if kind != "lexical":  # words alone tie these templated prompts (a number < 10 is no word): no 10% cut
        assert np.mean(r.score(prompts) >= thr_budget) == pytest.approx(0.1, abs=0.05)


@pytest.mark.integration
def test_learned_router_defaults_to_static_embeddings_and_is_fast_enough_to_matter(static_embedder) -> None:
    """The default router embeds with the distilled table, not a transformer pass per request."""
    from tokenlean.embeddings import StaticEmbedder
    from tokenlean.routing.features import SegmentedEmbedder

    prompts = [f"Integrate x^{n} * sin(x) by parts and show every step." for n in range(2, 14)]
    prompts += [f"Translate '{w}' into French." for w in ("cat", "dog", "house", "tree", "car", "book")]
    strong = [1.0] * len(prompts)
    weak = [0.0] * 12 + [1.0] * 6
    r = LearnedRouter("big", "small").fit(prompts, strong, weak)
    assert isinstance(r.embedder, SegmentedEmbedder) and isinstance(r.embedder.base, StaticEmbedder)
    assert r.embed(prompts[:2]).shape == (2, 3 * r.embedder.base.dim)  # whole prompt + two halves
    r.calibrate(prompts, strong_share=2 / 3)
    hard = r.decide(_r("Integrate x^20 * sin(x) by parts and show every step."))
    easy = r.decide(_r("Translate 'window' into French."))
    assert hard is not None and hard.target == "big"
    assert easy is not None and easy.target == "small"


def test_learned_router_rejects_bad_outcomes() -> None:
    from tokenlean.errors import ConfigError

    class Fixed:
        name, dim = "fixed", 2

        def embed(self, texts):  # a two-dimensional toy embedder
            return np.array([[1.0, 0.0] if "a" in t else [0.0, 1.0] for t in texts], dtype=np.float32)

    with pytest.raises(ConfigError, match="unknown scorer"):
        LearnedRouter("s", "w", scorer="nope")
    r = LearnedRouter("s", "w", embedder=Fixed())
    with pytest.raises(ConfigError, match="finite"):
        r.fit(["a", "b"], [1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ConfigError, match="same length"):
        r.fit(["a", "b"], [1.0], [0.0, 0.0])


def test_prompt_segments_split_lines_in_half_and_vectors_must_be_the_routers() -> None:
    from tokenlean.routing.features import SegmentedEmbedder, prompt_segments, whole_prompt_view

    assert prompt_segments("one line") == ("one line", "")
    assert prompt_segments("Q?\nA. x\nB. y\nC. z") == ("Q?\nA. x", "B. y\nC. z")

    class Recorder:
        name, dim = "rec", 2

        def __init__(self) -> None:
            self.seen: list[str] = []

        def embed(self, texts: list[str]) -> np.ndarray:
            self.seen += texts
            return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)

    rec = Recorder()
    vecs = SegmentedEmbedder(rec).embed(["a\nb\nc", "short"])
    assert rec.seen == ["a\nb\nc", "short", "a", "short", "b\nc", " "]
    assert vecs.shape == (2, 6) and whole_prompt_view(vecs).tolist() == [[5, 1], [5, 1]]
    r = LearnedRouter("big", "small", embedder=rec)
    with pytest.raises(ConfigError, match=r"router\.embed"):
        r.fit(["x", "y"], [1, 0], [0, 0], vectors=np.ones((2, 5), dtype=np.float32))
