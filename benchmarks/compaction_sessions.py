"""Agent sessions: what compaction does to the bill under prompt caching, and what the agent keeps.

    python benchmarks/compaction_sessions.py [--data DIR] [--json OUT] [--quick] [--methods A,B]

Data: the SWE-agent trajectories in ``DIR/agent_traces/swe-agent`` (``.traj`` JSON; ``history`` is
the message list the model saw; the folder holds 19, not the 20 its README counts). Sorted by file
name, the first 10 are the **tune** half and the other 9 the **report** half; every figure is given
for both, and nothing of tokenlean's is chosen on the report half. ``--quick`` takes the 2
shortest trajectories of each half and skips the tuning grid.

Each trajectory is replayed call by call: call k sends ``history[:a_k]`` (everything before the
k-th assistant message) through a method, and the method's output is what the provider would
have been sent. Methods: ``none``; ``tokenlean-naive`` (``Compactor(incremental=False)``: every
call compacted afresh); ``tokenlean-incremental`` (``Compactor(incremental=True)``, one session per
trajectory: a message is decided once, when it leaves the live window, and frozen); the peers in
``session_peers.py`` (headroom-ai ``compress()``, distil-llm ``compress_messages`` default and
``verbatim=True``). tokenlean runs at its defaults except ``store="memory"`` and ``deadline=None``
(the per-call deadline trades quality for latency when a machine is slow; the benchmark measures
the method, not the load of a shared machine); both change no decision when the deadline is not hit.

Metrics, per half:

* **effective input cost per session** under provider prompt caching (calls within the TTL, the
  cache cold at the start of each session). Each call is serialised as the prompt cache sees it
  (``tokenlean.layout.canonical.request_segments``: one segment per message, role header, text,
  tool calls) and counted with ``tokenlean.tokens`` (tiktoken ``o200k_base``; the same count is
  used for Claude, whose tokenizer is not public).
  *OpenAI (gpt-4o)*: the cached part of a call is its longest common token prefix with any
  earlier call of the session, if >= 1,024 tokens, rounded down to 1,024 + a multiple of 128;
  cached tokens cost the cached-input price (50%), the rest the input price.
  *Anthropic (claude-sonnet-4-5)*: breakpoints where tokenlean's layout planner puts them
  (``plan_cache_markers(request, "anthropic")``: system, tools, last message or end of history;
  none below the 1,024-token minimum). A call reads the longest prefix that ends on a message
  boundary within 20 blocks before one of its breakpoints and that an earlier call wrote (an
  earlier call's breakpoint prefix, byte-identical); from there to its last breakpoint it writes
  (125%), after it pays the input price; reads cost 10%.
* **action evidence kept**: file paths, line numbers, identifiers (CamelCase / snake_case, length
  >= 4), error names and quoted strings that the *next* assistant message (thought + action)
  mentions and that occur in the call's observations (user / tool messages), and the share of
  them still found anywhere in the compacted context the model reads. The extractor below is
  written independently of ``tokenlean.compaction.protect`` (shlex tokens of the action, paths
  split on ``/`` and ``:``, regexes for ``file.py:12`` and ``line 12``). ``kept_old`` counts only
  evidence absent from the latest observation (what the agent can only find in older, compactable
  context); ``by_source`` splits it into ``latest``, ``task`` (only in the first user message, the
  task statement) and ``older`` observations.
* **verbatim**: the share of output lines (omission markers removed, marker-only lines not
  counted) that are byte-identical input lines of the same message, or an unaltered contiguous
  piece of one (a line kept in part, the rest behind a marker); ``whole_lines`` counts complete
  lines only. Lines are split with ``str.splitlines`` (a CRLF -> LF rewrite alone is not counted).
* **tokens_per_s**: input tokens of all calls / seconds inside the method (one thread).

Diagnostics: ``prefix_rewrites`` (share of calls that change a message the previous call already
sent, which message it was first, and the previously sent tokens after it: what a prefix cache
loses), ``by_format`` (cost ratios for trajectories whose observations are ``tool`` messages vs
``user`` messages). The full run also fits one tokenlean setting on the tune half
(``tokenlean-incremental-tuned``, rule in ``TUNE_RULE``) and prices two what-ifs that are *not*
tokenlean behaviour: an extra Anthropic breakpoint at the end of the compactor's frozen prefix, and
the compactor run on every K-th call only.

Prices are pinned below (read from tokenlean's shipped table on the date given), so figures stay
comparable when the table changes; the JSON says whether the shipped table still agrees.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from _output import write_json

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
TRACES = Path("agent_traces") / "swe-agent"
HALF = 10

# -- prices: pinned ----------------------------------------------------------------------------
# USD per million input tokens, read from core/tokenlean/metering/prices.toml (table "as_of"
# 2025-11) through tokenlean.metering.PriceTable.default() on 2026-12-06. Pinned so that figures
# from different runs stay comparable; the JSON reports whether the shipped table still agrees.
PRICES_PINNED_ON = "2026-12-06"
PRICES_TABLE_AS_OF = "2025-11"
OPENAI_MODEL = "gpt-4o"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
PRICES: dict[str, dict[str, str]] = {
    OPENAI_MODEL: {"input": "2.50", "cached_input": "1.25", "cache_write": "2.50"},
    ANTHROPIC_MODEL: {"input": "3.00", "cached_input": "0.30", "cache_write": "3.75"},
}
OPENAI_MIN_PREFIX = 1024
OPENAI_STEP = 128
ANTHROPIC_LOOKBACK_BLOCKS = 20

METHODS = (
    "none",
    "tokenlean-naive",
    "tokenlean-incremental",
    "headroom-compress",
    "distil-compress_messages",
    "distil-compress_messages-verbatim",
)

Messages = list[dict[str, Any]]


# -- data ------------------------------------------------------------------------------------


@dataclass
class Session:
    name: str
    messages: Messages  # OpenAI format, as the model saw them
    actions: list[str]  # per message: thought + action for assistant turns, "" otherwise

    @property
    def calls(self) -> list[int]:
        """Index of each assistant message with something before it: call k sends messages[:a]."""
        return [i for i, m in enumerate(self.messages) if m["role"] == "assistant" and i >= 2]


def _message(m: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
    if m["role"] == "assistant" and m.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": tc["id"],
                "type": tc.get("type", "function"),
                "function": {
                    "name": tc["function"]["name"],
                    "arguments": tc["function"].get("arguments", "{}"),
                },
            }
            for tc in m["tool_calls"]
        ]
    if m["role"] == "tool":
        ids = m.get("tool_call_ids") or []
        out["tool_call_id"] = ids[0] if ids else m.get("tool_call_id", "")
    return out


def load_sessions(data: Path) -> list[Session]:
    out = []
    for path in sorted((data / TRACES).glob("*.traj")):
        hist = json.loads(path.read_text()).get("history") or []
        keep = [
            m
            for m in hist
            if m.get("role") in ("system", "user", "assistant", "tool") and isinstance(m.get("content"), str)
        ]
        msgs = [_message(m) for m in keep]
        actions = [
            (m["content"] + "\n" + (m.get("action") or "")) if m["role"] == "assistant" else "" for m in keep
        ]
        out.append(Session(path.name, msgs, actions))
    return out


# -- action evidence (written independently of tokenlean.compaction.protect) --------------------

_FILE_EXT = frozenset(
    [
        "py",
        "pyi",
        "pyx",
        "txt",
        "md",
        "rst",
        "cfg",
        "toml",
        "ini",
        "json",
        "yaml",
        "yml",
        "lock",
        "in",
        "c",
        "h",
        "cc",
        "cpp",
        "hpp",
        "js",
        "ts",
        "jsx",
        "tsx",
        "html",
        "css",
        "sh",
        "bash",
        "log",
        "out",
        "csv",
        "xml",
        "java",
        "go",
        "rs",
        "rb",
        "php",
        "pl",
        "sql",
        "zip",
        "tar",
        "gz",
        "tgz",
        "bz2",
        "xz",
        "pcap",
        "pcapng",
        "png",
        "jpg",
        "jpeg",
        "gif",
        "pdf",
        "bin",
        "elf",
        "exe",
        "so",
        "o",
        "a",
        "enc",
        "key",
        "pem",
        "crt",
        "der",
        "db",
        "sqlite",
        "asm",
        "s",
        "patch",
        "diff",
        "traj",
    ]
)
_LEFT_PUNCT = "`'\"([{<"
_RIGHT_PUNCT = "`'\")]}>,;.!?"
_ERROR_NAME = re.compile(r"[A-Z][A-Za-z0-9]*(?:Error|Exception|Warning)")
_FILE_LINE = re.compile(r"(.+?\.[A-Za-z][A-Za-z0-9]{0,7}):(\d+)(?::\d+)?")
_LINE_WORD = re.compile(r"\blines?\s+(\d{1,6})(?:\s*(?:-|to|and|through)\s*(\d{1,6}))?", re.IGNORECASE)
_RANGE = re.compile(r"(\d{1,6}):(\d{1,6})")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{3,}")
_QUOTED = re.compile(r"`([^`\n]*)`|\"([^\"\n]*)\"")  # pairs consumed left to right, lengths checked after
_NOT_PATH = re.compile(r"[^\w./~+:-]+")
_LINE_COMMANDS = frozenset({"goto", "open", "edit", "open_file", "scroll_to", "view", "sed"})


def _is_identifier(w: str) -> bool:
    core = w.strip("_")
    if len(core) < 4:
        return False
    snake = "_" in core and any(c.isalpha() for c in core)
    camel = re.search(r"[a-z][A-Z]", core) is not None or re.match(r"[A-Z]{2,}[a-z]", core) is not None
    return snake or camel


def _path_items(tok: str) -> list[str]:
    """A path-looking token and its last component (split on ``/`` and ``:``)."""
    tok = tok.removeprefix("./")
    pieces = [p for p in tok.split(":") if p]
    out = []
    for p in pieces:
        comps = [c for c in p.split("/") if c]
        if not comps:
            continue
        base = comps[-1]
        ext = base.rsplit(".", 1)[1].lower() if "." in base[1:] else ""
        looks_file = ext in _FILE_EXT and any(c.isalpha() for c in base.rsplit(".", 1)[0])
        if ("/" in p and any(c.isalpha() for c in p)) or looks_file:
            out.append(p)
            if looks_file and base != p:
                out.append(base)
    return out


def extract_evidence(action: str) -> dict[str, str]:
    """value -> kind (error, path, line, identifier, quoted) that the action mentions."""
    found: dict[str, str] = {}

    def add(value: str, kind: str) -> None:
        value = value.strip()
        if value and value not in found:
            found[value] = kind

    for name in _ERROR_NAME.findall(action):
        add(name, "error")
    for line in action.splitlines():
        try:
            toks = shlex.split(line, comments=False, posix=True)
        except ValueError:
            toks = line.split()
        for raw in (piece for t in toks for piece in _NOT_PATH.split(t)):
            tok = raw.lstrip(_LEFT_PUNCT).rstrip(_RIGHT_PUNCT)
            if not tok:
                continue
            m = _FILE_LINE.fullmatch(tok)
            if m:
                for p in _path_items(m.group(1)):
                    add(p, "path")
                add(m.group(2), "line")
                continue
            for p in _path_items(tok):
                add(p, "path")
            r = _RANGE.fullmatch(tok)
            if r:
                add(r.group(1), "line")
                add(r.group(2), "line")
        if toks and toks[0] in _LINE_COMMANDS:
            for tok in toks[1:]:
                if tok.isdigit() and 0 < int(tok) < 1_000_000:
                    add(tok, "line")
    for m in _LINE_WORD.finditer(action):
        for g in m.groups():
            if g:
                add(g, "line")
    for w in _WORD.findall(action):
        if _is_identifier(w):
            add(w, "identifier")
        for part in w.split("."):
            if part != w and _is_identifier(part):
                add(part, "identifier")
    for m in _QUOTED.finditer(action):
        q = m.group(1) if m.group(1) is not None else m.group(2)
        if (4 if m.group(1) is not None else 6) <= len(q.strip()) <= 160:
            add(q, "quoted")
    return found


def evidence_matcher(value: str, kind: str) -> Callable[[str], bool]:
    if kind == "line":
        n = re.escape(value)
        rx = re.compile(rf"(?m)(?:^[ \t]*{n}:|\bline {n}\b|\.[A-Za-z]\w{{0,7}}:{n}\b)")
        return lambda text: rx.search(text) is not None
    if kind in ("identifier", "error"):
        rx = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(value)}(?![A-Za-z0-9_])")
        return lambda text: rx.search(text) is not None
    return lambda text: value in text


@dataclass
class Evidence:
    """The evidence of one call: items found in its observations, and where they were found.

    ``source``: ``latest`` (in the observation the action answers), ``task`` (only in the first
    user message: the task statement) or ``older`` (only in older observations).
    """

    items: list[tuple[str, str, Callable[[str], bool], str]]  # value, kind, matcher, source


def _text(m: dict[str, Any]) -> str:
    c = m.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return "\n".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
    return ""


def _observations(msgs: Sequence[dict[str, Any]]) -> str:
    return "\n\x00\n".join(_text(m) for m in msgs if m["role"] in ("user", "tool"))


def _context_text(msgs: Sequence[dict[str, Any]]) -> str:
    """Everything the model reads in a (compacted) context: texts and tool-call arguments."""
    parts = []
    for m in msgs:
        parts.append(_text(m))
        for tc in m.get("tool_calls") or ():
            fn = tc.get("function") or {}
            parts.append(f"{fn.get('name', '')} {fn.get('arguments', '')}")
    return "\n\x00\n".join(parts)


def _first_user(msgs: Sequence[dict[str, Any]]) -> int:
    return next((i for i, m in enumerate(msgs) if m["role"] == "user"), -1)


def call_evidence(context: Messages, action: str) -> Evidence:
    obs = _observations(context)
    latest = _text(context[-1]) if context and context[-1]["role"] in ("user", "tool") else ""
    task_i = _first_user(context)
    older = _observations([m for i, m in enumerate(context[:-1]) if i != task_i])
    items = []
    for value, kind in extract_evidence(action).items():
        match = evidence_matcher(value, kind)
        if match(obs):
            source = "latest" if match(latest) else ("older" if match(older) else "task")
            items.append((value, kind, match, source))
    return Evidence(items)


# -- verbatim --------------------------------------------------------------------------------

_MARKERS = re.compile(
    r"\[…[^\[\]\n]*?omitted · [^\[\]\n]*?…\]"  # tokenlean
    r"|<<[^\n]*?handle=[0-9a-f]{8}[^\n]*?>>|«[^\n]*?handle=[0-9a-f]{8}[^\n]*?»"  # distil
    r"|\[[^\[\]\n]*?hash=[0-9a-f]{6,}[^\[\]\n]*?\]"  # headroom
)


def verbatim_lines(original: str, output: str) -> tuple[int, int, int]:
    """(lines whose every fragment is a verbatim piece of an input line, whole input lines, lines)."""
    if output == original:
        n = sum(1 for ln in output.splitlines() if ln.strip())
        return n, n, n
    src_lines = original.splitlines()
    src_set = set(src_lines)
    ok = whole = total = 0
    for line in output.splitlines():
        frags = [f for f in _MARKERS.split(line) if f.strip()]
        if not frags:
            continue  # a marker-only line is not content
        total += 1
        if len(frags) == 1 and frags[0] == line and line in src_set:
            ok += 1
            whole += 1
            continue
        if all(f in src_set or any(f in s for s in src_lines) for f in frags):
            ok += 1
    return ok, whole, total


# -- serialisation and cache pricing ------------------------------------------------------------


class Serializer:
    """The request as a prompt cache sees it: per-message segments, their tokens and prefix hashes."""

    def __init__(self) -> None:
        from tokenlean.tokens import get_counter

        self._counter = get_counter(OPENAI_MODEL)
        self._tok: dict[str, list[int]] = {}

    def segments(self, msgs: Messages) -> list[tuple[bytes, list[int], str]]:
        from tokenlean.layout.canonical import as_request, request_segments

        out = []
        for seg in request_segments(as_request({"messages": msgs})):
            toks = self._tok.get(seg.text)
            if toks is None:
                toks = self._tok[seg.text] = self._counter.encode(seg.text)
            h = hashlib.blake2b(seg.text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            out.append((h, toks, seg.text))
        return out

    def reset(self) -> None:
        if len(self._tok) > 50_000:
            self._tok.clear()


def _lcp(a: list[tuple[bytes, list[int], str]], b: list[tuple[bytes, list[int], str]]) -> int:
    n = 0
    for (ha, ta, _), (hb, tb, _) in zip(a, b, strict=False):
        if ha == hb:
            n += len(ta)
            continue
        for x, y in zip(ta, tb, strict=False):
            if x != y:
                break
            n += 1
        return n
    return n


def openai_cached(lcp: int) -> int:
    if lcp < OPENAI_MIN_PREFIX:
        return 0
    return OPENAI_MIN_PREFIX + ((lcp - OPENAI_MIN_PREFIX) // OPENAI_STEP) * OPENAI_STEP


@dataclass
class CacheLedger:
    """Token accounting of one method over one session, for both providers."""

    calls: int = 0
    tokens: int = 0
    oa_cached: int = 0
    an_read: int = 0
    an_write: int = 0
    an_breakpoints: int = 0
    _history: list[list[tuple[bytes, list[int], str]]] = field(default_factory=list)
    _written: set[bytes] = field(default_factory=set)

    def add(self, segs: list[tuple[bytes, list[int], str]], breakpoints: Iterable[int]) -> None:
        total = sum(len(t) for _, t, _ in segs)
        self.calls += 1
        self.tokens += total
        # OpenAI: longest common token prefix with any earlier call
        best = max((_lcp(segs, h) for h in self._history), default=0)
        self.oa_cached += openai_cached(min(best, total))
        self._history.append(segs)
        # Anthropic: prefix hashes at message boundaries
        cum: list[bytes] = []
        pos: list[int] = []
        h = hashlib.blake2b(digest_size=16)
        p = 0
        for sh, toks, _ in segs:
            h.update(sh)
            cum.append(h.copy().digest())
            p += len(toks)
            pos.append(p)
        bps = sorted(set(breakpoints))
        read_k = -1
        for bp in bps:
            for k in range(bp, max(-1, bp - ANTHROPIC_LOOKBACK_BLOCKS), -1):
                if cum[k] in self._written:
                    read_k = max(read_k, k)
                    break
        read = pos[read_k] if read_k >= 0 else 0
        last = pos[bps[-1]] if bps else 0
        self.an_read += read
        self.an_write += max(0, last - read)
        self.an_breakpoints += len(bps)
        for bp in bps:
            self._written.add(cum[bp])


def anthropic_breakpoints(msgs: Messages) -> list[int]:
    """Segment indices after which tokenlean's layout planner puts ``cache_control`` markers."""
    from tokenlean.layout import plan_cache_markers

    plan = plan_cache_markers({"model": ANTHROPIC_MODEL, "messages": msgs}, "anthropic")
    return [b.message_index for b in plan.breakpoints if b.message_index is not None]


