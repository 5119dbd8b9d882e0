"""Load: an open-loop request rate through the LangChain middleware stack, against a local stub upstream.

    python benchmarks/reliability_load.py [--duration S] [--rate RPS] [--seed N]

Issue 15 asks for the tokenlean stack's errors and added latency under a steady, realistic load.
What runs, all on 127.0.0.1, every loop bounded in count and in time:

* **Upstream**: a stub OpenAI-compatible server in its own process (so it shares no interpreter
  lock with the client being measured) that answers ``POST /v1/chat/completions`` after a fixed
  service delay (``SERVICE_MS``, an ``asyncio`` sleep: the stub is never the bottleneck). Its answer
  is ``"ack <ref>"`` for the ``[ref …]`` tag in the last user turn, so the client checks every
  answer (a cache hit included) against the question it asked; it counts requests and the ones
  whose body carries a compaction marker.
* **Client**: two agents built with ``langchain.agents.create_agent`` on a real
  ``langchain_openai.ChatOpenAI`` (``max_retries=0``, so no error is retried away): *bare* (no
  tokenlean) and *stack* (``TokenleanPromptLayoutMiddleware`` + ``TokenleanCompactionMiddleware`` +
  ``TokenleanCacheMiddleware``, the README's order, with ``TokenleanCallbackHandler`` metering
  every call). Both go through ``agent.ainvoke``, so the difference is tokenlean alone. The cache
  is the embedded one (SQLite file in a temporary directory + faiss; semantic tier on the static
  embedder when available), compaction keeps omissions in memory (``store="memory"``).
* **Saturation**: first a short closed-loop burst (``SAT_CONCURRENCY`` requests always in flight)
  through the stack measures its capacity on this machine. Then the open-loop run offers
  ``rate`` requests/s in all (default: half that capacity), alternating bare and stack on one
  schedule (request ``i`` at ``t0 + i / rate``, whether or not earlier ones finished), so both arms
  see the same machine at the same moments and each gets ``rate / 2``.
* **Latency** is taken from each request's *scheduled* time (queueing in the client shows) and,
  separately, from its actual start. *Added latency* is stack minus bare, at p50 and at p99.
* **Errors**: an exception, a timeout (``REQUEST_TIMEOUT_S``), a request not finished within the
  drain time, or a wrong answer. They must be 0.

Request mix (``MIX``): 70 % distinct short questions (cache misses: the upstream is hit, which is
the overhead case), 15 % repeats of ten FAQ questions (cache hits after the first of each), 15 %
distinct long tool histories (a 60-line log read by a tool: compaction removes text).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
CORE = str(ROOT / "core")
if CORE not in sys.path:
    sys.path.insert(0, CORE)

SERVICE_MS = 20.0  # the stub's service time per completion: a fast upstream, so overhead shows
REQUEST_TIMEOUT_S = 10.0  # one request may take this long before it counts as an error
SAT_CONCURRENCY = 16  # requests in flight during the closed-loop capacity burst
LOAD_FRACTION = 0.5  # default offered rate, as a share of the measured capacity
MARKER_PROBE = "tokens omitted"  # what the stub looks for to count compacted requests
MIX = (
    "70% distinct short questions (cache misses), 15% repeats of 10 FAQ questions (cache hits "
    "after the first of each), 15% distinct 60-line tool histories (compacted); bare and stack "
    "alternate on one open-loop schedule"
)

# -- the stub upstream (its own process) ---------------------------------------------------------

_REF = re.compile(r"\[ref ([\w-]+)\]")


def _last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message of an OpenAI chat request body."""
    for msg in reversed(body.get("messages") or []):
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _completion(body: dict[str, Any]) -> dict[str, Any]:
    """A small, deterministic chat completion (with usage) that names the question's ref tag."""
    found = _REF.search(_last_user_text(body))
    text = f"ack {found.group(1) if found else 'none'}"
    return {
        "id": "cmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": "stub-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


async def _serve_stub(service_s: float, lifetime_s: float) -> None:
    """Serve HTTP/1.1 keep-alive on a free port; print it; stop on stdin EOF or after ``lifetime_s``."""
    stats = {"requests": 0, "compacted": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                raw = await reader.readexactly(int(headers.get("content-length") or 0))
                status = "200 OK"
                if method == "POST" and path.endswith("/chat/completions"):
                    stats["requests"] += 1
                    if MARKER_PROBE.encode() in raw:
                        stats["compacted"] += 1
                    await asyncio.sleep(service_s)
                    payload = json.dumps(_completion(json.loads(raw or b"{}"))).encode()
                elif method == "GET" and path == "/stats":
                    payload = json.dumps(stats).encode()
                else:
                    status, payload = "404 Not Found", b"{}"
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)  # returns at EOF: the parent is gone
    async with server:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stdin_closed, timeout=lifetime_s)
    os._exit(0)  # the executor thread may still block on stdin; nothing else is left to flush


