"""Reliability, fuzz part: every public entry point and adapter fed malformed input, in figures.

    python benchmarks/reliability_fuzz.py [--quick] [--seed N]

``fuzz(quick, seed)`` drives each entry point below with hypothesis-generated input (malformed
message dicts and objects, roles and contents of the wrong type, lone surrogates, non-UTF-8
bytes, bytes where text is expected, negative / NaN / infinite ratios, thresholds,
temperatures and token caps, tool messages without their call, malformed trace files and server
answers), plus a fixed set of edge cases that run every time (a 5 MB message once per entry
point that takes text, a lone surrogate, a tool result without its call, NaN ratios). Hypothesis
only generates here: each call is timed and classified by this module, nothing is shrunk, so the
run is bounded by ``max_examples`` and by a per-entry-point time allotment. ``quick`` (the test
suite's run, ~10 s): 25 draws per entry point and a 1 MB big message; full: 300 draws and 5 MB
(about a minute and a half on a 2-core machine).

**The rule.** Bad input must end in a *typed* error: an instance of
``tokenlean.errors.TokenleanError`` (``ConfigError``, ``MessageFormatError``,
``TextEncodingError``, ``TraceFormatError``, ...), or, for an adapter, the error the framework
documents for its own objects: pydantic's ``ValidationError`` when a LangChain / LlamaIndex
object (a message, a node, a postprocessor) is built from fields of the wrong type. Such objects
are built by this module *before* the timed call and an input the framework refuses is skipped;
the adapter is then only ever handed objects the framework accepted. Anything else that escapes
(``TypeError``, ``AttributeError``, ``KeyError``, ``UnicodeEncodeError``, a ``ValueError`` that is
not a ``TokenleanError``, ``RecursionError``, ...) is an *untyped exception* and counts. So does
an untyped exception an adapter catches and only logs (metering callbacks must never break a
chain, so they log instead of raising): it is found through the ``tokenlean`` loggers'
``exc_info`` and counted as untyped too, since the call it was metering is then lost.
Legitimate odd input (lone surrogates in text, empty lists, a tool result whose call is not in
the window) must be accepted or refused with a typed error; crashing is never right.

**Deadlines.** ``Compactor`` promises its ``deadline`` (5 s by default, the value used here) for
one call, whatever the input, so compaction calls (core and adapters) have a 5 s budget. Every
other entry point has a generous 10 s budget (none does model I/O here: endpoints talk to an
in-process mock transport). A call slower than its budget counts as ``past_deadline``.

JSON: ``{"entry_points", "calls", "untyped_exceptions", "past_deadline", "deadline_s",
"big_message_bytes", "by_entry_point", "examples", "failure_signatures", "seed", "quick",
"seconds"}``. ``by_entry_point`` has calls, typed errors, untyped, past deadline, skipped draws
(inputs a framework refused to build) and the slowest call per entry point; ``examples`` holds
up to 10 failures (entry point, exception, where it was raised, message, input repr cut to 200
characters); ``failure_signatures`` counts every distinct (entry point, exception, place).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
CORE = str(ROOT / "core")
if CORE not in sys.path:
    sys.path.insert(0, CORE)

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import HypothesisWarning  # noqa: E402

from tokenlean.errors import TokenleanError  # noqa: E402

COMPACTION_DEADLINE_S = 5.0
DEFAULT_DEADLINE_S = 10.0
BIG_BYTES = 5 * 1024 * 1024
QUICK_BIG_BYTES = 1024 * 1024  # the test suite's run: the same edge cases, a fifth of the size
MAX_EXAMPLES = 10

log = logging.getLogger("tokenlean.fuzz")


# -- tally -------------------------------------------------------------------------------------


@dataclass
class _Stats:
    calls: int = 0
    typed_errors: int = 0
    untyped: int = 0
    past_deadline: int = 0
    skipped: int = 0
    max_s: float = 0.0
    seconds: float = 0.0


@dataclass
class _Tally:
    """Counts per entry point; the first untyped failures kept as short descriptions."""

    stats: dict[str, _Stats] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)
    examples: list[dict[str, str]] = field(default_factory=list)
    swallowed: list[BaseException] = field(default_factory=list)
    signatures: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def note(self, name: str, exc: BaseException, arg: object, how: str = "raised") -> None:
        where = _where(exc)
        key = (name, type(exc).__name__, where)
        sig = self.signatures.setdefault(key, {"count": 0, "message": str(exc)[:200], "input": _short(arg)})
        sig["count"] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(
                {
                    "entry_point": name,
                    "exception": type(exc).__name__,
                    "how": how,
                    "where": where,
                    "message": str(exc)[:200],
                    "input": _short(arg),
                }
            )


def _where(exc: BaseException) -> str:
    """The innermost frame of the traceback in this repository's code (``file:line``)."""
    import traceback

    found = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        if str(ROOT) in frame.filename and not frame.filename.endswith("reliability_fuzz.py"):
            found = f"{Path(frame.filename).relative_to(ROOT)}:{frame.lineno}"
    return found


def _short(obj: object) -> str:
    try:
        text = repr(obj)
    except Exception as exc:  # an input whose repr fails is still worth naming
        text = f"<unrepresentable {type(obj).__name__}: {exc}>"
    return text if len(text) <= 200 else text[:197] + "..."


class _SwallowWatch(logging.Handler):
    """Collects exceptions that tokenlean code logged with ``exc_info`` instead of raising."""

    def __init__(self, tally: _Tally) -> None:
        super().__init__(level=logging.DEBUG)
        self.tally = tally

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if not isinstance(exc, TokenleanError):
                self.tally.swallowed.append(exc)


@dataclass(frozen=True)
class _Entry:
    name: str
    strategy: st.SearchStrategy[Any]
    call: Callable[[Any], object]
    budget: float = DEFAULT_DEADLINE_S
    framework_errors: tuple[type[BaseException], ...] = ()
    edge_cases: tuple[Any, ...] = ()


def _run_one(tally: _Tally, entry: _Entry, arg: object) -> None:
    """One timed call, classified: ok, typed error, untyped exception; and whether it was late."""
    s = tally.stats[entry.name]
    s.calls += 1
    tally.swallowed.clear()
    t0 = time.perf_counter()
    try:
        entry.call(arg)
    except TokenleanError:
        s.typed_errors += 1
    except entry.framework_errors:
        s.typed_errors += 1
    except (Exception, RecursionError) as exc:  # the thing this benchmark counts
        s.untyped += 1
        tally.note(entry.name, exc, arg)
    dt = time.perf_counter() - t0
    for exc in tally.swallowed:
        s.untyped += 1
        tally.note(entry.name, exc, arg, how="logged and swallowed")
    tally.swallowed.clear()
    s.max_s = max(s.max_s, dt)
    if dt > entry.budget:
        s.past_deadline += 1
        if len(tally.examples) < MAX_EXAMPLES:
            tally.examples.append(
                {
                    "entry_point": entry.name,
                    "exception": "past_deadline",
                    "how": f"{dt:.2f} s > {entry.budget} s",
                    "message": "",
                    "input": _short(arg),
                }
            )


def _drive(tally: _Tally, entry: _Entry, examples: int, allot_s: float, seed: int) -> None:
    """Edge cases first, then ``examples`` hypothesis draws (stopped early past ``allot_s``)."""
    tally.stats[entry.name] = _Stats()
    tally.budgets[entry.name] = entry.budget
    t_entry = time.perf_counter()
    for case in entry.edge_cases:
        _run_one(tally, entry, case() if callable(case) else case)
    start = time.perf_counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @hypothesis_seed(seed)
    @given(entry.strategy)
    def run(arg: Any) -> None:
        if time.perf_counter() - start > allot_s:
            return  # out of this entry point's time: the remaining draws are not run
        if arg is _SKIP or (isinstance(arg, tuple) and any(a is _SKIP for a in arg)):
            tally.stats[entry.name].skipped += 1
            return
        _run_one(tally, entry, arg)

    run()
    tally.stats[entry.name].seconds = time.perf_counter() - t_entry


# -- strategies: text, numbers, odd values ----------------------------------------------------

_SKIP = object()  # a framework refused to build the object: not an input for the adapter