def _price(model: str) -> Any:
    from tokenlean.metering import ModelPrice

    p = PRICES[model]
    return ModelPrice(
        input=p["input"], output="0", cached_input=p["cached_input"], cache_write=p["cache_write"]
    )


def shipped_prices_agree() -> dict[str, Any]:
    from tokenlean.metering import PriceTable

    table = PriceTable.default()
    out: dict[str, Any] = {}
    for model, pinned in PRICES.items():
        shipped = table.price(model).to_dict()
        out[model] = all(Decimal(shipped[k]) == Decimal(v) for k, v in pinned.items())
    return out


def costs(ledger: CacheLedger) -> dict[str, float]:
    from tokenlean.types import Usage

    oa = _price(OPENAI_MODEL).cost(Usage(input_tokens=ledger.tokens, cached_input_tokens=ledger.oa_cached))
    an = _price(ANTHROPIC_MODEL).cost(
        Usage(
            input_tokens=ledger.tokens,
            cached_input_tokens=ledger.an_read,
            cache_write_tokens=ledger.an_write,
        )
    )
    return {"openai": float(oa), "anthropic": float(an)}


# -- methods ---------------------------------------------------------------------------------


class TokenleanMethod:
    """tokenlean's Compactor at its defaults (``store="memory"``, ``deadline=None``) or ``options``.

    ``every`` > 1 is a what-if, not tokenlean behaviour: the compactor runs on every ``every``-th
    call only, and the calls between send the last compacted prefix plus the new messages as they
    are (decisions made in batches, so the cached prefix survives the calls between).
    """

    def __init__(self, name: str, incremental: bool, embedder: Any, every: int = 1, **options: Any) -> None:
        self.name = name
        self.incremental = incremental
        self.embedder = embedder
        self.every = every
        self.options = options
        self._comp: Any = None
        self._res: Any = None
        self._last: Messages | None = None
        self._k = 0
        self._frozen = 0
        self.stats: dict[str, int] = {"lexical_fallbacks": 0, "pass_throughs": 0}
        self.scoring = "?"

    def start(self, session: str) -> None:
        from tokenlean.compaction import Compactor

        # each (method, session) starts with a cold embedding cache: no method profits from another
        cache = getattr(self.embedder, "_cache", None)
        if cache is not None:
            cache.clear()
        self._comp = Compactor(
            incremental=self.incremental,
            embedder=self.embedder,
            store="memory",
            deadline=None,
            **self.options,
        )
        self.scoring = "embedding (all-MiniLM-L6-v2)" if self._comp.embedder is not None else "lexical"
        self._res, self._last, self._k, self._frozen = None, None, 0, 0

    def __call__(self, msgs: Messages) -> Messages:
        k, self._k = self._k, self._k + 1
        if self.every > 1 and self._last is not None and k % self.every:
            out = self._last + msgs[len(self._last) :]
            self._res = None
        else:
            self._res = self._comp.compact(msgs, session="s")
            out = self._res.to_openai()
            if self.incremental:
                # a what-if breakpoint needs where the frozen prefix ends (no public accessor)
                sess = getattr(self._comp, "_sessions", {}).get("s")
                self._frozen = len(sess.frozen) if sess is not None else 0
        self._last = out
        return out

    def check(self) -> None:
        """The verbatim proof of the last compaction (outside the timed part)."""
        if self._res is not None:
            self._res.verify()

    def frozen_count(self) -> int | None:
        return self._frozen if self.incremental else None

    def finish(self) -> None:
        for k in self.stats:
            self.stats[k] += self._comp.stats.get(k, 0)

    def note(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        every = f"; what-if: compactor run on every {self.every}th call only" if self.every > 1 else ""
        return (
            f"Compactor(incremental={self.incremental}{opts}, store='memory', deadline=None), every other "
            f"option at its default (ratio=0.5, keep_last_turns=2 unless given); scoring {self.scoring}{every}; "
            f"{self.stats}"
        )


class Passthrough:
    name = "none"

    def __call__(self, msgs: Messages) -> Messages:
        return msgs

    def note(self) -> str:
        return "the messages as the model saw them"


# -- replay ----------------------------------------------------------------------------------


@dataclass
class Tally:
    sessions: int = 0
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    oa_cost: float = 0.0
    an_cost: float = 0.0
    an_fbp_cost: float = 0.0
    oa_cached: int = 0
    an_read: int = 0
    an_write: int = 0
    ev_n: int = 0
    ev_kept: int = 0
    ev_old_n: int = 0
    ev_old_kept: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    by_source: dict[str, list[int]] = field(default_factory=dict)
    lines_ok: int = 0
    lines_whole: int = 0
    lines: int = 0
    seconds: float = 0.0
    errors: int = 0
    changed_msgs: int = 0
    msgs: int = 0
    compared: int = 0
    rewrites: int = 0
    first_rewritten: dict[str, int] = field(default_factory=dict)
    busted_tokens: int = 0
    per_session: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self, base: Tally | None) -> dict[str, Any]:
        n = max(self.sessions, 1)

        def share(a: float, b: float) -> float | None:
            return round(a / b, 4) if b else None

        out: dict[str, Any] = {
            "sessions": self.sessions,
            "calls": self.calls,
            "input_tokens": self.tokens_in,
            "sent_tokens": self.tokens_out,
            "reduction": round(1 - self.tokens_out / max(self.tokens_in, 1), 4),
            "openai": {
                "cost_per_session_usd": round(self.oa_cost / n, 6),
                "vs_none": share(self.oa_cost, base.oa_cost) if base else None,
                "cached_share": share(self.oa_cached, self.tokens_out),
            },
            "anthropic": {
                "cost_per_session_usd": round(self.an_cost / n, 6),
                "vs_none": share(self.an_cost, base.an_cost) if base else None,
                "read_share": share(self.an_read, self.tokens_out),
                "write_share": share(self.an_write, self.tokens_out),
            },
            "action_evidence": {
                "kept": share(self.ev_kept, self.ev_n),
                "items": self.ev_n,
                "kept_old": share(self.ev_old_kept, self.ev_old_n),
                "items_old": self.ev_old_n,
                "by_kind": {
                    k: {"kept": share(v[0], v[1]), "items": v[1]} for k, v in sorted(self.by_kind.items())
                },
                "by_source": {
                    k: {"kept": share(v[0], v[1]), "items": v[1]} for k, v in sorted(self.by_source.items())
                },
            },
            "verbatim": {
                "lines": share(self.lines_ok, self.lines),
                "whole_lines": share(self.lines_whole, self.lines),
                "output_lines": self.lines,
            },
            "messages_changed": share(self.changed_msgs, self.msgs),
            "prefix_rewrites": {
                "calls": share(self.rewrites, self.compared),
                "first_rewritten": dict(sorted(self.first_rewritten.items())),
                "busted_tokens_per_call": round(self.busted_tokens / self.compared, 1)
                if self.compared
                else None,
            },
            "tokens_per_s": round(self.tokens_in / self.seconds, 1) if self.seconds > 0 else None,
            "errors": self.errors,
            "per_session": self.per_session,
        }
        if self.an_fbp_cost:
            out["anthropic_frozen_breakpoint"] = {
                "cost_per_session_usd": round(self.an_fbp_cost / n, 6),
                "vs_none": share(self.an_fbp_cost, base.an_cost) if base else None,
            }
        return out