class StubUpstream:
    """The stub server's process: ``base_url`` while it runs, ``stats()`` at any time."""

    def __init__(self, service_ms: float, lifetime_s: float) -> None:
        self.service_ms = service_ms
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--serve-stub",
                str(service_ms / 1000),
                str(lifetime_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the port, once it listens
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"stub upstream did not start (got {line!r})")
        self.port = int(line)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as resp:
            data: dict[str, int] = json.loads(resp.read())
            return data

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


# -- the workload -------------------------------------------------------------------------------

_TOPICS = [
    "invoice", "password", "shipping label", "refund", "API key", "webhook", "export", "backup",
    "two-factor login", "team seat", "billing address", "data retention", "SSO setup", "audit log",
    "rate limit", "mobile app", "dark mode", "CSV import", "calendar sync", "usage report",
]  # fmt: skip
_ASKS = [
    "How do I change the {t} for the {p} workspace?",
    "Why does the {t} fail on {p} since the last update?",
    "Can the {t} be shared with the {p} team without an admin?",
    "Where is the {t} setting hidden in {p}?",
    "What happens to the {t} when the {p} plan is downgraded?",
    "Is there a limit on the {t} in {p}, and who sets it?",
]
_PLACES = [
    "Acme", "Northwind", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell",
    "Cyberdyne", "Soylent", "Wonka", "Gringotts", "Aperture", "Vandelay", "Pied Piper",
]  # fmt: skip
FAQ = [
    "How do I reset my password?",
    "Where can I download my invoices?",
    "How do I cancel my subscription?",
    "How do I add a teammate to my workspace?",
    "Which payment methods do you accept?",
    "How do I turn on two-factor authentication?",
    "Can I change the email address on my account?",
    "How do I export all my data?",
    "Why was my card declined?",
    "How do I delete my account?",
]


@dataclass(slots=True)
class Item:
    """One request: the agent input and the answer the stub must give for it."""

    kind: str  # "distinct" | "repeat" | "history"
    messages: list[Any]
    expected: str


def _history(ref: str, rng: random.Random) -> list[Any]:
    """A tool-using turn with a long log: the question, the call, the log, a reply, a follow-up."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    worker = rng.randrange(60)
    log = "\n".join(
        f"2024-05-01 12:{i // 60:02d}:{i % 60:02d} INFO worker-{i} finished job {i * 7 + rng.randrange(7)}"
        f" in {rng.randrange(20, 900)} ms on node-{rng.randrange(8)}"
        for i in range(60)
    )
    return [
        HumanMessage(f"Which node ran worker-{worker}?"),
        AIMessage("Reading the log.", tool_calls=[{"id": f"c-{ref}", "name": "read_log", "args": {}}]),
        ToolMessage(log, tool_call_id=f"c-{ref}", name="read_log"),
        AIMessage("I have read the log."),
        HumanMessage(f"So which node ran worker-{worker}, and how long did it take? [ref {ref}]"),
    ]


def requests(seed: int, prefix: str) -> Iterator[Item]:
    """Requests in the stated mix, without end (callers bound them); ``prefix`` keeps phases apart."""
    from langchain_core.messages import HumanMessage

    rng = random.Random(seed)
    for i in itertools.count():
        roll = rng.random()
        if roll < 0.15:
            k = rng.randrange(len(FAQ))
            ref = f"faq{k}"
            yield Item("repeat", [HumanMessage(f"{FAQ[k]} [ref {ref}]")], f"ack {ref}")
        elif roll < 0.30:
            ref = f"{prefix}h{i}"
            yield Item("history", _history(ref, rng), f"ack {ref}")
        else:
            ref = f"{prefix}d{i}"
            ask = rng.choice(_ASKS).format(t=rng.choice(_TOPICS), p=rng.choice(_PLACES))
            yield Item("distinct", [HumanMessage(f"{ask} [ref {ref}]")], f"ack {ref}")


def workload(n: int, seed: int, prefix: str) -> list[Item]:
    """The first ``n`` of :func:`requests`."""
    return list(itertools.islice(requests(seed, prefix), n))


# -- the two agents -----------------------------------------------------------------------------


@dataclass
class Arm:
    """One way of sending a request: ``call(messages)`` returns the agent's last message."""

    name: str
    call: Callable[[list[Any]], Awaitable[Any]]
    latencies: list[float] = field(default_factory=list)  # from the scheduled time, seconds
    service: list[float] = field(default_factory=list)  # from the actual start, seconds
    lags: list[float] = field(default_factory=list)  # actual start minus scheduled time
    by_kind: dict[str, list[float]] = field(default_factory=dict)  # latencies per request kind
    errors: list[str] = field(default_factory=list)
    cache_hits: int = 0
    requests: int = 0


