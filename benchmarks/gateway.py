"""What ``tokenlean serve`` costs: added latency per lever, and requests/s through one worker.

    python benchmarks/gateway.py [--quick] [--json OUT] [--rate RPS] [--requests N]

Three processes, all on 127.0.0.1, so that none shares an interpreter lock with another:

* **Upstream**: the gateway's scripted stub (``tokenlean.gateway.stub``, uvicorn, access log off),
  started as ``python benchmarks/gateway.py --serve-stub PORT``. It answers in well under a
  millisecond (``"echo: "`` + the last user message), so what the gateway adds is not hidden
  behind a model. It also answers ``GET /bench/last?model=M``: the last body it received *from
  the gateway* for that model (direct requests carry ``x-bench-direct``), which is how the
  benchmark checks that layout and compaction really changed what went upstream.
* **Gateway**: ``python -m tokenlean serve --config <tmp toml> --port P``, the CLI as a user runs it
  (uvicorn, one worker). One process, one route per variant, chosen by the request's ``model``:

  * ``off``: no lever (``cache = false``), short body;
  * ``off_history``: the same route with the history body (a ~4 KB pass-through);
  * ``cache``: ``cache = true``, every request unique at temperature 0: the MISS path (lookup,
    upstream, store), short body;
  * ``cache_hit``: ``cache = true``, one short request repeated: answered from the cache;
  * ``layout``: ``layout = true`` (the system prompt's timestamp line moves), history body;
  * ``compaction``: ``compaction = { ratio = 0.3 }``, history body, a fresh session per request
    (``x-tokenlean-session``), so every message is decided: the costly case, not the incremental
    one of a session that only appends;
  * ``rules``: two targets (both the stub) and a ``max_tokens`` rule that picks the second, short
    body;
  * ``all``: cache (miss path) + layout + compaction + rules, history body (the rule is evaluated
    but does not pick: the history is over its 200 tokens).

  The short body is a system prompt with a ``Current time:`` line and one question (~240 bytes);
  the history body adds an earlier exchange around a 40-line worker log (~4 KB, ~1,200 tokens).
  Every request has ``temperature: 0`` and ``max_tokens: 16``; each is unique (a nonce in the last
  user message, a per-request timestamp) except for ``cache_hit``. The default compaction store
  (an SQLite file) is pointed at the run's temporary folder (``TOKENLEAN_OMISSIONS``).
* **Load generator**: this process, ``asyncio`` + ``httpx.AsyncClient`` (keep-alive), one client
  for each side.

**Added latency** (per variant). An open-loop schedule at ``rate`` gateway requests/s: request
pair ``i`` is due at ``t0 + i / rate``, one request straight to the stub and the same body through
the gateway, half a period apart, their order alternating from pair to pair, sent whether or not
earlier ones finished. So the client offers ``2 * rate`` requests/s in all and noise on this shared
machine hits both sides alike. Each latency runs from the request's *scheduled* time to the end of
its body (client lateness and queueing count, for both sides). Reported: each side's p50 and p99
(nearest rank), and *added p50 = p50(gateway) - p50(direct)*, *added p99 = p99(gateway) -
p99(direct)*: a difference of percentiles, not a percentile of paired differences. Warm-up
requests (connections, lazy imports of the levers) are sent first and not counted. The gateway's
and the stub's CPU time per request over the measured window come from ``/proc`` (less
sensitive to other processes than wall time). Target, levers off (the ``off`` variant): added p50 <= 2 ms and
added p99 <= 10 ms; it is reported as measured, pass or fail. The rate is fixed (not tuned to the
result); the JSON states it and its share of the gateway's measured capacity.

**Throughput**. A closed loop, ``concurrency`` clients each sending the next request as soon as the
last one ended, for a fixed duration: non-streaming and streaming (``stream: true``, the SSE read
to ``data: [DONE]``), through the gateway's ``off`` route and, for reference, to the stub alone.
It is run at a few client counts (4 and 16; ``--quick``: 4) and the best requests/s is reported,
each count's run kept under ``by_concurrency``: with httpx on both sides of the gateway (this
client, and the gateway's own upstream client), more connections in flight cost more CPU per
request (encode/httpx#3215), so a single count would under-report. Reported with each run: each
process's CPU use (share of one core). On this 2-core machine the client, the gateway and the stub
share the cores, and the stub-alone reference is bounded by this Python client, not by the stub
(see the client's CPU share), so a number is "on this machine, with its load generator";
``gateway_cpu_ms_per_request`` is the figure that carries to other machines.

Every loop is bounded in count and in time; both subprocesses are terminated (then killed) at
the end, whatever happens. A Python speed reference (``sum(range(100))``, as in ``overhead.py``)
says how busy the CPU was.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _output import write_json

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
CORE = str(ROOT / "core")
if CORE not in sys.path:
    sys.path.insert(0, CORE)

TARGET_P50_MS = 2.0
TARGET_P99_MS = 10.0
MAX_TOKENS = 16
REQUEST_TIMEOUT_S = 10.0  # one request may take this long before it counts as an error
READY_TIMEOUT_S = 60.0  # a subprocess must answer /health within this

#: (full, quick) settings
RATE_RPS = (50.0, 25.0)  # gateway requests/s during the latency phase (the stub gets as many)
REQUESTS = (500, 40)  # measured requests per side and variant
WARMUP = (25, 6)  # unmeasured requests per side and variant, sent first
TP_CONCURRENCY = ((4, 16), (4,))  # closed-loop client counts tried; the best is reported
TP_SECONDS = (5.0, 1.2)


@dataclass(frozen=True)
class Variant:
    name: str
    route: str  # the model name the gateway routes on
    levers: str
    body: str  # "short" or "history"
    unique: bool = True
    session: bool = False  # a fresh x-tokenlean-session per request
    # what the gateway's headers must say, and what must have happened upstream
    cache: str = "bypass"
    target: str = "stub"
    saved: bool = False  # x-tokenlean-tokens-saved > 0 (compaction removed tokens, or a hit)
    upstream_changed: bool = False


VARIANTS = (
    Variant("off", "off", "none", "short"),
    Variant("off_history", "off", "none", "history"),
    Variant("cache", "cache", "cache (miss path)", "short", cache="miss"),
    Variant(
        "cache_hit", "cache", "cache (hit)", "short", unique=False, cache="hit", target="cache", saved=True,
    ),
    Variant("layout", "layout", "layout", "history", upstream_changed=True),
    Variant(
        "compaction", "compaction", "compaction ratio 0.3", "history", session=True, saved=True,
        upstream_changed=True,
    ),
    Variant("rules", "rules", "rules (2 targets)", "short", target="stub_b"),
    Variant(
        "all", "all", "cache miss + layout + compaction + rules", "history", session=True,
        cache="miss", saved=True, upstream_changed=True,
    ),
)  # fmt: skip


def config_toml(stub_base_url: str, port: int) -> str:
    """The gateway's config: one route per variant, selected by the request's model name."""
    rule = '[{ target = "stub_b", max_tokens = 200, name = "short question" }]'
    return f"""\