@dataclass
class Prepared:
    """What every method's replay of one session shares: its evidence and input token counts."""

    session: Session
    evidence: list[Evidence]
    base_tokens: list[int]


def prepare(sess: Session, ser: Serializer) -> Prepared:
    ev = [call_evidence(sess.messages[:a], sess.actions[a]) for a in sess.calls]
    base = [sum(len(t) for _, t, _ in ser.segments(sess.messages[:a])) for a in sess.calls]
    return Prepared(sess, ev, base)


def _frozen_breakpoint(
    segs: list[tuple[bytes, list[int], str]], frozen: int | None, bps: list[int]
) -> list[int]:
    """The planner's breakpoints plus one where the frozen prefix ends (a what-if, <= 4 in all)."""
    if not frozen or len(set(bps) | {frozen - 1}) > 4:
        return bps
    if sum(len(t) for _, t, _ in segs[:frozen]) < 1024:  # Anthropic's minimum cacheable prefix
        return bps
    return [*bps, frozen - 1]


def replay(prep: Prepared, method: Any, ser: Serializer, tally: Tally) -> None:
    session = prep.session
    ledger = CacheLedger()
    alt = CacheLedger() if getattr(method, "frozen_count", lambda: None)() is not None else None
    task_i = _first_user(session.messages)
    if hasattr(method, "start"):
        method.start(session.name)
    prev: Messages | None = None
    prev_segs: list[tuple[bytes, list[int], str]] = []
    for k, a in enumerate(session.calls):
        ctx = session.messages[:a]
        t0 = time.perf_counter()
        try:
            out = method(ctx)
        except Exception as exc:  # a peer's failure is counted, the call goes out unchanged
            tally.errors += 1
            print(f"  {method.name} failed on {session.name} call {k}: {exc!r}", file=sys.stderr)
            out = ctx
        tally.seconds += time.perf_counter() - t0
        if hasattr(method, "check"):
            method.check()
        if len(out) != len(ctx):
            raise SystemExit(f"{method.name} changed the number of messages ({len(ctx)} -> {len(out)})")
        segs = ser.segments(out)
        bps = anthropic_breakpoints(out)
        ledger.add(segs, bps)
        if alt is not None:
            alt.add(segs, _frozen_breakpoint(segs, method.frozen_count(), bps))
        tally.tokens_out += sum(len(t) for _, t, _ in segs)
        tally.tokens_in += prep.base_tokens[k]
        # which message sent in the previous call did this call rewrite first (a cache bust)?
        if prev is not None:
            tally.compared += 1
            i = next((i for i, (x, y) in enumerate(zip(prev, out, strict=False)) if x != y), None)
            if i is not None:
                tally.rewrites += 1
                kind = "task message" if i == task_i else f"{prev[i]['role']} message"
                tally.first_rewritten[kind] = tally.first_rewritten.get(kind, 0) + 1
                tally.busted_tokens += sum(len(t) for _, t, _ in prev_segs[i:])
        prev, prev_segs = out, segs
        # action evidence: still anywhere in the compacted context?
        context_text = _context_text(out)
        for _value, kind, match, source in prep.evidence[k].items:
            kept = match(context_text)
            tally.ev_n += 1
            tally.ev_kept += kept
            for key, table in ((kind, tally.by_kind), (source, tally.by_source)):
                slot = table.setdefault(key, [0, 0])
                slot[0] += kept
                slot[1] += 1
            if source != "latest":
                tally.ev_old_n += 1
                tally.ev_old_kept += kept
        for src, dst in zip(ctx, out, strict=True):
            s, d = _text(src), _text(dst)
            tally.msgs += 1
            tally.changed_msgs += s != d
            ok, whole, n = _verbatim_cached(s, d)
            tally.lines_ok += ok
            tally.lines_whole += whole
            tally.lines += n
    if hasattr(method, "finish"):
        method.finish()
    c = costs(ledger)
    tally.sessions += 1
    tally.calls += ledger.calls
    tally.oa_cost += c["openai"]
    tally.an_cost += c["anthropic"]
    if alt is not None:
        tally.an_fbp_cost += costs(alt)["anthropic"]
    tally.oa_cached += ledger.oa_cached
    tally.an_read += ledger.an_read
    tally.an_write += ledger.an_write
    tally.per_session[session.name] = {
        "calls": ledger.calls,
        "sent_tokens": ledger.tokens,
        "openai_usd": round(c["openai"], 6),
        "anthropic_usd": round(c["anthropic"], 6),
    }