def _chat_model(base_url: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=base_url,
        api_key="stub",  # type: ignore[arg-type]
        model="stub-model",
        temperature=0,  # deterministic: the cache may store its answers
        max_retries=0,  # an error must show, not be retried away
        timeout=REQUEST_TIMEOUT_S,
    )


def bare_arm(base_url: str) -> Arm:
    """The agent without tokenlean: the baseline every stack figure is compared with."""
    from langchain.agents import create_agent

    agent = create_agent(_chat_model(base_url), tools=[])

    async def call(messages: list[Any]) -> Any:
        out = await agent.ainvoke({"messages": messages})
        return out["messages"][-1]

    return Arm("bare", call)


@dataclass
class Stack:
    """The tokenlean agent and what the run reads back from it."""

    arm: Arm
    meter: Any
    cache: Any


def stack_arm(base_url: str, cache_file: Path, embedder: Any) -> Stack:
    """The README's stack: layout, compaction, cache (middleware) and metering (callback)."""
    from langchain.agents import create_agent
    from langchain_core.runnables import RunnableConfig

    from langchain_tokenlean import (
        TokenleanCacheMiddleware,
        TokenleanCallbackHandler,
        TokenleanCompactionMiddleware,
        TokenleanPromptLayoutMiddleware,
    )
    from tokenlean.cache import SemanticCache
    from tokenlean.compaction import Compactor
    from tokenlean.metering import Meter, ModelPrice, PriceTable

    cache = SemanticCache(cache_file, semantic=embedder is not None, embedder=embedder)
    compactor = Compactor(
        ratio=0.5,
        incremental=True,
        store="memory",
        mode="auto" if embedder is not None else "lexical",
        embedder=embedder,
    )
    agent = create_agent(
        _chat_model(base_url),
        tools=[],
        middleware=[
            TokenleanPromptLayoutMiddleware(),
            TokenleanCompactionMiddleware(compactor=compactor),
            TokenleanCacheMiddleware(cache),
        ],
    )
    # A list price for the stub model, so metering does its whole job (cost included).
    meter = Meter(
        prices=PriceTable.default().with_price("stub-model", ModelPrice(Decimal("0.15"), Decimal("0.6")))
    )
    handler = TokenleanCallbackHandler(meter)
    seq = itertools.count()

    async def call(messages: list[Any]) -> Any:
        # One conversation per request (its own thread id), as concurrent users would be.
        config: RunnableConfig = {
            "callbacks": [handler],
            "configurable": {"thread_id": f"conv-{next(seq)}"},
        }
        out = await agent.ainvoke({"messages": messages}, config=config)
        return out["messages"][-1]

    return Stack(Arm("stack", call), meter, cache)