_WORD_TEXT = (
    "the cache server returned error 503 while the deploy script ran migrations on table users "
    "invoice total 1,234.56 EUR due 2024-03-01 not paid refund customer asked twice why latency "
    "grew after upgrade python traceback KeyError line 42 in handler config timeout 30s retry "
    "budget tokens compaction prefix layout router policy cheap strong model answer question"
)
WORDS = _WORD_TEXT.split()

SPECIAL_TEXT = [
    "",
    " ",
    "\ud800",
    "a\udfffb",
    "\udc80\udcff",
    "\x00",
    "\ufeff",
    "\u202e\u202d",
    "ﬁ Ⅻ ㎏ ｆｕｌｌ",
    "😀👩‍👩‍👧",
    "\r\n\r\n\r",
    "{",
    "}}{{",
    "{tokens} {handle}",
    "om-deadbeef",
    "[… 12 tokens omitted · om-0000000000000000 …]",
    "```python\nprint(1)\n```",
    "2024-01-01T00:00:00Z request id 6f1c2d3e-aaaa-bbbb-cccc-1234567890ab",
    "\\",
    "\t" * 20,
    "\u0301\u0301\u0301",
]

_CHARS = st.characters(exclude_categories=())  # every category, surrogates (Cs) included
TEXT = st.one_of(
    st.text(_CHARS, max_size=40),
    st.sampled_from(SPECIAL_TEXT),
    st.tuples(st.sampled_from(["x", "é", "\ud800", "😀"]), st.integers(500, 3000)).map(lambda t: t[0] * t[1]),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=30).map(" ".join),
)
PROSE = st.lists(
    st.one_of(
        st.lists(st.sampled_from(WORDS), min_size=4, max_size=16).map(lambda w: " ".join(w) + "."),
        st.sampled_from(SPECIAL_TEXT),
    ),
    min_size=3,
    max_size=40,
).map(lambda parts: "\n".join(parts))
BAD_BYTES = st.one_of(
    st.binary(max_size=24),
    st.sampled_from([b"\xff\xfe\xfd", b"abc\xc3\x28", b"\xed\xa0\x80", b"\x80", b"ok"]),
)
NUMBER = st.one_of(
    st.sampled_from([0, 1, -1, 0.0, -0.0, 0.5, 0.999999, 1.0, 2, -0.5, 1e308, -1e308, 2**63, -(2**63)]),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
)
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT, BAD_BYTES)
JSON_SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
ODD = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(TEXT, inner, max_size=3),
        st.tuples(inner),
        st.builds(object),
        st.sets(st.integers(), max_size=2),
    ),
    max_leaves=6,
)
ODD_JSON = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6,
)


def maybe(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any] = ODD) -> st.SearchStrategy[Any]:
    """``valid`` three times in four, else anything: deep paths need most fields to be fine.

    (A weighted draw, not ``one_of(valid, valid, valid, odd)``: hypothesis merges repeated
    branches, which would make that an even split.)"""
    return st.integers(0, 3).flatmap(lambda i: odd if i == 2 else valid)


def rarely(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any] = ODD) -> st.SearchStrategy[Any]:
    """``valid`` 19 times in 20: for fields of which one input has many."""
    return st.integers(0, 19).flatmap(lambda i: odd if i == 7 else valid)


def big_text(n: int = BIG_BYTES) -> str:
    """A ~``n``-byte message of varied prose with a few odd characters (built once per run)."""
    return _big_cache(n)


_BIG: dict[int, str] = {}


def _big_cache(n: int) -> str:
    if n not in _BIG:
        line = " ".join(WORDS[i % len(WORDS)] for i in range(0, 40, 3))
        parts = []
        size = 0
        i = 0
        while size < n:
            row = f"{i}: {line} {i * 7919 % 10007} \u00e9\n"
            parts.append(row)
            size += len(row.encode("utf-8"))
            i += 1
        _BIG[n] = "".join(parts)
    return _BIG[n]


# -- strategies: messages and requests --------------------------------------------------------

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
ROLE = st.one_of(
    st.sampled_from(ROLES),
    st.sampled_from(["model", "chatbot", "human", "ai", "", "USER", "\ud800"]),
    ODD,
)
PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": maybe(TEXT)}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": maybe(st.just({"url": "data:x"}))}),
    st.fixed_dictionaries({"type": maybe(TEXT)}, optional={"text": ODD, "data": ODD}),
    ODD,
)
CONTENT = st.one_of(TEXT, PROSE, st.none(), st.lists(PART, max_size=3), ODD)
VALID_PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.just({"url": "data:x"})}),
)
#: Contents a provider accepts, odd text included; CONTENT adds the malformed ones.
ODD_CONTENT = st.one_of(TEXT, st.none(), st.lists(VALID_PART, min_size=1, max_size=3), CONTENT)
TOOL_CALL = st.one_of(
    st.fixed_dictionaries(
        {
            "id": maybe(TEXT),
            "type": st.just("function"),
            "function": maybe(
                st.fixed_dictionaries({"name": maybe(TEXT), "arguments": maybe(st.just("{}") | TEXT)})
            ),
        }
    ),
    ODD,
)
MESSAGE_DICT = st.fixed_dictionaries(
    {},
    optional={
        "role": ROLE,
        "content": CONTENT,
        "tool_calls": st.one_of(st.lists(TOOL_CALL, max_size=2), ODD),
        "tool_call_id": maybe(TEXT),
        "name": maybe(TEXT),
        "extra_key": ODD,
    },
)


def _conversation(draw: st.DrawFn, flawed: bool = True) -> list[dict[str, Any]]:
    """A plausible agent history (long old tool outputs, tool results without their call, odd
    text) that is well-formed two times in three; otherwise one field of one message, or one
    whole message, is malformed. Deep code paths are only reached when most of it is fine."""
    content = st.one_of(PROSE, PROSE, TEXT, st.lists(VALID_PART, min_size=1, max_size=3))
    msgs: list[dict[str, Any]] = [{"role": "system", "content": draw(TEXT)}]
    for i in range(draw(st.integers(0, 4))):
        msgs.append({"role": "user", "content": draw(content)})
        call_id = draw(st.sampled_from([f"call_{i}", f"call_{i}", "\ud800", "dup"]))
        if draw(st.booleans()):  # else the tool result below has no call: a dropped or trimmed turn
            arguments = draw(st.sampled_from(["{}", '{"q": "503"}', "{", '{"path": "\ud800"}']))
            name = draw(st.sampled_from(["grep", "read_file", "bash", "\u202e"]))
            msgs.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": arguments},
                        }
                    ],
                }
            )
        msgs.append({"role": "tool", "tool_call_id": call_id, "content": draw(content)})
        msgs.append({"role": "assistant", "content": draw(content)})
    msgs.append({"role": "user", "content": draw(TEXT)})
    flaw = draw(st.integers(0, 2)) if flawed else 0
    if flaw == 1:  # one field of one message malformed
        i = draw(st.integers(0, len(msgs) - 1))
        key = draw(st.sampled_from(["role", "content", "tool_calls", "tool_call_id", "name"]))
        msgs[i] = {**msgs[i], key: draw(ODD)}
    elif flaw == 2:  # one odd message inserted
        msgs.insert(draw(st.integers(0, len(msgs))), draw(MESSAGE_DICT))
    return msgs