_VERBATIM_CACHE: dict[tuple[str, str], tuple[int, int, int]] = {}


def _verbatim_cached(src: str, dst: str) -> tuple[int, int, int]:
    if src == dst:
        n = sum(1 for ln in src.splitlines() if ln.strip())
        return n, n, n
    key = (src, dst)
    got = _VERBATIM_CACHE.get(key)
    if got is None:
        got = _VERBATIM_CACHE[key] = verbatim_lines(src, dst)
    return got


def build_methods(names: Sequence[str]) -> tuple[dict[str, Any], dict[str, str], Any]:
    """Method objects by name, why any could not be built, and the embedder tokenlean uses."""
    from session_peers import PEERS, load_peer

    methods: dict[str, Any] = {}
    missing: dict[str, str] = {}
    embedder: Any = None
    if any(n.startswith("tokenlean-") for n in names):
        try:
            from tokenlean.embeddings import SentenceTransformerEmbedder

            embedder = SentenceTransformerEmbedder(cache_size=200_000)
            embedder.embed(["warm-up"])  # loading the model is not charged to any session
        except Exception as exc:  # no embeddings extra: tokenlean's auto mode scores lexically
            print(f"embeddings unavailable ({exc}); tokenlean scores lexically", file=sys.stderr)
            embedder = None
    for name in names:
        if name == "none":
            methods[name] = Passthrough()
        elif name in ("tokenlean-naive", "tokenlean-incremental"):
            methods[name] = TokenleanMethod(name, name == "tokenlean-incremental", embedder)
        elif name in PEERS:
            peer, why = load_peer(name)
            if peer is None:
                missing[name] = why or "unavailable"
                continue
            try:  # a peer's first call sets its pipeline up: not charged to the sessions
                peer([{"role": "system", "content": "warm-up"}, {"role": "user", "content": "hi"}])
            except Exception as exc:
                missing[name] = f"failed on a warm-up call: {exc!r}"
                continue
            methods[name] = peer
        else:
            raise SystemExit(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return methods, missing, embedder


# -- tuning (tune half only) and what-ifs ---------------------------------------------------------

TUNE_GRID = [{"ratio": r, "keep_last_turns": k} for r in (0.3, 0.5, 0.7) for k in (1, 2, 3)]
TUNE_RULE = (
    "on the tune half only: among settings that keep >= 95% of action evidence and are verbatim, the "
    "lowest sum of the two cost ratios to no compaction (gpt-4o + claude-sonnet-4-5); grid ratio in "
    "{0.3, 0.5, 0.7} x keep_last_turns in {1, 2, 3}"
)
EVERY_GRID = (2, 4, 8)


def _score(summary: dict[str, Any], anthropic_key: str = "anthropic") -> float:
    return float(summary["openai"]["vs_none"] or 9) + float(summary[anthropic_key]["vs_none"] or 9)


def tune_and_whatif(
    prepared: dict[str, list[Prepared]],
    base: dict[str, Tally],
    embedder: Any,
    ser: Serializer,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The tuned tokenlean row, the tuning record, and the batch-decision what-if."""
    grid: dict[str, Any] = {}
    best: tuple[float, dict[str, Any], Tally] | None = None
    for opts in TUNE_GRID:
        label = ", ".join(f"{k}={v}" for k, v in opts.items())
        t = Tally()
        m = TokenleanMethod("tokenlean-incremental-tuned", True, embedder, **opts)
        for prep in prepared["tune"]:
            replay(prep, m, ser, t)
        s = t.summary(base["tune"])
        ok = (s["action_evidence"]["kept"] or 0) >= 0.95 and s["verbatim"]["lines"] == 1.0
        grid[label] = {
            "openai_vs_none": s["openai"]["vs_none"],
            "anthropic_vs_none": s["anthropic"]["vs_none"],
            "action_evidence_kept": s["action_evidence"]["kept"],
            "eligible": ok,
        }
        print(f"[tune grid] {label:36s} {grid[label]}", file=sys.stderr, flush=True)
        if ok and (best is None or _score(s) < best[0]):
            best = (_score(s), opts, t)
    tuning = {"rule": TUNE_RULE, "grid": grid, "chosen": None}
    tuned: dict[str, Any] = {}
    if best is not None:
        _, opts, tune_tally = best
        tuning["chosen"] = opts
        m = TokenleanMethod("tokenlean-incremental-tuned", True, embedder, **opts)
        rep = Tally()
        for prep in prepared["report"]:
            replay(prep, m, ser, rep)
        tuned = {
            "tune": tune_tally.summary(base["tune"]),
            "report": rep.summary(base["report"]),
            "note": m.note() + f"; setting chosen {TUNE_RULE}",
        }
    # what-if: decisions in batches (the compactor runs every K calls), K chosen on the tune half
    every: dict[str, Any] = {"tune_grid": {}}
    best_k: tuple[float, int, Tally] | None = None
    for k in EVERY_GRID:
        t = Tally()
        m = TokenleanMethod(f"every-{k}", True, embedder, every=k)
        for prep in prepared["tune"]:
            replay(prep, m, ser, t)
        s = t.summary(base["tune"])
        every["tune_grid"][str(k)] = {
            "openai_vs_none": s["openai"]["vs_none"],
            "anthropic_vs_none": s["anthropic"]["vs_none"],
            "anthropic_frozen_breakpoint_vs_none": s["anthropic_frozen_breakpoint"]["vs_none"],
            "action_evidence_kept": s["action_evidence"]["kept"],
        }
        sc = _score(s, "anthropic_frozen_breakpoint")
        if best_k is None or sc < best_k[0]:
            best_k = (sc, k, t)
    assert best_k is not None
    _, k, tune_tally = best_k
    m = TokenleanMethod(f"every-{k}", True, embedder, every=k)
    rep = Tally()
    for prep in prepared["report"]:
        replay(prep, m, ser, rep)
    every.update(
        {
            "what": "not tokenlean behaviour: tokenlean-incremental at its defaults, run on every K-th call only "
            "(the calls between send the last compacted prefix + the new messages as they are); "
            "K chosen on the tune half by the lowest gpt-4o + claude (frozen-prefix breakpoint) cost ratios",
            "chosen_k": k,
            "tune": _brief(tune_tally.summary(base["tune"])),
            "report": _brief(rep.summary(base["report"])),
        }
    )
    return tuned, tuning, every


def _add_by_format(methods: dict[str, Any], tool_calling: set[str]) -> None:
    """Cost ratios to no compaction, split by how the trajectory returns observations."""
    base = methods.get("none")
    if not base or "unavailable" in base:
        return
    for res in methods.values():
        for part in ("tune", "report"):
            if part not in res:
                continue
            groups: dict[str, dict[str, Any]] = {}
            for name, row in res[part]["per_session"].items():
                key = "tool-role observations" if name in tool_calling else "user-role observations"
                ref = base[part]["per_session"][name]
                g = groups.setdefault(key, {"sessions": 0, "o": 0.0, "a": 0.0, "bo": 0.0, "ba": 0.0})
                g["sessions"] += 1
                g["o"] += row["openai_usd"]
                g["a"] += row["anthropic_usd"]
                g["bo"] += ref["openai_usd"]
                g["ba"] += ref["anthropic_usd"]
            res[part]["by_format"] = {
                k: {
                    "sessions": g["sessions"],
                    "openai_vs_none": round(g["o"] / g["bo"], 4) if g["bo"] else None,
                    "anthropic_vs_none": round(g["a"] / g["ba"], 4) if g["ba"] else None,
                }
                for k, g in sorted(groups.items())
            }


def _brief(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "openai_vs_none": s["openai"]["vs_none"],
        "anthropic_vs_none": s["anthropic"]["vs_none"],
        "anthropic_frozen_breakpoint_vs_none": (s.get("anthropic_frozen_breakpoint") or {}).get("vs_none"),
        "action_evidence_kept": s["action_evidence"]["kept"],
        "reduction": s["reduction"],
    }


def source_fingerprint() -> dict[str, Any]:
    """Which tokenlean code produced the figures (the compaction package may change under them)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    pkg = root / "core" / "tokenlean" / "compaction"
    h = hashlib.sha256()
    for f in sorted(pkg.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    out: dict[str, Any] = {"compaction_sources_sha256": h.hexdigest()[:16]}
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "core/tokenlean"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        out["git_head"] = head.stdout.strip() or None
        out["core_uncommitted_changes"] = bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def run(data: Path, names: Sequence[str], quick: bool, tune: bool = True) -> dict[str, Any]:
    sessions = load_sessions(data)
    half = min(HALF, (len(sessions) + 1) // 2)
    split = {"tune": sessions[:half], "report": sessions[half:]}
    if quick:  # the two shortest trajectories of each half
        split = {k: sorted(v, key=lambda s: (len(s.messages), s.name))[:2] for k, v in split.items()}
    methods, missing, embedder = build_methods(names)
    ser = Serializer()
    tallies: dict[str, dict[str, Tally]] = {m: {"tune": Tally(), "report": Tally()} for m in methods}
    prepared: dict[str, list[Prepared]] = {"tune": [], "report": []}
    t_start = time.perf_counter()
    for part in ("tune", "report"):
        for sess in split[part]:
            prep = prepare(sess, ser)
            prepared[part].append(prep)
            for name, method in methods.items():
                t0 = time.perf_counter()
                replay(prep, method, ser, tallies[name][part])
                print(
                    f"[{part}] {sess.name[:60]:60s} {name:36s} {time.perf_counter() - t0:6.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
            ser.reset()
    base = tallies.get("none")
    out_methods: dict[str, Any] = {}
    for name in names:
        if name in missing:
            out_methods[name] = {"unavailable": missing[name]}
            continue
        out_methods[name] = {
            part: tallies[name][part].summary(base[part] if base else None) for part in ("tune", "report")
        }
        if name == "none":
            for part in ("tune", "report"):
                out_methods[name][part]["tokens_per_s"] = None  # nothing runs
        note = getattr(methods[name], "note", None)
        if note is not None:
            out_methods[name]["note"] = note()
    body: dict[str, Any] = {
        "split": {
            "rule": f"{len(sessions)} trajectories sorted by file name: first {half} tune, "
            f"the other {len(sessions) - half} report"
            + (" (--quick: the 2 shortest of each)" if quick else ""),
            "tune": [s.name for s in split["tune"]],
            "report": [s.name for s in split["report"]],
        },
        "prices": {
            "usd_per_million_input_tokens": PRICES,
            "table_as_of": PRICES_TABLE_AS_OF,
            "pinned_on": PRICES_PINNED_ON,
            "shipped_table_agrees": shipped_prices_agree(),
            "openai": f"{OPENAI_MODEL}: prefix >= {OPENAI_MIN_PREFIX} tokens shared with an earlier call of the "
            f"session, in {OPENAI_STEP}-token steps, at the cached price",
            "anthropic": f"{ANTHROPIC_MODEL}: breakpoints from tokenlean.layout.plan_cache_markers; reads up to "
            f"a breakpoint prefix written by an earlier call (lookback {ANTHROPIC_LOOKBACK_BLOCKS} blocks), "
            "writes from there to the last breakpoint at cache_write",
            "tokens": "tiktoken o200k_base via tokenlean.tokens for both providers (Claude's tokenizer is "
            "not public); cache cold at the start of each session, calls within the TTL",
        },
        "methods": out_methods,
    }
    if (
        tune
        and not quick
        and base is not None
        and embedder is not None
        and "tokenlean-incremental" in methods
    ):
        tuned, tuning, every = tune_and_whatif(prepared, base, embedder, ser)
        if tuned:
            body["methods"]["tokenlean-incremental-tuned"] = tuned
        body["tuning"] = tuning
        body["what_if"] = {
            "frozen_prefix_breakpoint": "anthropic_frozen_breakpoint in the tokenlean-incremental rows: the "
            "planner's breakpoints plus one at the end of the compactor's frozen prefix (not what the planner "
            "does today)",
            "compact_every_k_calls": every,
        }
    _add_by_format(
        body["methods"], {s.name for s in sessions if any(m["role"] == "tool" for m in s.messages)}
    )
    body.update(
        {
            "tokenlean_source": source_fingerprint(),
            "quick": quick,
            "runtime_s": round(time.perf_counter() - t_start, 1),
        }
    )
    return {"sessions": body}


# -- output ----------------------------------------------------------------------------------


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{x:.1%}" if pct else f"{x:,.0f}"


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    body = results["sessions"]
    console = Console(width=max(Console().width, 160))
    for part in ("report", "tune"):
        n = len(body["split"][part])
        table = Table(
            title=f"agent sessions, {part} half ({n} SWE-agent trajectories): input cost per session"
        )
        cols = (
            "method",
            "gpt-4o $",
            "vs none",
            "sonnet-4.5 $",
            "vs none",
            "reduction",
            "evidence",
            "ev. old",
        )
        for col in (*cols, "verbatim", "rewrites", "tok/s"):
            table.add_column(col, justify="left" if col == "method" else "right")
        for name, res in body["methods"].items():
            if "unavailable" in res:
                table.add_row(name, res["unavailable"], *[""] * 9)
                continue
            r = res[part]
            table.add_row(
                name,
                f"{r['openai']['cost_per_session_usd']:.4f}",
                _fmt(r["openai"].get("vs_none")),
                f"{r['anthropic']['cost_per_session_usd']:.4f}",
                _fmt(r["anthropic"].get("vs_none")),
                _fmt(r["reduction"]),
                _fmt(r["action_evidence"]["kept"]),
                _fmt(r["action_evidence"]["kept_old"]),
                _fmt(r["verbatim"]["lines"]),
                _fmt(r["prefix_rewrites"]["calls"]),
                _fmt(r["tokens_per_s"], pct=False),
            )
        console.print(table)
    console.print(f"split: {body['split']['rule']}; runtime {body['runtime_s']} s")
    if "tuning" in body:
        console.print(f"tuned setting (tune half only): {body['tuning']['chosen']}")
        inc = body["methods"].get("tokenlean-incremental", {})
        for part in ("report", "tune"):
            fbp = inc.get(part, {}).get("anthropic_frozen_breakpoint", {})
            console.print(
                f"what-if, {part}: tokenlean-incremental with a breakpoint at the frozen prefix: "
                f"sonnet-4.5 {_fmt(fbp.get('vs_none'))} of none"
            )
        ev = body["what_if"]["compact_every_k_calls"]
        console.print(f"what-if: compactor every {ev['chosen_k']} calls: report {ev['report']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="datasets folder (default ../shared/datasets)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    ap.add_argument("--quick", action="store_true", help="2 trajectories per half, no tuning (for tests)")
    ap.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--no-tune", action="store_true", help="skip the tune-half grid and the what-ifs")
    args = ap.parse_args(argv)
    if not traces_found(args.data):
        return 2
    names = args.methods.split(",") if args.methods else list(METHODS)
    results = run(args.data, names, args.quick, tune=not args.no_tune)
    print_table(results)
    write_json(args.json, results)
    return 0


def traces_found(data: Path) -> bool:
    """Whether ``data`` holds the SWE-agent trajectories; says where to point ``--data`` if not."""
    traces = data / TRACES
    if traces.is_dir() and any(traces.glob("*.traj")):
        return True
    print(
        f"dataset not found: {traces}\npass --data DIR (the folder holding agent_traces/swe-agent/)",
        file=sys.stderr,
    )
    return False


if __name__ == "__main__":
    sys.exit(main())