async def _one(arm: Arm, item: Item, scheduled: float) -> None:
    """Send one request; record its latencies, or the reason it counts as an error."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    arm.requests += 1
    try:
        msg = await asyncio.wait_for(arm.call(item.messages), timeout=REQUEST_TIMEOUT_S)
    except Exception as exc:  # any failure is an error of the run, reported by kind
        arm.errors.append(f"{item.kind}: {type(exc).__name__}: {exc}"[:300])
        return
    end = loop.time()
    if msg.content != item.expected:
        arm.errors.append(f"{item.kind}: wrong answer {msg.content!r}, expected {item.expected!r}")
        return
    if (getattr(msg, "response_metadata", None) or {}).get("tokenlean_cache"):
        arm.cache_hits += 1
    arm.latencies.append(end - scheduled)
    arm.by_kind.setdefault(item.kind, []).append(end - scheduled)
    arm.service.append(end - start)
    arm.lags.append(start - scheduled)


async def saturation(arm: Arm, items: Iterable[Item], seconds: float) -> float:
    """Completed requests/s with ``SAT_CONCURRENCY`` always in flight (closed loop, bounded)."""
    loop = asyncio.get_running_loop()
    queue = iter(items)
    done = 0
    deadline = loop.time() + seconds

    async def worker() -> None:
        nonlocal done
        for item in queue:
            if loop.time() >= deadline:
                return
            await _one(arm, item, loop.time())
            done += 1

    t0 = loop.time()
    await asyncio.wait_for(
        asyncio.gather(*(worker() for _ in range(SAT_CONCURRENCY))), seconds + REQUEST_TIMEOUT_S
    )
    return done / (loop.time() - t0)


async def open_loop(
    arms: tuple[Arm, Arm], items: list[Item], rate: float, seed: int, drain_s: float
) -> float:
    """Send each of ``items`` to both arms, ``rate`` requests/s in all; returns the sending time.

    Item ``k`` goes to one arm at ``t0 + 2k / rate`` and to the other ``1 / rate`` later, whether
    or not earlier requests have finished (open loop); which arm goes first is drawn at random, so
    neither always follows the other's request.
    """
    loop = asyncio.get_running_loop()
    rng = random.Random(seed + 1)
    tasks: dict[asyncio.Task[None], Arm] = {}
    t0 = loop.time() + 0.05
    for k, item in enumerate(items):
        first, second = arms if rng.random() < 0.5 else arms[::-1]
        for j, arm in enumerate((first, second)):
            at = t0 + (2 * k + j) / rate
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks[asyncio.create_task(_one(arm, item, at))] = arm
    sent = loop.time() - t0
    _, pending = await asyncio.wait(tasks, timeout=drain_s)
    for task in pending:  # not finished within the drain time: an error of its arm, not a hang
        task.cancel()
        tasks[task].errors.append(f"unfinished {drain_s:.0f} s after the last request was sent")
    if pending:
        await asyncio.wait(pending, timeout=5)
    return sent


def _pct(values: list[float], q: float) -> float | None:
    """The ``q``-quantile in milliseconds (nearest rank), or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return round(ordered[rank] * 1000, 2)


def _summary(values: list[float]) -> dict[str, float | None]:
    return {"p50": _pct(values, 0.50), "p99": _pct(values, 0.99)}