CONVERSATION = st.composite(_conversation)()
#: A message dict as a server could send it (JSON values only).
MESSAGE_JSON = st.fixed_dictionaries(
    {"role": maybe(st.sampled_from(["assistant", "tool", "user"]), ODD_JSON)},
    optional={"content": maybe(TEXT, ODD_JSON), "tool_calls": ODD_JSON, "refusal": ODD_JSON},
)
#: For entry points that take a ``Request``: its construction is fuzzed by the types entries.
CLEAN_CONVERSATION = st.composite(_conversation)(flawed=False)
MESSAGES = st.one_of(CONVERSATION, CONVERSATION, st.lists(MESSAGE_DICT, max_size=5), ODD)
PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.one_of(NUMBER, ODD),
        "max_tokens": st.one_of(NUMBER, ODD),
        "max_completion_tokens": st.one_of(NUMBER, ODD),
        "n": st.one_of(NUMBER, ODD),
        "top_p": NUMBER,
        "stop": ODD,
        "seed": NUMBER,
    },
)
BODY = st.builds(
    lambda msgs, model, params, tools, extra: {
        "messages": msgs,
        **({"model": model} if model is not _SKIP else {}),
        **params,
        **({"tools": tools} if tools is not _SKIP else {}),
        **extra,
    },
    MESSAGES,
    st.one_of(st.just(_SKIP), maybe(st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "x"]))),
    PARAMS,
    st.one_of(
        st.just(_SKIP),
        st.lists(
            maybe(
                st.fixed_dictionaries(
                    {"type": st.just("function"), "function": st.fixed_dictionaries({"name": TEXT})}
                )
            ),
            max_size=2,
        ),
        ODD,
    ),
    st.dictionaries(st.sampled_from(["metadata", "stream", "user", "response_format"]), ODD, max_size=2),
)
BODY_OR_ODD = maybe(BODY)
TOOLS = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {
                    "name": rarely(st.sampled_from(["grep", "read_file", "bash"])),
                    "parameters": rarely(st.just({})),
                },
                optional={"description": TEXT},
            ),
        }
    ),
    max_size=3,
)
GOOD_BODY = st.builds(
    lambda msgs, params, tools, model: {"messages": msgs, "tools": tools, "model": model, **params},
    CONVERSATION,
    PARAMS,
    TOOLS,
    st.sampled_from(["gpt-4o", "claude-3-5-sonnet-latest", "llama-3"]),
)
#: Mostly requests that parse, so the layout code itself is reached; a quarter malformed.
LAYOUT_BODY = maybe(GOOD_BODY, BODY_OR_ODD)


def _request_or_skip(body: Any, metadata: Any = None) -> Any:
    """A core ``Request`` built from ``body`` (its construction is fuzzed elsewhere), or ``_SKIP``."""
    from tokenlean.types import Request

    try:
        return Request.from_openai(body, metadata=metadata if isinstance(metadata, Mapping) else None)
    except TokenleanError:
        return _SKIP
    except Exception:
        return _SKIP  # Request.from_openai is an entry point of its own; counted there


REQUEST = st.builds(
    _request_or_skip,
    maybe(st.builds(lambda msgs, params: {"messages": msgs, **params}, CLEAN_CONVERSATION, PARAMS), BODY),
    st.one_of(st.none(), st.dictionaries(st.sampled_from(["task_id", "tenant", "tags", "task_type"]), ODD)),
)
USAGE = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "prompt_tokens": maybe(st.integers(0, 10**6), NUMBER),
            "completion_tokens": maybe(st.integers(0, 10**6), NUMBER),
            "prompt_tokens_details": maybe(st.fixed_dictionaries({"cached_tokens": NUMBER})),
            "completion_tokens_details": ODD,
            "total_tokens": NUMBER,
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "input_tokens": maybe(st.integers(0, 10**6), NUMBER),
            "output_tokens": maybe(st.integers(0, 10**6), NUMBER),
            "total_tokens": NUMBER,
            "cache_read_input_tokens": NUMBER,
            "cache_creation_input_tokens": NUMBER,
            "input_token_details": st.one_of(st.fixed_dictionaries({"cache_read": NUMBER}), ODD),
            "output_token_details": ODD,
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={"promptTokenCount": NUMBER, "candidatesTokenCount": NUMBER, "thoughtsTokenCount": NUMBER},
    ),
    ODD,
)


# -- a small deterministic embedder (the semantic tier without loading a model) ----------------