[server]
host = "127.0.0.1"
port = {port}
workers = 1

[upstreams.stub]
base_urls = ["{stub_base_url}"]

[upstreams.stub_b]
base_urls = ["{stub_base_url}"]

[[routes]]
match = "off"
targets = ["stub"]
cache = false

[[routes]]
match = "cache"
targets = ["stub"]
cache = true

[[routes]]
match = "layout"
targets = ["stub"]
cache = false
layout = true

[[routes]]
match = "compaction"
targets = ["stub"]
cache = false
compaction = {{ ratio = 0.3 }}

[[routes]]
match = "rules"
targets = ["stub", "stub_b"]
rules = {rule}
cache = false

[[routes]]
match = "all"
targets = ["stub", "stub_b"]
rules = {rule}
cache = true
layout = true
compaction = {{ ratio = 0.3 }}

[cache]
backend = ":memory:"
"""


# -- request bodies ------------------------------------------------------------------------------

_LOG = "\n".join(
    f"2024-05-0{i % 9 + 1} worker-{i % 7} INFO processed batch {i} with {i * 13 % 97} items "
    f"in {i * 7 % 50} ms; queue depth {i % 11}"
    for i in range(40)
)


def _timestamp(i: int) -> str:
    return f"2025-03-14T09:{(i // 60) % 60:02d}:{i % 60:02d}Z"


def make_body(kind: str, model: str, tag: str, i: int) -> dict[str, Any]:
    """A chat body of the given kind; ``tag`` (and ``i``, the timestamp) make it unique."""
    question = f"Summarise the queue depth trend in one line. [q {tag}]"
    if kind == "short":
        messages = [
            {"role": "system", "content": f"You are a concise assistant.\nCurrent time: {_timestamp(i)}"},
            {"role": "user", "content": f"What is the capital of France? [q {tag}]"},
        ]
    else:
        messages = [
            {
                "role": "system",
                "content": "You are a concise assistant for the ops team.\n"
                f"Current time: {_timestamp(i)}\nAnswer in one sentence.",
            },
            {"role": "user", "content": "Here is the worker log from last night:\n" + _LOG},
            {
                "role": "assistant",
                "content": "The log shows forty batches processed normally; no errors are reported.",
            },
            {"role": "user", "content": "Which worker handled batch 12?"},
            {"role": "assistant", "content": "worker-5 handled batch 12."},
            {"role": "user", "content": "Thanks. " + question},
        ]
    return {"model": model, "temperature": 0, "max_tokens": MAX_TOKENS, "messages": messages}


def _last_user(body: dict[str, Any]) -> str:
    return str([m for m in body["messages"] if m["role"] == "user"][-1]["content"])


# -- the stub upstream (its own process) ---------------------------------------------------------


def serve_stub(port: int) -> None:
    """``--serve-stub PORT``: the gateway's stub upstream, plus ``GET /bench/last?model=M``."""
    import uvicorn
    from starlette.requests import Request as HttpRequest
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tokenlean.gateway.stub import StubState, create_stub_app

    state = StubState()
    state.requests = collections.deque(maxlen=2000)  # type: ignore[assignment]  # bounded log
    app = create_stub_app(state)

    async def last(request: HttpRequest) -> JSONResponse:
        model = request.query_params.get("model")
        for rec in reversed(list(state.requests)):
            body = rec["body"]
            if (
                "x-bench-direct" not in rec["headers"]
                and isinstance(body, dict)
                and body.get("model") == model
            ):
                return JSONResponse(body)
        return JSONResponse(None)

    app.router.routes.append(Route("/bench/last", last, methods=["GET"]))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