class _LogCount(logging.Handler):
    """Counts WARNING+ records of the ``tokenlean`` loggers while active.

    The stack degrades instead of raising (a failed cache store or a skipped compaction is a log
    line, by design), so a clean run must also be a quiet one: these are reported with the errors.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.samples) < 3:
            self.samples.append(f"{record.name}: {record.getMessage()}"[:300])

    def __enter__(self) -> _LogCount:
        logging.getLogger("tokenlean").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("tokenlean").removeHandler(self)


def _static_embedder() -> Any:
    """The static embedder for the cache's semantic tier and compaction, or None without it."""
    try:
        from tokenlean.embeddings import get_static_embedder

        emb = get_static_embedder()
        emb.embed(["warm up"])
        return emb
    except Exception as exc:  # no embeddings extra: the exact tier and lexical compaction remain
        print(f"load: semantic tier off ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None


async def _run(
    upstream: StubUpstream, work: Path, duration_s: float, rate: float | None, seed: int, embedder: Any
) -> dict[str, Any]:
    base_url = upstream.base_url
    # Warm-up (imports, connection pools, tokenizer, graph compilation) on throw-away agents.
    warm = stack_arm(base_url, work / "warm.db", embedder)
    warm_bare = bare_arm(base_url)
    for item in workload(12, seed + 7, "w"):
        await _one(warm.arm, item, asyncio.get_running_loop().time())
        await _one(warm_bare, item, asyncio.get_running_loop().time())
    sat_s = min(5.0, max(1.0, duration_s / 4))
    sat_stack = stack_arm(base_url, work / "saturation.db", embedder)
    sat_rps = await saturation(sat_stack.arm, itertools.islice(requests(seed + 1, "s"), 100_000), sat_s)
    sat_errors = len(sat_stack.arm.errors)
    offered = rate if rate is not None else LOAD_FRACTION * sat_rps

    stack = stack_arm(base_url, work / "cache.db", embedder)
    bare = bare_arm(base_url)
    pairs = max(1, int(duration_s * offered / 2))
    items = workload(pairs, seed, "m")
    before = await asyncio.to_thread(upstream.stats)
    with _LogCount() as warnings:
        sent = await open_loop((bare, stack.arm), items, offered, seed, drain_s=REQUEST_TIMEOUT_S + 5)
    after = await asyncio.to_thread(upstream.stats)
    metered = stack.meter.ledger.summary()
    if metered.calls != stack.arm.requests:  # every call, hit or miss, must be in the ledger
        stack.arm.errors.append(f"metered {metered.calls} calls for {stack.arm.requests} requests")
    lat = {a.name: _summary(a.latencies) for a in (bare, stack.arm)}
    added: dict[str, float | None] = {}
    for q in ("p50", "p99"):
        s, b = lat["stack"][q], lat["bare"][q]
        added[q] = None if s is None or b is None else round(s - b, 2)
    return {
        "rate_rps": round(offered, 1),
        "rate_basis": (
            "given" if rate is not None else f"{LOAD_FRACTION:.0%} of saturation_rps, both arms together"
        ),
        "rate_per_arm_rps": round(offered / 2, 1),
        "saturation_rps": round(sat_rps, 1),
        "saturation": {
            "what": f"stack alone, closed loop, {SAT_CONCURRENCY} in flight, {sat_s:.1f} s",
            "errors": sat_errors,
        },
        "duration_s": round(sent, 1),
        "requests": {"bare": bare.requests, "stack": stack.arm.requests},
        "errors": {"bare": len(bare.errors), "stack": len(stack.arm.errors)},
        "error_samples": (bare.errors[:3] + stack.arm.errors[:3]) or None,
        "latency_ms": lat,
        "service_latency_ms": {a.name: _summary(a.service) for a in (bare, stack.arm)},
        "start_lag_ms": {a.name: _summary(a.lags) for a in (bare, stack.arm)},
        "added_ms": added,
        "latency_by_kind_ms": {
            a.name: {k: _summary(v) for k, v in sorted(a.by_kind.items())} for a in (bare, stack.arm)
        },
        "cache_hits": stack.arm.cache_hits,
        "metered": {"calls": metered.calls, "cache_hits": metered.cache_hits},
        "tokenlean_warnings": {"count": warnings.count, "samples": warnings.samples or None},
        "kinds": {k: sum(1 for i in items if i.kind == k) for k in ("distinct", "repeat", "history")},
        "semantic_tier": embedder is not None,
        "compacted_requests": after["compacted"] - before["compacted"],
        "upstream": {"service_ms": SERVICE_MS, "requests": after["requests"] - before["requests"]},
    }


def load(duration_s: float, rate: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Run the load benchmark for about ``duration_s`` seconds (plus setup and drain) and report.

    ``rate`` is the offered rate of both arms together (requests/s); by default half the stack's
    capacity measured just before. ``errors`` must be 0 in both arms.
    """
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    t0 = time.monotonic()
    embedder = _static_embedder()
    lifetime = duration_s + REQUEST_TIMEOUT_S * 3 + 120  # the stub stops by itself after this
    upstream = StubUpstream(SERVICE_MS, lifetime)
    try:
        with tempfile.TemporaryDirectory(prefix="tokenlean-load-") as tmp:
            out = asyncio.run(
                asyncio.wait_for(
                    _run(upstream, Path(tmp), duration_s, rate, seed, embedder), timeout=duration_s + 120
                )
            )
    finally:
        upstream.close()
    from langchain_openai import ChatOpenAI

    out["mix"] = MIX
    out["client"] = f"{ChatOpenAI.__module__}.{ChatOpenAI.__name__} via langchain.agents.create_agent"
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of open-loop load")
    ap.add_argument("--rate", type=float, help="requests/s of both arms together (default: half capacity)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    out = load(args.duration, args.rate, args.seed)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-stub":
        asyncio.run(_serve_stub(float(sys.argv[2]), float(sys.argv[3])))
    else:
        main()