class _HashEmbedder:
    """Bag of character trigrams hashed into 64 dims: cheap, deterministic, unit-norm."""

    dim = 64
    name = "fuzz-hash"

    def embed(self, texts: Any) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            data = t.encode("utf-8", "surrogatepass")
            for j in range(max(0, len(data) - 2)):
                out[i, hash(data[j : j + 3]) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


# -- core entry points -------------------------------------------------------------------------


def _core_entries(tmp: Path, big: str) -> list[_Entry]:
    from tokenlean.cache import SemanticCache
    from tokenlean.compaction import Compactor, compact_text
    from tokenlean.layout import PromptLayout, analyze, plan_cache_markers, reorder
    from tokenlean.metering import Meter
    from tokenlean.routing import OutputControl, Router, Rule, RulesPolicy
    from tokenlean.routing.endpoints import OpenAICompatibleEndpoint, check_request
    from tokenlean.tokens import count_messages, count_tokens
    from tokenlean.types import Message, Request, Usage, normalize_usage

    big_msgs = [
        {"role": "system", "content": "You answer from the logs."},
        {"role": "user", "content": big},
        {"role": "assistant", "content": "I read it."},
        {"role": "tool", "tool_call_id": "call_orphan", "content": big[: len(big) // 5]},
        {"role": "user", "content": "Which line mentions error 503?"},
    ]
    orphan_tool = [
        {"role": "user", "content": "run it"},
        {"role": "tool", "tool_call_id": "call_1", "content": "exit 0\n" * 200},
        {"role": "user", "content": "and?"},
    ]
    surrogate_msgs = [{"role": "user", "content": "a\ud800b " * 100}, {"role": "user", "content": "\udfff?"}]

    # Message(...) keyword construction
    message_kwargs = st.fixed_dictionaries(
        {"role": ROLE},
        optional={"content": CONTENT, "tool_calls": ODD, "tool_call_id": maybe(TEXT), "name": maybe(TEXT)},
    )
    usage_kwargs = st.fixed_dictionaries(
        {},
        optional={
            k: NUMBER for k in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")
        },
    )

    def count_tokens_call(a: tuple[Any, Any]) -> object:
        return count_tokens(a[0], a[1])

    def count_messages_call(a: tuple[Any, Any, Any]) -> object:
        msgs, model, tools = a
        return count_messages(msgs, model, tools)

    # Compactor: construction with odd options, then one compaction
    compactor_opts = st.fixed_dictionaries(
        {},
        optional={
            "ratio": st.one_of(NUMBER, ODD),
            "target_tokens": st.one_of(NUMBER, ODD),
            "keep_last_turns": NUMBER,
            "min_tokens": NUMBER,
            "near_duplicate": NUMBER,
            "novelty": NUMBER,
            "length_exponent": NUMBER,
            "sibling_bonus": NUMBER,
            "relevance_reserve": NUMBER,
            "mask_observations_after": NUMBER,
            "deadline": NUMBER,
            "max_sessions": NUMBER,
            "marker": maybe(st.sampled_from(["[{tokens} {handle}]", "{what}", "{0}", "{", None]), ODD),
            "protect": st.one_of(st.lists(TEXT, max_size=2), ODD),
            "exclude_tools": st.one_of(st.lists(TEXT, max_size=2), ODD),
            "kind": maybe(st.sampled_from(["auto", "prose", "code", "log", "json"]), ODD),
            "mode": maybe(st.just("lexical"), ODD),
            "weights": ODD,
        },
    )

    def compactor_with(opts: Mapping[str, Any]) -> Compactor:
        kw = {"store": "memory", "mode": "lexical", **opts}
        if kw.get("mode") == "embedding":
            kw["embedder"] = _HashEmbedder()
        return Compactor(**kw)

    def compactor_init(opts: Mapping[str, Any]) -> object:
        c = compactor_with(opts)
        return c.compact(
            [
                {"role": "user", "content": PROSE_FIXED},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "why?"},
            ]
        )

    shared = Compactor(store="memory", mode="lexical", min_tokens=8, keep_last_turns=1)
    shared_emb = Compactor(
        store="memory", mode="embedding", embedder=_HashEmbedder(), ratio=0.7, min_tokens=8, incremental=True
    )

    def compact_call(a: tuple[Any, Any, bool]) -> object:
        data, query, emb = a
        c = shared_emb if emb else shared
        out = c.compact(data, query=query)
        out.verify()
        for om in out.omissions[:2]:
            c.expand_omitted(om.handle)
        return out

    def compact_text_call(a: tuple[Any, Any, Any]) -> object:
        text, query, ratio = a
        return compact_text(text, query, ratio=ratio, store="memory", mode="lexical")

    def compact_documents_call(a: tuple[Any, Any]) -> object:
        return shared.compact_documents(a[0], query=a[1])

    def expand_call(h: Any) -> object:
        return shared.expand_omitted(h)

    # Semantic cache: exact tier, and a semantic tier on a hash embedder
    exact_cache = SemanticCache(semantic=False, assume_deterministic=True)
    sem_cache = SemanticCache(embedder=_HashEmbedder(), assume_deterministic=True, min_cosine=0.1)
    for c in (exact_cache, sem_cache):
        c.store("What is the refund policy for invoice 42?", "Thirty days.")

    lookup_query = st.one_of(TEXT, BAD_BYTES, MESSAGES, REQUEST, ODD)
    lookup_args = st.tuples(lookup_query, maybe(st.none(), ODD), maybe(st.none(), ODD), st.booleans())

    def lookup_call(a: tuple[Any, Any, Any, bool]) -> object:
        query, tenant, model, sem = a
        c = sem_cache if sem else exact_cache
        return c.lookup(query, tenant=tenant, model=model)

    store_args = st.tuples(
        lookup_query,
        st.one_of(TEXT, ODD, st.builds(lambda t: _response(t), TEXT)),
        st.one_of(st.none(), st.lists(TEXT, max_size=3), ODD),
        maybe(st.none(), ODD),
        st.booleans(),
        st.booleans(),
    )

    def store_call(a: tuple[Any, ...]) -> object:
        query, response, chunks, tenant, force, sem = a
        c = sem_cache if sem else exact_cache
        res = c.store(query, response, chunks=chunks, tenant=tenant, force=force)
        c.lookup(query, tenant=tenant) if isinstance(query, (str, Request)) else None
        return res

    cache_opts = st.fixed_dictionaries(
        {},
        optional={
            "ttl": NUMBER,
            "max_entries": NUMBER,
            "top_k": NUMBER,
            "min_cosine": NUMBER,
            "max_query_chars": NUMBER,
            "feedback_margin": NUMBER,
            "eviction": maybe(st.sampled_from(["lru", "lfu"]), ODD),
            "guards": st.one_of(st.lists(TEXT, max_size=2), ODD),
            "assume_deterministic": ODD,
        },
    )

    def cache_init(opts: Mapping[str, Any]) -> object:
        c = SemanticCache(embedder=_HashEmbedder(), **opts)
        try:
            c.store("What is 2+2?", "4", force=True)
            return c.lookup("What is 2 + 2?")
        finally:
            c.close()

    # Layout
    layout_opts = st.one_of(
        st.just({}),
        st.just({}),
        st.fixed_dictionaries(
            {},
            optional={
                "volatile_placement": maybe(st.sampled_from(["new_turn", "system_tail"]), ODD),
                "stable_lines": st.one_of(st.none(), st.frozensets(TEXT, max_size=2), ODD),
                "few_shot_order": st.one_of(st.tuples(TEXT), ODD),
                "sort_tools": ODD,
            },
        ),
    )

    def reorder_call(a: tuple[Any, Any, Any]) -> object:
        body, opts, model = a
        layout = PromptLayout(**opts)
        return reorder(body, layout, model=model)

    def markers_call(a: tuple[Any, Any, Any, Any]) -> object:
        body, provider, max_bp, block = a
        plan = plan_cache_markers(body, provider, max_breakpoints=max_bp, block_size=block)
        return plan.apply(body)

    def analyze_call(a: tuple[Any, Any, Any]) -> object:
        bodies, window, min_share = a
        return analyze(bodies, window=window, min_share=min_share)

    def fit_call(a: tuple[Any, Any]) -> object:
        bodies, min_share = a
        return PromptLayout.fit(bodies, min_share=min_share)

    # Metering
    meter = Meter()

    def meter_call(a: tuple[Any, ...]) -> object:
        model, usage, task, tags, started, first, ended, cost = a
        rec = meter.record(
            model=model,
            usage=usage,
            task_id=task,
            tags=tags,
            started_at=started,
            first_token_at=first,
            ended_at=ended,
            cost=cost,
        )
        meter.ledger.summary() if hasattr(meter.ledger, "summary") else None
        meter.ledger.task(rec.task_id) if rec.task_id is not None else None
        return rec

    # Routing
    def _route_target(name: str) -> OpenAICompatibleEndpoint:
        ep = OpenAICompatibleEndpoint("http://fuzz.invalid/v1", name, max_retries=0)
        ep._client = _mock_client(lambda body: _completion_body("ok", name))
        return ep

    router = Router(
        {"weak": _route_target("weak-model"), "strong": _route_target("strong-model")},
        policies=[
            RulesPolicy(
                [
                    Rule("strong", tags=("hard",), output=OutputControl(max_tokens=64, stop=("END",))),
                    Rule("weak", max_tokens=50, name="short"),
                    Rule("strong", has_tools=True),
                ]
            )
        ],
        default="strong",
    )

    def route_call(req: Any) -> object:
        check_request(req)
        router.route(req)
        return router.complete(req)

    rule_kwargs = st.fixed_dictionaries(
        {"target": maybe(st.sampled_from(["weak", "strong"]), ODD)},
        optional={
            "tags": ODD,
            "min_tokens": NUMBER,
            "max_tokens": NUMBER,
            "task_type": ODD,
            "has_tools": ODD,
        },
    )
    output_kwargs = st.fixed_dictionaries(
        {}, optional={"max_tokens": NUMBER, "stop": ODD, "instruction": maybe(TEXT, ODD)}
    )

    def rules_call(a: tuple[Any, Any, Any]) -> object:
        rk, ok, req = a
        rule = Rule(**rk, output=OutputControl(**ok))
        policy = RulesPolicy([rule])
        decision = policy.decide(req)
        if decision is not None and decision.output is not None:
            decision.output.apply(req)
        return decision

    # Endpoint answering odd bodies (through an in-process mock transport)
    answers = st.one_of(
        st.builds(lambda t, m: _completion_body(t, m), maybe(TEXT, ODD_JSON), maybe(TEXT, ODD_JSON)),
        st.builds(
            lambda choices, usage, model: {"id": "x", "choices": choices, "usage": usage, "model": model},
            st.one_of(
                st.lists(maybe(st.fixed_dictionaries({"message": MESSAGE_JSON}), ODD_JSON), max_size=2),
                ODD_JSON,
            ),
            st.one_of(USAGE.filter(lambda u: _jsonable(u)), ODD_JSON),
            ODD_JSON,
        ),
        ODD_JSON,
        st.one_of(BAD_BYTES, st.just(b'{"choices": [')),
    )
    status = st.sampled_from([200, 200, 200, 400, 404, 408, 429, 500, 503])

    def endpoint_call(a: tuple[Any, int, Any]) -> object:
        answer, code, req = a
        ep = OpenAICompatibleEndpoint("http://fuzz.invalid/v1", "m", max_retries=0)
        ep._client = _mock_client(lambda body: answer, status=code)
        try:
            return ep.complete(req)
        finally:
            ep.close()

    # Profile: trace files
    trace_dir = tmp / "traces"
    trace_dir.mkdir()
    counter = iter(range(10**9))

    def trace_call(a: tuple[str, Any, Any]) -> object:
        suffix, content, fmt = a
        p = trace_dir / f"t{next(counter)}{suffix}"
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_bytes(content.encode("utf-8", "surrogatepass"))
        from tokenlean.profile import read_trace

        try:
            return read_trace(p, fmt=fmt)
        finally:
            p.unlink()

    traces = st.tuples(
        st.sampled_from([".jsonl", ".jsonl", ".json", ".traj"]),
        st.one_of(TRACE_TEXT, BAD_BYTES),
        st.one_of(st.none(), st.none(), st.sampled_from(["ledger", "openai", "langchain", "swe-agent", "x"])),
    )

    def profile_call(a: tuple[str, Any]) -> object:
        suffix, content = a
        p = trace_dir / f"p{next(counter)}{suffix}"
        p.write_bytes(content.encode("utf-8", "surrogatepass"))
        from tokenlean.profile import Profiler, read_trace

        try:
            trace = read_trace(p)
            return Profiler(levers=("generate-less", "prompt-cache", "compaction"), layout=True).profile(
                trace
            )
        finally:
            p.unlink()

    return [
        _Entry(
            "types.Message.from_openai",
            st.one_of(MESSAGE_DICT, ODD),
            Message.from_openai,
            edge_cases=({"role": "user", "content": big}, {"role": "tool", "content": "x"}, {"content": "x"}),
        ),
        _Entry("types.Message(...)", message_kwargs, lambda kw: Message(**kw).to_openai()),
        _Entry(
            "types.Request.from_openai",
            st.tuples(BODY_OR_ODD, ODD),
            lambda a: Request.from_openai(a[0], metadata=a[1]).to_openai(),
            edge_cases=(({"messages": big_msgs}, None), ({"messages": orphan_tool}, {"tags": 3})),
        ),
        _Entry(
            "types.Request(...)",
            st.tuples(MESSAGES, ODD, ODD, ODD),
            lambda a: Request(messages=a[0], model=a[1], params=a[2], metadata=a[3]).to_openai(),
        ),
        _Entry("types.normalize_usage", USAGE, normalize_usage),
        _Entry("types.Usage(...)", usage_kwargs, lambda kw: Usage(**kw).to_openai()),
        _Entry(
            "tokens.count_tokens",
            st.tuples(
                st.one_of(TEXT, BAD_BYTES, ODD), maybe(st.sampled_from([None, "gpt-4o", "gpt-4"]), ODD)
            ),
            count_tokens_call,
            edge_cases=((big, None), ("\ud800" * 1000, "gpt-4o"), (b"\xff" * 10, None)),
        ),
        _Entry(
            "tokens.count_messages",
            st.tuples(MESSAGES, maybe(st.sampled_from([None, "gpt-4o"]), ODD), st.one_of(st.none(), ODD)),
            count_messages_call,
            edge_cases=((big_msgs, None, None), (surrogate_msgs, "gpt-4o", None)),
        ),
        _Entry(
            "compaction.Compactor(...)",
            compactor_opts,
            compactor_init,
            budget=COMPACTION_DEADLINE_S,
            edge_cases=(
                {"ratio": math.nan},
                {"ratio": -0.5},
                {"ratio": math.inf},
                {"target_tokens": math.nan},
            ),
        ),
        _Entry(
            "compaction.Compactor.compact",
            st.tuples(
                st.one_of(MESSAGES, MESSAGES, REQUEST, TEXT, PROSE, BAD_BYTES),
                maybe(st.none(), st.one_of(TEXT, ODD)),
                st.booleans(),
            ),
            compact_call,
            budget=COMPACTION_DEADLINE_S,
            edge_cases=(
                (big_msgs, None, False),
                (big_msgs, None, True),
                (big, "error 503", False),
                (big.encode("utf-8"), None, False),
                (orphan_tool, None, False),
                (surrogate_msgs, "\ud800", True),
            ),
        ),
        _Entry(
            "compaction.compact_text",
            st.tuples(st.one_of(PROSE, TEXT, BAD_BYTES, ODD), maybe(st.none(), ODD), st.one_of(NUMBER, ODD)),
            compact_text_call,
            budget=COMPACTION_DEADLINE_S,
            edge_cases=((big, None, 0.9), ("a\ud800 " * 300, "\ud800", 0.5), ("x", None, math.nan)),
        ),
        _Entry(
            "compaction.Compactor.compact_documents",
            st.tuples(
                st.one_of(st.lists(st.one_of(PROSE, TEXT), max_size=4), st.lists(ODD, max_size=3), ODD), ODD
            ),
            compact_documents_call,
            budget=COMPACTION_DEADLINE_S,
            edge_cases=(([big], "error"),),
        ),
        _Entry("compaction.Compactor.expand_omitted", st.one_of(TEXT, ODD), expand_call),
        _Entry(
            "cache.SemanticCache.lookup",
            lookup_args,
            lookup_call,
            edge_cases=((big, None, None, True), ("\ud800?", None, None, True), (b"\xff", None, None, False)),
        ),
        _Entry(
            "cache.SemanticCache.store",
            store_args,
            store_call,
            edge_cases=(
                (big, big, None, None, True, True),
                ("q\ud800", "a\udfff", ["\ud800"], None, True, True),
            ),
        ),
        _Entry("cache.SemanticCache(...)", cache_opts, cache_init, edge_cases=({"min_cosine": math.nan},)),
        _Entry(
            "layout.reorder",
            st.tuples(LAYOUT_BODY, layout_opts, maybe(st.none(), ODD)),
            reorder_call,
            edge_cases=(({"messages": big_msgs}, {}, None),),
        ),
        _Entry(
            "layout.plan_cache_markers",
            st.tuples(
                st.one_of(LAYOUT_BODY, REQUEST),
                maybe(st.sampled_from(["anthropic", "openai", "vllm", "llamacpp"]), ODD),
                st.one_of(st.integers(1, 4), NUMBER, ODD),
                st.one_of(st.integers(1, 64), NUMBER, ODD),
            ),
            markers_call,
            edge_cases=(({"messages": big_msgs}, "anthropic", 4, 16),),
        ),
        _Entry(
            "layout.analyze",
            st.tuples(
                st.one_of(st.lists(LAYOUT_BODY, max_size=4), LAYOUT_BODY),
                maybe(st.integers(0, 64), NUMBER),
                maybe(st.floats(0, 1), NUMBER),
            ),
            analyze_call,
        ),
        _Entry(
            "layout.PromptLayout.fit",
            st.tuples(st.lists(LAYOUT_BODY, max_size=5), maybe(st.floats(0, 1), NUMBER)),
            fit_call,
        ),
        _Entry(
            "metering.Meter.record",
            st.tuples(
                maybe(st.sampled_from(["gpt-4o", "gpt-4o-mini", None]), st.one_of(TEXT, BAD_BYTES, ODD)),
                st.one_of(USAGE, st.builds(lambda: Usage(10, 5))),
                maybe(st.none(), st.one_of(TEXT, ODD)),
                maybe(st.none(), ODD),
                maybe(st.none(), NUMBER),
                maybe(st.none(), NUMBER),
                maybe(st.none(), NUMBER),
                maybe(st.none(), ODD),
            ),
            meter_call,
            edge_cases=(("gpt-4o", {"prompt_tokens": math.nan}, None, None, None, None, None, None),),
        ),
        _Entry(
            "routing.check_request+Router.route/complete",
            st.one_of(REQUEST, REQUEST, ODD),
            route_call,
            edge_cases=lambda_edge_requests(big_msgs, orphan_tool),
        ),
        _Entry(
            "routing.Rule/OutputControl/RulesPolicy",
            st.tuples(rule_kwargs, output_kwargs, REQUEST),
            rules_call,
        ),
        _Entry(
            "routing.OpenAICompatibleEndpoint.complete", st.tuples(answers, status, REQUEST), endpoint_call
        ),
        _Entry(
            "profile.read_trace",
            traces,
            trace_call,
            edge_cases=(
                (".jsonl", "\n".join([json.dumps(_LEDGER_ROW)] * 2), None),
                (".jsonl", "{}\n{}\n", None),
            ),
        ),
        _Entry(
            "profile.Profiler.profile",
            st.tuples(st.sampled_from([".jsonl"]), TRACE_TEXT),
            profile_call,
        ),
    ]


PROSE_FIXED = "\n".join(
    f"Step {i}: the deploy script migrated table users and returned code {i}." for i in range(60)
)


def lambda_edge_requests(big_msgs: list[dict[str, Any]], orphan: list[dict[str, Any]]) -> tuple[Any, ...]:
    """Edge requests for the router: a 5 MB turn, an orphan tool result, NaN temperature, bad caps."""
    from tokenlean.types import Request

    return (
        lambda: Request.from_openai({"messages": big_msgs, "temperature": 0}),
        lambda: Request.from_openai({"messages": orphan, "temperature": math.nan, "max_tokens": -1}),
        lambda: Request.from_openai({"messages": [{"role": "user", "content": "\ud800"}], "max_tokens": 5}),
        lambda: Request.from_openai(
            {"messages": [{"role": "user", "content": "hi"}], "temperature": math.inf}
        ),
    )


def _response(text: str) -> Any:
    from tokenlean.types import Message, Response

    return Response(Message("assistant", text), finish_reason="stop")


def _jsonable(obj: Any) -> bool:
    try:
        json.dumps(obj)
    except (TypeError, ValueError):
        return False
    return True


def _completion_body(text: Any, model: Any) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def _mock_client(answer: Callable[[Any], Any], status: int = 200) -> Any:
    """An ``httpx.Client`` whose server is a function: no socket, no network."""
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.content)
        except ValueError:
            body = None
        out = answer(body)
        if isinstance(out, bytes):
            return httpx.Response(status, content=out, headers={"content-type": "application/json"})
        data = json.dumps(out, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return httpx.Response(status, content=data, headers={"content-type": "application/json"})

    return httpx.Client(transport=httpx.MockTransport(handler))


# -- trace files -------------------------------------------------------------------------------

_LEDGER_ROW = {
    "model": "gpt-4o",
    "usage": {"input_tokens": 10, "output_tokens": 2},
    "task_id": "t1",
    "started_at": 1.0,
    "ended_at": 2.0,
    "cost": "0.001",
}


def _mutate(template: Any) -> st.SearchStrategy[Any]:
    """``template`` with any field (recursively) possibly replaced by an odd JSON value."""
    if isinstance(template, dict):
        return (
            st.fixed_dictionaries({k: _mutate(v) for k, v in template.items()}).flatmap(
                lambda d: st.one_of(
                    st.just(d), st.dictionaries(TEXT, ODD_JSON, max_size=2).map(lambda e: {**d, **e})
                )
            )
            | ODD_JSON
        )
    if isinstance(template, list):
        return (
            st.lists(st.one_of(*[_mutate(v) for v in template]) if template else ODD_JSON, max_size=3)
            | ODD_JSON
        )
    return st.one_of(st.just(template), st.just(template), st.just(template), ODD_JSON)


_OPENAI_ROW = {
    "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    "response": _completion_body("hello", "gpt-4o"),
    "task_id": "t",
    "started_at": "2024-01-01T00:00:00Z",
    "latency_s": 1.5,
    "ttft_s": 0.2,
    "cost": "0.01",
    "endpoint": "e",
}
_LC_RUN = {
    "run_type": "llm",
    "id": "r1",
    "trace_id": "t1",
    "start_time": "2024-01-01T00:00:00",
    "end_time": "2024-01-01T00:00:01",
    "inputs": {
        "messages": [[{"lc": 1, "type": "constructor", "id": ["HumanMessage"], "kwargs": {"content": "hi"}}]]
    },
    "outputs": {
        "generations": [
            [{"text": "hello", "message": {"type": "ai", "data": {"content": "hello", "tool_calls": []}}}]
        ],
        "llm_output": {"token_usage": {"prompt_tokens": 3, "completion_tokens": 1}},
    },
    "extra": {"invocation_params": {"model": "gpt-4o"}, "metadata": {"task_id": "t"}},
    "events": [{"name": "new_token", "time": "2024-01-01T00:00:00.5"}],
    "child_runs": [],
}
_SWE = {
    "history": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "fix it"},
        {
            "role": "assistant",
            "content": "ok",
            "tool_calls": [{"id": "c", "function": {"name": "bash", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "done", "tool_call_ids": ["c"]},
        {"role": "assistant", "content": "fixed"},
    ]
}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


TRACE_TEXT = st.one_of(
    st.lists(_mutate(_LEDGER_ROW), min_size=1, max_size=3).map(lambda rows: "\n".join(map(_dumps, rows))),
    st.lists(_mutate(_OPENAI_ROW), min_size=1, max_size=3).map(lambda rows: "\n".join(map(_dumps, rows))),
    st.lists(_mutate(_LC_RUN), min_size=1, max_size=3).map(lambda rows: "\n".join(map(_dumps, rows))),
    _mutate(_SWE).map(_dumps),
    st.lists(ODD_JSON, min_size=1, max_size=3).map(lambda rows: "\n".join(map(_dumps, rows))),
    TEXT,
)


# -- LangChain adapters ------------------------------------------------------------------------


def _langchain_entries(big: str) -> list[_Entry]:
    from langchain_core.messages import (
        AIMessage,
        ChatMessage,
        FunctionMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
    )
    from langchain_core.outputs import ChatGeneration, Generation, LLMResult
    from pydantic import ValidationError

    from langchain_tokenlean import (
        TokenleanCache,
        TokenleanCallbackHandler,
        TokenleanCompactionMiddleware,
        compact_messages,
        layout_messages,
    )
    from tokenlean.cache import SemanticCache
    from tokenlean.compaction import Compactor
    from tokenlean.metering import Meter

    lc_content = st.one_of(
        TEXT,
        PROSE,
        st.lists(
            st.one_of(TEXT, st.fixed_dictionaries({"type": maybe(TEXT), "text": ODD}), PART), max_size=3
        ),
    )
    lc_tool_call = st.fixed_dictionaries(
        {"name": rarely(TEXT), "args": rarely(st.just({}), ODD), "id": rarely(TEXT)}
    )

    def build(kind: str, content: Any, extra: Any) -> Any:
        try:
            if kind == "human":
                return HumanMessage(content=content)
            if kind == "system":
                return SystemMessage(content=content)
            if kind == "ai":
                return AIMessage(content=content, tool_calls=extra if isinstance(extra, list) else [])
            if kind == "tool":  # a tool result whose call is nowhere in the list
                return ToolMessage(
                    content=content, tool_call_id=extra if isinstance(extra, str) else "orphan"
                )
            if kind == "function":
                return FunctionMessage(content=content, name=extra if isinstance(extra, str) else "f")
            return ChatMessage(content=content, role=extra if isinstance(extra, str) else "critic")
        except Exception:  # the framework refused to build it (its own validation)
            return _SKIP  # LangChain refused the fields: not an input an adapter can be handed

    lc_message = st.builds(
        build,
        st.sampled_from(["human", "human", "ai", "tool", "system", "function", "chat"]),
        lc_content,
        st.one_of(st.lists(lc_tool_call, max_size=2), TEXT, ODD),
    )
    lc_messages = st.lists(lc_message, max_size=6).map(lambda ms: _SKIP if _SKIP in ms else ms)
    big_lc = [
        SystemMessage("Answer from the logs."),
        HumanMessage(big),
        AIMessage("", tool_calls=[{"name": "grep", "args": {"q": "503"}, "id": "call_1"}]),
        ToolMessage(big[: len(big) // 5], tool_call_id="call_1"),
        HumanMessage("Which line mentions error 503?"),
    ]
    orphan_lc = [
        HumanMessage("run it"),
        ToolMessage("exit 0\n" * 300, tool_call_id="call_9"),
        HumanMessage("and?"),
    ]

    compactor = Compactor(store="memory", mode="lexical", min_tokens=8)

    def compact_call(a: tuple[Any, Any]) -> object:
        msgs, ratio = a
        out = (
            compact_messages(msgs, compactor=compactor)
            if ratio is _SKIP
            else compact_messages(msgs, ratio=ratio, store="memory", mode="lexical")
        )
        return out

    middleware = TokenleanCompactionMiddleware(store="memory", mode="lexical", min_tokens=8, ratio=0.6)

    def middleware_call(msgs: Any) -> object:
        from langchain.agents.middleware.types import ModelRequest

        req = ModelRequest(model=None, messages=msgs, system_message=None)  # type: ignore[arg-type]
        return middleware.wrap_model_call(req, lambda r: r)

    def layout_call(a: tuple[Any, bool, Any]) -> object:
        msgs, anthropic, model = a
        return layout_messages(msgs, anthropic_cache_control=anthropic, model=model)

    lc_cache = TokenleanCache(SemanticCache(semantic=False))
    llm_strings = st.one_of(
        st.sampled_from(
            [
                '{"lc": 1, "type": "constructor", "id": ["x", "ChatOpenAI"], "kwargs": {"temperature": 0}}---[(\'stop\', None)]',
                "temperature=0 model=gpt-4o",
                "",
                "---",
                "{",
            ]
        ),
        TEXT,
        st.builds(lambda d: _dumps(d) + "---[]", ODD_JSON),
    )

    def gen_of(text: Any, meta: Any) -> Any:
        try:
            return [
                ChatGeneration(
                    message=AIMessage(content=text, response_metadata=meta if isinstance(meta, dict) else {})
                )
            ]
        except Exception:  # the framework refused to build it (its own validation)
            return _SKIP

    cache_args = st.tuples(
        st.one_of(TEXT, PROSE, st.just(big)),
        llm_strings,
        st.builds(gen_of, lc_content, st.one_of(st.fixed_dictionaries({"finish_reason": maybe(TEXT)}), ODD)),
    )

    def cache_call(a: tuple[Any, Any, Any]) -> object:
        prompt, llm_string, gens = a
        lc_cache.lookup(prompt, llm_string)
        if gens is not _SKIP:
            lc_cache.update(prompt, llm_string, gens)
        return lc_cache.lookup(prompt, llm_string)

    meter = Meter()
    handler = TokenleanCallbackHandler(meter)

    def result_of(text: Any, usage: Any, meta: Any, llm_output: Any, info: Any) -> Any:
        try:
            msg = AIMessage(content=text, response_metadata=meta if isinstance(meta, dict) else {})
            if usage is not None:
                msg.usage_metadata = usage  # set after validation, as providers' SDK adapters do
            gens: list[Any] = [
                ChatGeneration(message=msg, generation_info=info if isinstance(info, dict) else None)
            ]
            if isinstance(info, dict) and info.get("plain"):
                gens = [Generation(text=str(text), generation_info=info)]
            return LLMResult(
                generations=[gens], llm_output=llm_output if isinstance(llm_output, dict) else None
            )
        except Exception:  # the framework refused to build it (its own validation)
            return _SKIP

    results = st.builds(
        result_of,
        lc_content,
        st.one_of(st.none(), USAGE),
        st.one_of(
            st.fixed_dictionaries({}, optional={"model_name": ODD, "model": ODD, "tokenlean_cache_hit": ODD}),
            ODD,
        ),
        st.one_of(st.fixed_dictionaries({}, optional={"token_usage": USAGE, "model_name": ODD}), ODD),
        st.one_of(
            st.none(),
            st.dictionaries(st.sampled_from(["plain", "tokenlean_cache_hit", "x"]), ODD, max_size=2),
        ),
    )
    start_kwargs = st.fixed_dictionaries(
        {},
        optional={
            "metadata": st.one_of(
                st.fixed_dictionaries({}, optional={"tokenlean_task_id": ODD, "ls_model_name": ODD}), ODD
            ),
            "invocation_params": st.one_of(
                st.fixed_dictionaries({}, optional={"model": ODD, "model_name": ODD}), ODD
            ),
            "name": ODD,
        },
    )

    def callback_call(a: tuple[Any, Any, Any, bool]) -> object:
        result, serialized, kwargs, streamed = a
        run = uuid.uuid4()
        handler.on_chat_model_start(
            serialized, [[HumanMessage("hi")]], run_id=run, parent_run_id=None, **kwargs
        )
        if streamed:
            handler.on_llm_new_token("", run_id=run, chunk=None)
            handler.on_llm_new_token("x", run_id=run)
        handler.on_llm_end(result, run_id=run)
        meter.ledger.records()
        return meter.ledger.summary() if hasattr(meter.ledger, "summary") else None

    return [
        _Entry(
            "langchain.compact_messages",
            st.tuples(lc_messages, st.one_of(st.just(_SKIP), NUMBER)),
            compact_call,
            budget=COMPACTION_DEADLINE_S,
            framework_errors=(ValidationError,),
            edge_cases=(
                (big_lc, _SKIP),
                (orphan_lc, 0.9),
                (orphan_lc, math.nan),
                ([HumanMessage("\ud800" * 50)], -1),
            ),
        ),
        _Entry(
            "langchain.TokenleanCompactionMiddleware.wrap_model_call",
            lc_messages,
            middleware_call,
            budget=COMPACTION_DEADLINE_S,
            framework_errors=(ValidationError,),
            edge_cases=(big_lc, orphan_lc),
        ),
        _Entry(
            "langchain.layout_messages",
            st.tuples(lc_messages, st.booleans(), maybe(st.none(), ODD)),
            layout_call,
            framework_errors=(ValidationError,),
            edge_cases=((big_lc, True, None), (orphan_lc, True, "claude-3-5-sonnet")),
        ),
        _Entry(
            "langchain.TokenleanCache.lookup/update",
            cache_args,
            cache_call,
            framework_errors=(ValidationError,),
        ),
        _Entry(
            "langchain.TokenleanCallbackHandler",
            st.tuples(
                results,
                st.one_of(st.fixed_dictionaries({}, optional={"kwargs": ODD, "id": ODD, "name": ODD}), ODD),
                start_kwargs,
                st.booleans(),
            ),
            callback_call,
            framework_errors=(ValidationError,),
        ),
    ]


# -- LlamaIndex adapters -----------------------------------------------------------------------


def _llamaindex_entries(big: str) -> list[_Entry]:
    from llama_index.core.base.llms.types import (
        ChatMessage,
        ChatResponse,
        ImageBlock,
        MessageRole,
        TextBlock,
    )
    from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent
    from llama_index.core.llms import MockLLM
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from pydantic import ValidationError

    from llama_index.callbacks.tokenlean import TokenleanEventHandler
    from llama_index.llms.tokenlean import TokenleanCachedLLM
    from llama_index.llms.tokenlean.convert import messages_to_core
    from llama_index.memory.tokenlean import TokenleanCompactedHistoryBlock
    from llama_index.postprocessor.tokenlean import (
        TokenleanCompactionPostprocessor,
        TokenleanPromptLayoutPostprocessor,
    )
    from tokenlean.cache import SemanticCache
    from tokenlean.compaction import Compactor
    from tokenlean.metering import Meter

    def block_of(kind: str, value: Any) -> Any:
        if kind == "image":
            return ImageBlock(
                image=value if isinstance(value, bytes) else b"\x89PNG\r\n", image_mimetype="image/png"
            )
        return TextBlock(text=value if isinstance(value, str) else str(value))

    def build(role: Any, blocks: Any, kwargs: Any) -> Any:
        try:
            return ChatMessage(
                role=role, blocks=[block_of(k, v) for k, v in blocks], additional_kwargs=kwargs
            )
        except Exception:  # the framework refused to build it (its own validation)
            return _SKIP

    li_kwargs = st.one_of(
        st.just({}),
        st.just({}),
        st.fixed_dictionaries(
            {},
            optional={
                "tool_calls": st.one_of(
                    st.lists(
                        st.one_of(TOOL_CALL, st.fixed_dictionaries({"name": ODD, "arguments": ODD})),
                        max_size=2,
                    ),
                    ODD,
                ),
                "tool_call_id": ODD,
                "name": ODD,
                "other": ODD,
            },
        ),
        st.just({}),
    )
    li_message = st.builds(
        build,
        rarely(st.sampled_from(list(MessageRole))),
        st.lists(
            st.tuples(st.sampled_from(["text", "text", "image"]), st.one_of(TEXT, PROSE, BAD_BYTES)),
            max_size=3,
        ),
        li_kwargs,
    )
    li_messages = st.lists(li_message, max_size=5).map(lambda ms: _SKIP if _SKIP in ms else ms)
    big_li = [
        ChatMessage(role=MessageRole.SYSTEM, content="Answer from the logs."),
        ChatMessage(role=MessageRole.USER, content=big),
        ChatMessage(
            role=MessageRole.TOOL, content="exit 0\n" * 300, additional_kwargs={"tool_call_id": "orphan"}
        ),
        ChatMessage(role=MessageRole.USER, content="Which line mentions error 503?"),
    ]

    post = TokenleanCompactionPostprocessor(
        compactor=Compactor(store="memory", mode="lexical", ratio=0.6, marker=None)
    )

    def node_of(text: Any, score: Any) -> Any:
        try:
            return NodeWithScore(
                node=TextNode(text=text), score=score if isinstance(score, (int, float)) else None
            )
        except Exception:  # the framework refused to build it (its own validation)
            return _SKIP

    nodes = st.lists(st.builds(node_of, st.one_of(PROSE, TEXT), NUMBER), max_size=4).map(
        lambda ns: _SKIP if _SKIP in ns else ns
    )

    def post_call(a: tuple[Any, Any]) -> object:
        ns, query = a
        return post.postprocess_nodes(ns, query_bundle=QueryBundle(query_str=query))

    def post_init_call(a: tuple[Any, Any]) -> object:
        opts, ns = a
        p = TokenleanCompactionPostprocessor(**{"mode": "lexical", **opts})
        return p.postprocess_nodes(ns, query_bundle=QueryBundle(query_str="error 503"))

    post_opts = st.fixed_dictionaries(
        {},
        optional={
            "ratio": NUMBER,
            "target_tokens": NUMBER,
            "marker": maybe(st.none(), ODD),
            "keep_empty": ODD,
        },
    )
    layout_post = TokenleanPromptLayoutPostprocessor()

    def layout_post_call(ns: Any) -> object:
        return layout_post.postprocess_nodes(ns, query_bundle=QueryBundle(query_str="q"))

    def memory_call(a: tuple[Any, Any]) -> object:
        msgs, query = a
        block = TokenleanCompactedHistoryBlock(
            compactor=Compactor(
                store="memory",
                mode="lexical",
                ratio=0.6,
                min_tokens=8,
                keep_last_turns=0,
                keep_last_user=False,
                incremental=True,
            )
        )

        async def go() -> object:
            await block.aput(msgs)
            return await block.aget(query)

        return asyncio.run(go())

    cache_llm = TokenleanCachedLLM(
        MockLLM(max_tokens=8), cache=SemanticCache(semantic=False, assume_deterministic=True)
    )

    def cached_llm_call(msgs: Any) -> object:
        cache_llm.chat(msgs)
        return cache_llm.chat(msgs)

    meter = Meter()
    ev_handler = TokenleanEventHandler(meter=meter)

    def response_of(text: Any, raw: Any, kwargs: Any) -> Any:
        try:
            return ChatResponse(
                message=ChatMessage(role=MessageRole.ASSISTANT, content=str(text)),
                raw=raw if isinstance(raw, (dict, type(None))) else {"usage": raw},
                additional_kwargs=kwargs if isinstance(kwargs, dict) else {},
            )
        except Exception:  # the framework refused to build it (its own validation)
            return _SKIP

    li_responses = st.builds(
        response_of,
        TEXT,
        st.one_of(st.fixed_dictionaries({}, optional={"usage": USAGE, "model": ODD}), ODD),
        st.one_of(
            st.fixed_dictionaries({}, optional={"prompt_tokens": NUMBER, "completion_tokens": NUMBER}), ODD
        ),
    )

    def handler_call(a: tuple[Any, Any, Any]) -> object:
        resp, model_dict, tags = a
        span = f"span-{uuid.uuid4()}"
        try:
            start = LLMChatStartEvent(
                messages=[],
                additional_kwargs={},
                model_dict=model_dict if isinstance(model_dict, dict) else {},
                span_id=span,
                tags=tags if isinstance(tags, dict) else {},
            )
            end = LLMChatEndEvent(messages=[], response=resp, span_id=span)
        except Exception:  # the framework refused to build it (its own validation)
            return None
        ev_handler.handle(start)
        ev_handler.handle(end)
        return meter.ledger.records()

    return [
        _Entry(
            "llamaindex.messages_to_core",
            li_messages,
            messages_to_core,
            framework_errors=(ValidationError,),
            edge_cases=(big_li,),
        ),
        _Entry(
            "llamaindex.TokenleanCompactionPostprocessor",
            st.tuples(nodes, st.one_of(TEXT, st.just("\ud800"))),
            post_call,
            budget=COMPACTION_DEADLINE_S,
            framework_errors=(ValidationError,),
            edge_cases=(([NodeWithScore(node=TextNode(text=big))], "error 503"),),
        ),
        _Entry(
            "llamaindex.TokenleanCompactionPostprocessor(...)",
            st.tuples(post_opts, nodes),
            post_init_call,
            budget=COMPACTION_DEADLINE_S,
            framework_errors=(ValidationError,),
            edge_cases=(({"ratio": math.nan}, []), ({"ratio": -1.0}, [])),
        ),
        _Entry(
            "llamaindex.TokenleanPromptLayoutPostprocessor",
            nodes,
            layout_post_call,
            framework_errors=(ValidationError,),
        ),
        _Entry(
            "llamaindex.TokenleanCompactedHistoryBlock",
            st.tuples(li_messages, st.one_of(st.none(), li_messages)),
            memory_call,
            budget=COMPACTION_DEADLINE_S,
            framework_errors=(ValidationError,),
            edge_cases=((big_li, None),),
        ),
        _Entry(
            "llamaindex.TokenleanCachedLLM.chat",
            li_messages.filter(lambda m: m is _SKIP or bool(m)),
            cached_llm_call,
            framework_errors=(ValidationError,),
        ),
        _Entry(
            "llamaindex.TokenleanEventHandler",
            st.tuples(
                li_responses,
                st.one_of(st.fixed_dictionaries({}, optional={"model": ODD, "api_base": ODD}), ODD),
                ODD,
            ),
            handler_call,
            framework_errors=(ValidationError,),
        ),
    ]


# -- the run -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_logs(tally: _Tally) -> Iterator[None]:
    """Keep tokenlean's deliberate warnings off the console and watch for swallowed exceptions."""
    watch = _SwallowWatch(tally)
    root = logging.getLogger("tokenlean")
    old = root.level, root.propagate
    root.addHandler(watch)
    root.setLevel(logging.DEBUG)
    root.propagate = False
    try:
        yield
    finally:
        root.removeHandler(watch)
        root.setLevel(old[0])
        root.propagate = old[1]


def fuzz(quick: bool, seed: int = 0) -> dict[str, Any]:
    """Fuzz every entry point; figures as described in the module docstring."""
    examples = 25 if quick else 300
    allot_s = 0.5 if quick else 6.0
    t0 = time.perf_counter()
    tally = _Tally()
    big = big_text(BIG_BYTES if not quick else QUICK_BIG_BYTES)
    with (
        tempfile.TemporaryDirectory(prefix="tokenlean-fuzz-") as tmp,
        _quiet_logs(tally),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", HypothesisWarning)  # "overly large repr" of odd inputs
        # adapters built without a store open the default SQLite one: keep it in the temp dir
        old_store = os.environ.get("TOKENLEAN_OMISSIONS")
        os.environ["TOKENLEAN_OMISSIONS"] = str(Path(tmp) / "omissions.sqlite3")
        entries = _core_entries(Path(tmp), big)
        entries += _langchain_entries(big)
        entries += _llamaindex_entries(big)
        try:
            for entry in entries:
                _drive(tally, entry, examples, allot_s, seed)
        finally:
            if old_store is None:
                os.environ.pop("TOKENLEAN_OMISSIONS", None)
            else:
                os.environ["TOKENLEAN_OMISSIONS"] = old_store
    by_entry = {
        name: {
            "calls": s.calls,
            "typed_errors": s.typed_errors,
            "untyped": s.untyped,
            "past_deadline": s.past_deadline,
            "skipped": s.skipped,
            "max_s": round(s.max_s, 3),
            "seconds": round(s.seconds, 2),
        }
        for name, s in tally.stats.items()
    }
    return {
        "entry_points": len(by_entry),
        "calls": sum(s.calls for s in tally.stats.values()),
        "untyped_exceptions": sum(s.untyped for s in tally.stats.values()),
        "past_deadline": sum(s.past_deadline for s in tally.stats.values()),
        "deadline_s": {"compaction": COMPACTION_DEADLINE_S, "other": DEFAULT_DEADLINE_S},
        "big_message_bytes": len(big.encode("utf-8")),
        "by_entry_point": by_entry,
        "examples": tally.examples,
        "failure_signatures": [
            {"entry_point": k[0], "exception": k[1], "where": k[2], **v}
            for k, v in sorted(tally.signatures.items(), key=lambda kv: -kv[1]["count"])
        ],
        "seed": seed,
        "quick": quick,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the test suite's short run (~20 s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(json.dumps(fuzz(args.quick, args.seed), indent=2, ensure_ascii=True))


if __name__ == "__main__":
    main()