# -- subprocesses ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux ``/proc``), None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class Service:
    """A server in its own process: started, polled on ``/health`` until ready, stopped."""

    def __init__(self, name: str, cmd: list[str], port: int, log: Path, env: dict[str, str]) -> None:
        self.name, self.port, self.log = name, port, log
        self.url = f"http://127.0.0.1:{port}"
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode} while starting:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as resp:
                    if resp.status == 200:
                        return
                    last = f"/health answered {resp.status}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT_S}s ({last}):\n{self.log_tail()}")

    def cpu_s(self) -> float | None:
        return proc_cpu_s(self.proc.pid)

    def log_tail(self, chars: int = 3000) -> str:
        self._log_file.flush()
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log_file.close()


def _child_env(tmp: Path) -> dict[str, str]:
    # No TOKENLEAN_* variable of the caller's may override the config file (the environment wins
    # over the file in the gateway): only the omission store's path is set, into the temp folder.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENLEAN_")}
    env["TOKENLEAN_OMISSIONS"] = str(tmp / "omissions.sqlite3")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([CORE, *filter(None, [env.get("PYTHONPATH")])])
    return env


# -- measuring -------------------------------------------------------------------------------------


def percentile_ms(values: list[float], q: float) -> float:
    """The ``q``-quantile (nearest rank) of seconds, in milliseconds."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered) - 1e-9) - 1))
    return ordered[k] * 1000


def _summary(lat: list[float]) -> dict[str, float]:
    if not lat:
        return {
            "p50_ms": float("nan"),
            "p99_ms": float("nan"),
            "mean_ms": float("nan"),
            "max_ms": float("nan"),
        }
    return {
        "p50_ms": percentile_ms(lat, 0.50),
        "p99_ms": percentile_ms(lat, 0.99),
        "mean_ms": sum(lat) / len(lat) * 1000,
        "max_ms": max(lat) * 1000,
    }


def _client(concurrency: int) -> Any:
    import httpx

    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S),
    )


async def open_loop(
    v: Variant, stub_url: str, gw_url: str, *, rate: float, n: int, warmup: int
) -> dict[str, Any]:
    """Direct and gateway requests alternating on one open-loop schedule; see the module docstring."""
    direct_url, gateway_url = f"{stub_url}/v1/chat/completions", f"{gw_url}/v1/chat/completions"
    total = warmup + n
    bodies = [
        make_body(v.body, v.route, f"{v.name}-{i}" if v.unique else v.name, i if v.unique else 0)
        for i in range(total)
    ]
    raws = [json.dumps(b).encode() for b in bodies]
    lat: dict[str, list[float]] = {"direct": [], "gateway": []}
    lag: dict[str, list[float]] = {"direct": [], "gateway": []}
    errors: Counter[str] = Counter()
    samples: list[str] = []
    seen: dict[str, Counter[str]] = {"cache": Counter(), "route": Counter()}
    saved = answers_ok = 0

    async def one(client: Any, side: str, i: int, sched: float, measured: bool) -> None:
        nonlocal saved, answers_ok
        headers = {"content-type": "application/json"}
        if side == "direct":
            headers["x-bench-direct"] = "1"
        if v.session:
            headers["x-tokenlean-session"] = f"{v.name}-{i}"
        started = time.perf_counter()
        try:
            resp = await client.post(
                direct_url if side == "direct" else gateway_url, content=raws[i], headers=headers
            )
            content = resp.content
            done = time.perf_counter()
            if resp.status_code != 200:
                raise RuntimeError(f"HTTP {resp.status_code}: {content[:200]!r}")
            answer = json.loads(content)["choices"][0]["message"]["content"]
        except Exception as exc:
            if measured:
                errors[side] += 1
                if len(samples) < 5:
                    samples.append(f"{side}: {type(exc).__name__}: {exc}"[:300])
            return
        if not measured:
            return
        lat[side].append(done - sched)
        lag[side].append(started - sched)
        # the answer names the question (the stub echoes the last user turn; layout may put the
        # moved timestamp line in front of it)
        ok = (
            isinstance(answer, str) and answer.startswith("echo: ") and answer.endswith(_last_user(bodies[i]))
        )
        if side == "gateway":
            seen["cache"][resp.headers.get("x-tokenlean-cache", "?")] += 1
            seen["route"][resp.headers.get("x-tokenlean-route", "?")] += 1
            saved += int(resp.headers.get("x-tokenlean-tokens-saved", "0") or 0) > 0
            answers_ok += ok
        elif not ok:
            errors["direct_wrong_answer"] += 1

    async with _client(64) as dc, _client(64) as gc:
        clients = {"direct": dc, "gateway": gc}
        for i in range(warmup):  # sequential: connections, the levers' lazy imports, the first miss
            for side in ("direct", "gateway"):
                await one(clients[side], side, i, time.perf_counter(), False)
        stub_cpu0, gw_cpu0 = _CPU["stub"](), _CPU["gateway"]()
        period = 1.0 / rate
        t0 = time.perf_counter() + 0.02
        tasks: list[asyncio.Task[None]] = []
        for k in range(n):
            i = warmup + k
            order = ("gateway", "direct") if k % 2 == 0 else ("direct", "gateway")
            for half, side in enumerate(order):
                sched = t0 + k * period + half * period / 2
                delay = sched - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(clients[side], side, i, sched, True)))
        _, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 5)
        for t in pending:
            t.cancel()
            errors["unfinished"] += 1
        await asyncio.gather(*pending, return_exceptions=True)
        elapsed = time.perf_counter() - t0
        stub_cpu1, gw_cpu1 = _CPU["stub"](), _CPU["gateway"]()
        upstream = await _last_upstream_body(dc, stub_url, v.route)

    direct, gateway = _summary(lat["direct"]), _summary(lat["gateway"])
    # the body sent for the request the stub saw last (layout may prefix its last user turn)
    up_last = _last_user_any(upstream) if upstream else ""
    sent = next((b for b in reversed(bodies) if up_last.endswith(_last_user(b))), None) if up_last else None
    changed = None if upstream is None or sent is None else upstream["messages"] != sent["messages"]
    if v.target == "cache":
        changed = None  # a hit never goes upstream: the last upstream body is the warm-up's miss
    checks = {
        "expected": {
            "cache": v.cache,
            "route": v.target,
            "tokens_saved": v.saved,
            "upstream_changed": v.upstream_changed,
        },
        "cache": dict(seen["cache"]),
        "route": dict(seen["route"]),
        "tokens_saved_requests": saved,
        "answers_ok": answers_ok,
        "upstream_body_changed": changed,
    }
    got = len(lat["gateway"])
    checks["levers_acted"] = (
        got > 0
        and seen["cache"][v.cache] == got
        and seen["route"][v.target] == got
        and (saved == got if v.saved else saved == 0)
        and answers_ok == got
        and (changed is None if v.target == "cache" else changed == v.upstream_changed)
    )
    return {
        "route": v.route,
        "levers": v.levers,
        "body": v.body,
        "body_bytes": len(raws[-1]),
        "requests": n,
        "warmup_requests": warmup,
        "fresh_session_per_request": v.session,
        "window_s": elapsed,
        "errors": {
            "direct": errors["direct"],
            "gateway": errors["gateway"],
            "other": sum(errors.values()) - errors["direct"] - errors["gateway"],
        },
        "error_samples": samples,
        "direct": direct,
        "gateway": gateway,
        "added_p50_ms": gateway["p50_ms"] - direct["p50_ms"],
        "added_p99_ms": gateway["p99_ms"] - direct["p99_ms"],
        "client_send_lag_p99_ms": {s: percentile_ms(x, 0.99) if x else None for s, x in lag.items()},
        "gateway_cpu_ms_per_request": _per_request(gw_cpu0, gw_cpu1, got),
        "stub_cpu_ms_per_request": _per_request(stub_cpu0, stub_cpu1, got + len(lat["direct"])),
        "gateway_cpu_share_of_one_core": None
        if gw_cpu0 is None or gw_cpu1 is None
        else (gw_cpu1 - gw_cpu0) / elapsed,
        "checks": checks,
    }


def _last_user_any(body: dict[str, Any]) -> str:
    try:
        return _last_user(body)
    except (KeyError, IndexError, TypeError):
        return ""


async def _last_upstream_body(client: Any, stub_url: str, model: str) -> dict[str, Any] | None:
    resp = await client.get(f"{stub_url}/bench/last", params={"model": model})
    data = resp.json()
    return data if isinstance(data, dict) else None


def _per_request(cpu0: float | None, cpu1: float | None, count: int) -> float | None:
    if cpu0 is None or cpu1 is None or count == 0:
        return None
    return (cpu1 - cpu0) / count * 1000


#: CPU-seconds probes of the subprocesses, set in ``run`` (None-returning until then).
_CPU: dict[str, Callable[[], float | None]] = {"stub": lambda: None, "gateway": lambda: None}


async def closed_loop(url: str, *, stream: bool, concurrency: int, seconds: float) -> dict[str, Any]:
    """``concurrency`` clients back to back for ``seconds``; requests/s and CPU use."""
    endpoint = f"{url}/v1/chat/completions"
    body = make_body("short", "off", "throughput", 0)
    if stream:
        body["stream"] = True
    raw = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    completed = 0
    errors: Counter[str] = Counter()
    samples: list[str] = []

    async with _client(concurrency) as client:

        async def request() -> None:
            if stream:
                async with client.stream("POST", endpoint, content=raw, headers=headers) as resp:
                    tail = b""
                    async for chunk in resp.aiter_bytes():
                        tail = (tail + chunk)[-64:]
                    if resp.status_code != 200 or not tail.rstrip().endswith(b"data: [DONE]"):
                        raise RuntimeError(f"HTTP {resp.status_code}, stream ended with {tail[-40:]!r}")
            else:
                resp = await client.post(endpoint, content=raw, headers=headers)
                if resp.status_code != 200 or not json.loads(resp.content)["choices"]:
                    raise RuntimeError(f"HTTP {resp.status_code}: {resp.content[:200]!r}")

        async def worker(deadline: float, count: bool) -> None:
            nonlocal completed
            while time.perf_counter() < deadline:
                try:
                    await request()
                except Exception as exc:
                    if count:
                        errors["errors"] += 1
                        if len(samples) < 5:
                            samples.append(f"{type(exc).__name__}: {exc}"[:300])
                    continue
                if count:
                    completed += 1

        warm_until = time.perf_counter() + min(0.5, seconds / 3)
        await asyncio.wait_for(
            asyncio.gather(*(worker(warm_until, False) for _ in range(concurrency))), REQUEST_TIMEOUT_S + 5
        )
        cpu0 = {"stub": _CPU["stub"](), "gateway": _CPU["gateway"](), "client": time.process_time()}
        t0 = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(worker(t0 + seconds, True) for _ in range(concurrency))),
            seconds + REQUEST_TIMEOUT_S + 5,
        )
        elapsed = time.perf_counter() - t0
        cpu1 = {"stub": _CPU["stub"](), "gateway": _CPU["gateway"](), "client": time.process_time()}

    cpu_share = {
        k: (cpu1[k] - cpu0[k]) / elapsed  # type: ignore[operator]
        for k in cpu0
        if cpu0[k] is not None and cpu1[k] is not None
    }
    return {
        "stream": stream,
        "concurrency": concurrency,
        "seconds": elapsed,
        "requests": completed,
        "errors": errors["errors"],
        "error_samples": samples,
        "rps": completed / elapsed,
        "cpu_share_of_one_core": cpu_share,
        "gateway_cpu_ms_per_request": _per_request(cpu0["gateway"], cpu1["gateway"], completed),
    }


def python_speed_ref_us() -> float:
    """µs for ``sum(range(100))`` (best of 5 x 20,000, process CPU time): ~0.7 on an idle core."""
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time_ns()
        for _ in range(20000):
            sum(range(100))
        best = min(best, (time.process_time_ns() - t0) / 20000 / 1000)
    return best


# -- the run ---------------------------------------------------------------------------------------


def run(quick: bool, rate: float | None, n: int | None) -> dict[str, Any]:
    q = 1 if quick else 0
    rate = rate or RATE_RPS[q]
    n = n or REQUESTS[q]
    warmup, concurrency, seconds = WARMUP[q], TP_CONCURRENCY[q], TP_SECONDS[q]
    started = time.perf_counter()
    services: list[Service] = []
    with tempfile.TemporaryDirectory(prefix="tokenlean-gateway-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env = _child_env(tmp)
        try:
            stub_port = free_port()
            stub = Service(
                "stub upstream",
                [sys.executable, str(Path(__file__).resolve()), "--serve-stub", str(stub_port)],
                stub_port,
                tmp / "stub.log",
                env,
            )
            services.append(stub)
            gw_port = free_port()
            cfg = tmp / "gateway.toml"
            cfg.write_text(config_toml(f"{stub.url}/v1", gw_port), encoding="utf-8")
            gateway = Service(
                "gateway",
                [sys.executable, "-m", "tokenlean", "serve", "--config", str(cfg), "--port", str(gw_port)],
                gw_port,
                tmp / "gateway.log",
                env,
            )
            services.append(gateway)
            _CPU["stub"], _CPU["gateway"] = stub.cpu_s, gateway.cpu_s

            runs: dict[str, dict[str, Any]] = {}
            for k in concurrency:
                for target, url in (("stub", stub.url), ("gateway", gateway.url)):
                    for stream in (False, True):
                        key = f"{target}_{'streaming' if stream else 'non_streaming'}"
                        runs.setdefault(key, {})[str(k)] = asyncio.run(
                            closed_loop(url, stream=stream, concurrency=k, seconds=seconds)
                        )
            throughput: dict[str, Any] = {}
            for key, by_k in runs.items():
                best = max(by_k.values(), key=lambda r: r["rps"])
                throughput[key] = {
                    **best,
                    "errors": sum(r["errors"] for r in by_k.values()),
                    "error_samples": [e for r in by_k.values() for e in r["error_samples"]][:5],
                    "by_concurrency": by_k,
                }
            overhead = {
                v.name: asyncio.run(open_loop(v, stub.url, gateway.url, rate=rate, n=n, warmup=warmup))
                for v in VARIANTS
            }
            log_text = gateway.log_tail(100_000)
        finally:
            for s in reversed(services):
                s.close()
            _CPU["stub"] = _CPU["gateway"] = lambda: None

    log_lines = [ln for ln in log_text.splitlines() if ln.strip() and not ln.startswith("tokenlean serve:")]
    problems = [
        ln for ln in log_lines if any(w in ln for w in ("Traceback", "ERROR", "Error", "exception", "failed"))
    ]
    gw_rps = throughput["gateway_non_streaming"]["rps"]
    off = overhead["off"]
    return {
        "benchmark": "gateway",
        "quick": quick,
        "config": {
            "rate_rps": rate,
            "direct_rate_rps": rate,
            "client_offered_rps": 2 * rate,
            "rate_share_of_gateway_capacity": rate / gw_rps if gw_rps else None,
            "requests_per_side_per_variant": n,
            "warmup_per_side_per_variant": warmup,
            "throughput_concurrency": list(concurrency),
            "throughput_seconds": seconds,
            "gateway_workers": 1,
            "max_tokens": MAX_TOKENS,
            "variants": [v.name for v in VARIANTS],
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "targets": {"added_p50_ms_max": TARGET_P50_MS, "added_p99_ms_max": TARGET_P99_MS, "variant": "off"},
        "python_speed_ref_us": python_speed_ref_us(),
        "overhead": overhead,
        "throughput": throughput,
        "gateway_log": {"lines": len(log_lines), "problem_lines": len(problems), "tail": log_lines[-20:]},
        "pass": {
            f"off_added_p50_le_{TARGET_P50_MS:g}ms": off["added_p50_ms"] <= TARGET_P50_MS,
            f"off_added_p99_le_{TARGET_P99_MS:g}ms": off["added_p99_ms"] <= TARGET_P99_MS,
        },
        "wall_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="unused (this benchmark needs no dataset)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="fewer requests (for CI smoke tests)")
    parser.add_argument("--rate", type=float, help="gateway requests/s in the latency phase")
    parser.add_argument("--requests", type=int, help="measured requests per side and variant")
    parser.add_argument("--serve-stub", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_stub is not None:
        serve_stub(args.serve_stub)
        return 0
    result = run(args.quick, args.rate, args.requests)
    _print(result)
    write_json(args.json, result)
    return 0


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(140, Console().width))
    cfg = result["config"]
    table = Table(
        title=f"Gateway added latency, open loop at {cfg['rate_rps']:g} gateway req/s "
        f"(+ {cfg['direct_rate_rps']:g}/s direct, interleaved), {cfg['requests_per_side_per_variant']} "
        "requests per side; added = p(gateway) - p(direct)"
    )
    for col in (
        "variant",
        "levers",
        "body",
        "direct p50",
        "direct p99",
        "gateway p50",
        "gateway p99",
        "added p50",
        "added p99",
        "gw CPU/req",
        "errors",
        "levers acted",
    ):
        table.add_column(col, justify="left" if col in ("variant", "levers", "body") else "right")
    for name, o in result["overhead"].items():
        cpu = o["gateway_cpu_ms_per_request"]
        table.add_row(
            name,
            o["levers"],
            f"{o['body']} ({o['body_bytes']} B)",
            f"{o['direct']['p50_ms']:.2f} ms",
            f"{o['direct']['p99_ms']:.2f} ms",
            f"{o['gateway']['p50_ms']:.2f} ms",
            f"{o['gateway']['p99_ms']:.2f} ms",
            f"{o['added_p50_ms']:+.2f} ms",
            f"{o['added_p99_ms']:+.2f} ms",
            "-" if cpu is None else f"{cpu:.2f} ms",
            str(sum(o["errors"].values())),
            "yes" if o["checks"]["levers_acted"] else "[red]NO[/red]",
        )
    console.print(table)

    tp = Table(
        title="Throughput, closed loop (one gateway worker, levers off; this machine, shared with client and "
        "stub; bold: the best client count, reported as req/s)"
    )
    for col in (
        "target",
        "mode",
        "clients",
        "requests",
        "req/s",
        "gateway CPU",
        "stub CPU",
        "client CPU",
        "gw CPU/req",
        "errors",
    ):
        tp.add_column(col, justify="left" if col in ("target", "mode") else "right")
    for key, entry in result["throughput"].items():
        target, _, mode = key.partition("_")
        for k, t in entry["by_concurrency"].items():
            share = t["cpu_share_of_one_core"]
            cpu = t["gateway_cpu_ms_per_request"]
            best = int(k) == entry["concurrency"]
            tp.add_row(
                target,
                mode.replace("_", "-"),
                k,
                str(t["requests"]),
                f"[bold]{t['rps']:.0f}[/bold]" if best else f"{t['rps']:.0f}",
                f"{share.get('gateway', 0):.0%}" if target == "gateway" else "-",
                f"{share.get('stub', 0):.0%}",
                f"{share.get('client', 0):.0%}",
                "-" if cpu is None or target != "gateway" else f"{cpu:.2f} ms",
                str(t["errors"]),
            )
    console.print(tp)
    share = cfg["rate_share_of_gateway_capacity"]
    console.print(
        f"rate {cfg['rate_rps']:g} req/s = {share:.0%} of the gateway's measured non-streaming capacity; "
        f"{cfg['cpu_count']} CPUs; CPU reference sum(range(100)): {result['python_speed_ref_us']:.2f} µs "
        "(idle core: ~0.7)"
    )
    glog = result["gateway_log"]
    if glog["lines"]:
        console.print(
            f"[yellow]gateway logged {glog['lines']} lines ({glog['problem_lines']} errors/failures); "
            "last:[/yellow]"
        )
        for line in result["gateway_log"]["tail"][-5:]:
            console.print(f"  {line}")
    console.print(
        "targets (variant off): "
        + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in result["pass"].items())
    )


if __name__ == "__main__":
    raise SystemExit(main())
