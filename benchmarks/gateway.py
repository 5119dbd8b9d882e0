"""What ``tokenlean serve`` costs: added latency per lever, and requests/s through one worker; and
the same measured through peer proxies from PyPI (LiteLLM, Headroom), side by side.

    python benchmarks/gateway.py [--quick] [--json OUT] [--rate RPS] [--requests N] [--data DIR]
                                 [--no-peers]

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

**Peers** (the ``peers`` block; ``--no-peers`` skips it). Each peer is the package from PyPI
(pinned in ``requirements/bench.txt``), started by its own CLI in its own process on 127.0.0.1 in
front of the same stub, never re-implemented: the **LiteLLM proxy** (``litellm --config``, one
``model_list`` entry ``openai/gpt-4o`` at the stub) and **Headroom's proxy** (``headroom proxy
--openai-api-url <stub>``) at its default ``--mode cache`` and, for the replay only, at
``--mode token`` (its setting for the most compression; full run only). What each needs to run
here is set and nothing else (``Peer.setup``, in the JSON): LiteLLM refuses to start without a
master key; Headroom's default limiter (60 requests/min) would answer this traffic 429, so it runs
with ``--no-rate-limit``. Offline: every peer's telemetry, update check, price-map fetch and model
download is switched off by its own settings (``LITELLM_LOCAL_MODEL_COST_MAP``, LiteLLM's
``telemetry: false`` and ``LITELLM_TELEMETRY_DISABLED``, ``HEADROOM_OFFLINE=1`` — Headroom's air-gap
switch —, ``HEADROOM_TELEMETRY=off``, ``--no-subscription-tracking``, ``HF_HUB_OFFLINE``), each runs
with its own ``HOME`` in the run's temporary folder, and ``HTTP(S)_PROXY`` points at a closed
loopback port (``NO_PROXY`` = 127.0.0.1) so that a client that still dials out fails at once. So
Headroom's ML text compressor (Kompress) works only where its model is already in the Hugging Face
cache; its log digest (``log.kompress_available``, the transforms it logged) says what it did. A
peer that is not installed or does not start is listed with ``not_run`` and the reason (the error
line of its output). All peers start side by side, after the tokenlean phases above.

* *Added latency*: the open-loop method above (same pairs, same percentiles) at ``PEER_RATE_RPS``
  (20/s; ``--quick`` 10/s, below every peer's capacity on this machine: LiteLLM's one worker
  spends ~20 ms of CPU per request) with the short and the history body and model ``gpt-4o``,
  through each peer and, in the same run, through tokenlean's route for that model (no lever, as
  ``off``); ``vs_tokenlean`` is each figure over tokenlean's. Each system's capacity (closed loop,
  4 clients, a unique body per request so no proxy cache answers) gives the rate's share of it.
  ``upstream_fields_changed`` lists the body fields a proxy added/dropped/rewrote on the way.
* *SWE-agent replay* (needs ``--data``, default ``../shared/datasets``; without it this part is
  ``not_run`` with the reason and the rest runs): the trajectories are read with
  ``compaction_sessions.load_sessions`` (``--quick``: the 3 smallest, ``profile_accuracy.trace_files``)
  and each call k sends ``history[:a_k]`` (the message list as of that call), in order, through:
  the stub itself (``direct``), tokenlean (route ``replay-lean``: cache + layout + compaction ratio
  0.3, the example config's route; one ``x-tokenlean-session`` per trajectory, so compaction is
  incremental), and each peer. One call at a time; the stub's numbered log (``/bench/log``) gives
  exactly what reached it for each call. Tokens sent upstream: ``tokenlean.tokens.count_messages``
  (tiktoken o200k_base, tool schemas included). Effective cost under provider prompt caching:
  ``compaction_sessions.CacheLedger`` per trajectory (cache cold at its start): OpenAI (gpt-4o)
  bills the longest common token prefix with an earlier call (>= 1,024 tokens, 128-token steps) at
  the cached price; Anthropic (claude-sonnet-4-5) reads/writes at message-boundary breakpoints
  placed by tokenlean's layout planner, the same rule for every system. Ratios are to ``direct``.

Every loop is bounded in count and in time; every subprocess is terminated (then killed) at the
end, whatever happens. A Python speed reference (``sum(range(100))``, as in ``overhead.py``) says
how busy the CPU was.
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
from dataclasses import field as dataclass_field
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

# peers (see "Peers" in the module docstring)
PEER_MODEL = "gpt-4o"  # the body's model through every system (a model each peer knows and prices)
REPLAY_ROUTE = "replay-lean"  # tokenlean's route for the replay (cache + layout + compaction)
PEER_RATE_RPS = (20.0, 10.0)  # below every peer's capacity on this machine (LiteLLM: ~50 req/s)
PEER_REQUESTS = (200, 20)
PEER_WARMUP = (20, 4)
PEER_TP_CONCURRENCY = 4
PEER_TP_SECONDS = (3.0, 1.0)
PEER_READY_TIMEOUT_S = 120.0
REPLAY_TIMEOUT_S = 60.0  # one replayed call (a proxy's first call loads its transforms)
LITELLM_MASTER_KEY = "sk-bench-local-only-0123456789abcdef"  # LiteLLM refuses to start without one
UPSTREAM_KEY = "sk-bench-upstream"  # what the peers pass on to the stub (which checks no key)
EGRESS_TRAP = "http://127.0.0.1:9"  # HTTP(S)_PROXY for the peers: a client that dials out fails here


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

# side by side with the peers (a body the peers take as it is): levers off, as `off`
[[routes]]
match = "{PEER_MODEL}"
targets = ["stub"]
cache = false

# the SWE-agent replay: the route of `tokenlean serve --example-config` (cache, layout, compaction
# ratio 0.3), upstream model renamed to the one the peers send
[upstreams.stub_replay]
base_urls = ["{stub_base_url}"]
model = "{PEER_MODEL}"

[[routes]]
match = "{REPLAY_ROUTE}"
targets = ["stub_replay"]
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


class _CountedLog(collections.deque):  # type: ignore[type-arg]
    """The stub's request log: bounded, and numbered (``total`` = requests ever appended)."""

    def __init__(self, maxlen: int) -> None:
        super().__init__(maxlen=maxlen)
        self.total = 0

    def append(self, item: Any) -> None:
        super().append(item)
        self.total += 1

    def since(self, seq: int) -> list[dict[str, Any]]:
        """The records numbered ``seq`` and after that the bound still holds."""
        first = self.total - len(self)
        return [{"seq": first + k, **rec} for k, rec in enumerate(self) if first + k >= seq]


def serve_stub(port: int) -> None:
    """``--serve-stub PORT``: the gateway's stub upstream, plus ``GET /bench/last?model=M`` and
    ``GET /bench/log?since=N`` (every request received from number N on, and the running total)."""
    import uvicorn
    from starlette.requests import Request as HttpRequest
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tokenlean.gateway.stub import StubState, create_stub_app

    state = StubState()
    log = _CountedLog(maxlen=2000)
    state.requests = log  # type: ignore[assignment]  # bounded, numbered
    app = create_stub_app(state)

    async def since(request: HttpRequest) -> JSONResponse:
        seq = int(request.query_params.get("since", "0"))
        return JSONResponse({"total": log.total, "records": log.since(seq)})

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
    app.router.routes.append(Route("/bench/log", since, methods=["GET"]))
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
    """A server in its own process: started, polled on ``health`` until ready, stopped.

    ``wait=False`` returns as soon as the process is started (several start side by side); then
    :meth:`wait_ready` before use. The caller closes it in a ``finally`` either way.
    """

    def __init__(
        self,
        name: str,
        cmd: list[str],
        port: int,
        log: Path,
        env: dict[str, str],
        *,
        health: str = "/health",
        cwd: Path = ROOT,
        wait: bool = True,
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> None:
        self.name, self.port, self.log, self.health = name, port, log, health
        self.ready_timeout = ready_timeout
        self.url = f"http://127.0.0.1:{port}"
        self.started = time.perf_counter()
        self.startup_s: float | None = None
        self._last = "no answer"
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.close()
                raise

    def wait_ready(self) -> None:
        while not self.poll_ready():
            time.sleep(0.05)

    def poll_ready(self) -> bool:
        """One readiness probe: True when ready; raises when the process exited or ran out of time."""
        if self.startup_s is not None:
            return True
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with code {self.proc.returncode} while starting:\n{self.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{self.url}{self.health}", timeout=1.0) as resp:
                if resp.status == 200:
                    self.startup_s = time.perf_counter() - self.started
                    return True
                self._last = f"{self.health} answered {resp.status}"
        except OSError as exc:
            self._last = repr(exc)
        if time.perf_counter() - self.started > self.ready_timeout:
            raise RuntimeError(
                f"{self.name} not ready after {self.ready_timeout:g}s ({self._last}):\n{self.log_tail()}"
            )
        return False

    def cpu_s(self) -> float | None:
        return proc_cpu_s(self.proc.pid)

    def log_tail(self, chars: int = 3000) -> str:
        """The last ``chars`` characters of the process's output (read from the end of the file)."""
        self._log_file.flush()
        try:
            with self.log.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4 * chars))
                return f.read().decode("utf-8", errors="replace")[-chars:]
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
    v: Variant,
    stub_url: str,
    gw_url: str,
    *,
    rate: float,
    n: int,
    warmup: int,
    model: str | None = None,
    headers: dict[str, str] | None = None,
    cpu: Callable[[], float | None] | None = None,
    tokenlean: bool = True,
) -> dict[str, Any]:
    """Direct and gateway requests alternating on one open-loop schedule; see the module docstring.

    ``gw_url`` may be a peer proxy instead (``tokenlean=False``: no ``x-tokenlean-*`` header is
    expected); ``model`` is the body's model (default: the variant's route), ``headers`` go with
    the requests through it, ``cpu`` is its CPU-seconds probe (default: the gateway's).
    """
    direct_url, gateway_url = f"{stub_url}/v1/chat/completions", f"{gw_url}/v1/chat/completions"
    model = model or v.route
    via_cpu = cpu or _CPU["gateway"]
    total = warmup + n
    bodies = [
        make_body(v.body, model, f"{v.name}-{i}" if v.unique else v.name, i if v.unique else 0)
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
        hdrs = {"content-type": "application/json"}
        if side == "direct":
            hdrs["x-bench-direct"] = "1"
        else:
            hdrs.update(headers or {})
        if v.session:
            hdrs["x-tokenlean-session"] = f"{v.name}-{i}"
        started = time.perf_counter()
        try:
            resp = await client.post(
                direct_url if side == "direct" else gateway_url, content=raws[i], headers=hdrs
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
        stub_cpu0, gw_cpu0 = _CPU["stub"](), via_cpu()
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
        stub_cpu1, gw_cpu1 = _CPU["stub"](), via_cpu()
        upstream = await _last_upstream_body(dc, stub_url, model)

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
    if not tokenlean:  # a peer: what reached the upstream, not tokenlean's headers
        checks = {
            "answers_ok": answers_ok,
            "upstream_messages_changed": changed,
            "upstream_fields_changed": _fields_changed(sent, upstream),
        }
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


def _fields_changed(sent: dict[str, Any] | None, upstream: dict[str, Any] | None) -> list[str] | None:
    """Top-level body fields a proxy added (``+``), dropped (``-``) or rewrote (``~``); messages apart."""
    if sent is None or upstream is None:
        return None
    out = [f"+{k}" for k in sorted(set(upstream) - set(sent))]
    out += [f"-{k}" for k in sorted(set(sent) - set(upstream))]
    out += [f"~{k}" for k in sorted(set(sent) & set(upstream)) if k != "messages" and sent[k] != upstream[k]]
    return out


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


async def closed_loop(
    url: str,
    *,
    stream: bool,
    concurrency: int,
    seconds: float,
    model: str = "off",
    headers: dict[str, str] | None = None,
    cpu: Callable[[], float | None] | None = None,
    unique: bool = False,
) -> dict[str, Any]:
    """``concurrency`` clients back to back for ``seconds``; requests/s and CPU use.

    ``unique``: a new body per request (a proxy with a response cache of its own must not answer
    from it); ``cpu`` probes the process under test (default: the gateway).
    """
    endpoint = f"{url}/v1/chat/completions"
    via_cpu = cpu or _CPU["gateway"]
    body = make_body("short", model, "throughput", 0)
    if stream:
        body["stream"] = True
    raw = json.dumps(body).encode()
    sent = 0

    def next_raw() -> bytes:
        nonlocal sent
        sent += 1
        if not unique:
            return raw
        return json.dumps(make_body("short", model, f"throughput-{sent}", sent)).encode()

    headers = {"content-type": "application/json", **(headers or {})}
    completed = 0
    errors: Counter[str] = Counter()
    samples: list[str] = []

    async with _client(concurrency) as client:

        async def request() -> None:
            if stream:
                async with client.stream("POST", endpoint, content=next_raw(), headers=headers) as resp:
                    tail = b""
                    async for chunk in resp.aiter_bytes():
                        tail = (tail + chunk)[-64:]
                    if resp.status_code != 200 or not tail.rstrip().endswith(b"data: [DONE]"):
                        raise RuntimeError(f"HTTP {resp.status_code}, stream ended with {tail[-40:]!r}")
            else:
                resp = await client.post(endpoint, content=next_raw(), headers=headers)
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
        cpu0 = {"stub": _CPU["stub"](), "gateway": via_cpu(), "client": time.process_time()}
        t0 = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(worker(t0 + seconds, True) for _ in range(concurrency))),
            seconds + REQUEST_TIMEOUT_S + 5,
        )
        elapsed = time.perf_counter() - t0
        cpu1 = {"stub": _CPU["stub"](), "gateway": via_cpu(), "client": time.process_time()}

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


# -- peers -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A proxy from PyPI, run as its CLI starts it, in front of the same stub."""

    name: str
    label: str
    dist: str  # the PyPI distribution (its version goes in the JSON)
    setup: str  # what is set and why; everything else at the peer's default
    args: tuple[str, ...] = ()
    latency: bool = True  # measured in the latency phase too (else: the replay only)
    quick: bool = True  # run in --quick too


PEERS = (
    Peer(
        "litellm",
        "LiteLLM proxy",
        "litellm",
        "defaults (one uvicorn worker); one model_list entry (openai/gpt-4o at the stub); "
        "general_settings.master_key set (it refuses to start without one, so clients send it); "
        "litellm_settings.telemetry false, LITELLM_TELEMETRY_DISABLED, LITELLM_LOCAL_MODEL_COST_MAP "
        "(the bundled price map, no fetch)",
    ),
    Peer(
        "headroom",
        "Headroom proxy",
        "headroom-ai",
        "defaults (--mode cache: prior turns frozen for the provider's prefix cache) except "
        "--no-rate-limit (its default limiter, 60 requests/min, answers this traffic 429); "
        "--openai-api-url/--anthropic-api-url at the stub; --no-subscription-tracking, "
        "HEADROOM_OFFLINE=1 (no model download, no beacon), HEADROOM_TELEMETRY=off, "
        "HEADROOM_UPDATE_CHECK=off",
        args=("--no-rate-limit",),
    ),
    Peer(
        "headroom-token",
        "Headroom proxy --mode token",
        "headroom-ai",
        "as headroom, plus --mode token (its setting for the most compression: prior turns may be "
        "rewritten); replay only",
        args=("--no-rate-limit", "--mode", "token"),
        latency=False,
        quick=False,
    ),
)

_LITELLM_MAIN = (
    "import sys; sys.argv[0] = 'litellm'; from litellm_cli.main import proxy_server; sys.exit(proxy_server())"
)
_HEADROOM_MAIN = "import sys; sys.argv[0] = 'headroom'; from headroom.cli import main; sys.exit(main())"


def litellm_yaml(stub_url: str) -> str:
    """LiteLLM's proxy config: the stub as ``openai/gpt-4o``; no telemetry; a master key."""
    return f"""\
model_list:
  - model_name: {PEER_MODEL}
    litellm_params:
      model: openai/{PEER_MODEL}
      api_base: {stub_url}/v1
      api_key: {UPSTREAM_KEY}
litellm_settings:
  telemetry: false
general_settings:
  master_key: {LITELLM_MASTER_KEY}
"""


def peer_env(base: dict[str, str], home: Path) -> dict[str, str]:
    """A peer's environment: its state under ``home``, every phone-home path off, egress trapped."""
    env = dict(base)
    # a model already in the user's Hugging Face cache may be used; none is downloaded
    env.setdefault("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    env["HOME"] = str(home)
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY_DISABLED": "true",
            "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
            "HEADROOM_OFFLINE": "1",
            "HEADROOM_TELEMETRY": "off",
            "HEADROOM_UPDATE_CHECK": "off",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "DO_NOT_TRACK": "1",
        }
    )
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[var] = env[var.lower()] = EGRESS_TRAP
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _dist_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _start_error(exc: BaseException) -> str:
    """The line of a start failure that says why (the last error line of its log), else its first."""
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if any(w in ln for w in ("Error", "error", "Exception", "refused", "Missing", "not installed")):
            return f"{lines[0]} ... {ln}"[:600] if ln != lines[0] else ln[:600]
    return (lines[0] if lines else repr(exc))[:600]


def start_peers(
    tmp: Path, stub_url: str, base_env: dict[str, str], started: dict[str, Service], quick: bool = False
) -> tuple[dict[str, Service], dict[str, Any]]:
    """Every peer started side by side, then waited for; a peer that cannot run gets its reason.

    ``started`` is the caller's: each process is entered there as soon as it exists, and the
    caller closes them all in a ``finally``.
    """
    info: dict[str, Any] = {}
    for peer in PEERS:
        info[peer.name] = {"label": peer.label, "package": peer.dist, "version": _dist_version(peer.dist)}
        info[peer.name]["setup"] = peer.setup
        if info[peer.name]["version"] is None:
            info[peer.name]["not_run"] = (
                f"{peer.dist} is not installed (pip install -r requirements/bench.txt pins it and its proxy's "
                "dependencies)"
            )
            continue
        if quick and not peer.quick:
            info[peer.name]["not_run"] = "skipped in --quick (a replay-only setting; the full run has it)"
            continue
        home = tmp / f"peer-{peer.name}"
        home.mkdir()
        port = free_port()
        if peer.dist == "litellm":
            cfg = home / "litellm.yaml"
            cfg.write_text(litellm_yaml(stub_url), encoding="utf-8")
            cmd = [sys.executable, "-c", _LITELLM_MAIN, "--config", str(cfg), "--host", "127.0.0.1"]
            cmd += ["--port", str(port)]
            health = "/health/liveliness"
        else:
            cmd = [sys.executable, "-c", _HEADROOM_MAIN, "proxy", "--host", "127.0.0.1", "--port", str(port)]
            cmd += [
                "--openai-api-url",
                stub_url,
                "--anthropic-api-url",
                stub_url,
                "--no-subscription-tracking",
            ]
            cmd += list(peer.args)
            health = "/livez"
        info[peer.name]["command"] = " ".join(
            ["python -c <litellm CLI>" if peer.dist == "litellm" else "python -c <headroom CLI>", *cmd[3:]]
        )
        try:
            started[peer.name] = Service(
                peer.name,
                cmd,
                port,
                home / "server.log",
                peer_env(base_env, home),
                health=health,
                cwd=home,
                wait=False,
                ready_timeout=PEER_READY_TIMEOUT_S,
            )
        except OSError as exc:
            info[peer.name]["not_run"] = f"could not start: {exc!r}"
    ready: dict[str, Service] = {}
    waiting = dict(started)
    while waiting:  # bounded: poll_ready raises once a peer is past its ready_timeout
        for name, svc in list(waiting.items()):
            try:
                if not svc.poll_ready():
                    continue
            except RuntimeError as exc:
                info[name]["not_run"] = _start_error(exc)
                info[name]["log_tail"] = svc.log_tail(1500)
                svc.close()
            else:
                info[name]["startup_s"] = svc.startup_s
                ready[name] = svc
            del waiting[name]
        time.sleep(0.05)
    return ready, info


def _peer_headers(name: str) -> dict[str, str]:
    if name == "litellm":
        return {"authorization": f"Bearer {LITELLM_MASTER_KEY}"}
    if name.startswith("headroom"):
        return {"authorization": f"Bearer {UPSTREAM_KEY}"}  # passed on to the upstream
    return {}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b <= 0:
        return None
    return a / b


def _peer_row(o: dict[str, Any]) -> dict[str, Any]:
    """An ``open_loop`` result in the peers' terms: ``via`` is the system under test."""
    return {
        "body": o["body"],
        "body_bytes": o["body_bytes"],
        "requests": o["requests"],
        "warmup_requests": o["warmup_requests"],
        "window_s": o["window_s"],
        "errors": {
            "direct": o["errors"]["direct"],
            "via": o["errors"]["gateway"],
            "other": o["errors"]["other"],
        },
        "error_samples": o["error_samples"],
        "direct": o["direct"],
        "via": o["gateway"],
        "added_p50_ms": o["added_p50_ms"],
        "added_p99_ms": o["added_p99_ms"],
        "cpu_ms_per_request": o["gateway_cpu_ms_per_request"],
        "cpu_share_of_one_core": o["gateway_cpu_share_of_one_core"],
        "checks": o["checks"],
    }


def peer_latency(
    systems: dict[str, tuple[str, Callable[[], float | None]]], stub_url: str, q: int
) -> dict[str, dict[str, Any]]:
    """Capacity (closed loop) and added latency (open loop) of each system, tokenlean ``off`` first."""
    rate, n, warmup = PEER_RATE_RPS[q], PEER_REQUESTS[q], PEER_WARMUP[q]
    out: dict[str, dict[str, Any]] = {name: {"latency": {}} for name in systems}
    for name, (url, cpu) in systems.items():
        cap = asyncio.run(
            closed_loop(
                url,
                stream=False,
                concurrency=PEER_TP_CONCURRENCY,
                seconds=PEER_TP_SECONDS[q],
                model=PEER_MODEL,
                headers=_peer_headers(name),
                cpu=cpu,
                unique=True,
            )
        )
        out[name]["capacity"] = {
            "rps": cap["rps"],
            "requests": cap["requests"],
            "errors": cap["errors"],
            "error_samples": cap["error_samples"],
            "concurrency": cap["concurrency"],
            "cpu_ms_per_request": cap["gateway_cpu_ms_per_request"],
            "rate_share": rate / cap["rps"] if cap["rps"] else None,
        }
    for body in ("short", "history"):
        for name, (url, cpu) in systems.items():
            v = Variant(f"peer-{name}-{body}", PEER_MODEL, "none", body)
            o = asyncio.run(
                open_loop(
                    v,
                    stub_url,
                    url,
                    rate=rate,
                    n=n,
                    warmup=warmup,
                    model=PEER_MODEL,
                    headers=_peer_headers(name),
                    cpu=cpu,
                    tokenlean=name == "tokenlean",
                )
            )
            out[name]["latency"][body] = _peer_row(o)
    ref = out.get("tokenlean", {}).get("latency", {})
    for name in systems:
        for body, row in out[name]["latency"].items():
            base = ref.get(body)
            row["vs_tokenlean"] = {
                "added_p50": _ratio(row["added_p50_ms"], base and base["added_p50_ms"]),
                "added_p99": _ratio(row["added_p99_ms"], base and base["added_p99_ms"]),
                "cpu_per_request": _ratio(row["cpu_ms_per_request"], base and base["cpu_ms_per_request"]),
            }
    return out


# -- the SWE-agent replay ---------------------------------------------------------------------------


@dataclass
class _ReplayTally:
    sessions: int = 0
    calls: int = 0
    upstream_requests: int = 0
    no_upstream: int = 0  # calls answered without an upstream request (a proxy's own cache)
    errors: int = 0
    tokens_in: int = 0  # the client's messages, count_messages
    tokens_sent: int = 0  # what reached the stub, count_messages (tools included)
    oa_cost: float = 0.0
    an_cost: float = 0.0
    oa_cached: int = 0
    an_read: int = 0
    an_write: int = 0
    ledger_tokens: int = 0
    requests_changed: int = 0
    msgs: int = 0
    msgs_changed: int = 0
    tools_added: int = 0
    seconds: float = 0.0
    latencies: list[float] = dataclass_field(default_factory=list)
    fields: Counter[str] = dataclass_field(default_factory=Counter)
    samples: list[str] = dataclass_field(default_factory=list)
    per_session: dict[str, dict[str, Any]] = dataclass_field(default_factory=dict)

    def summary(self, base: _ReplayTally | None) -> dict[str, Any]:
        def share(a: float, b: float) -> float | None:
            return a / b if b else None

        n = max(self.sessions, 1)
        return {
            "sessions": self.sessions,
            "calls": self.calls,
            "upstream_requests": self.upstream_requests,
            "calls_without_upstream_request": self.no_upstream,
            "errors": self.errors,
            "error_samples": self.samples,
            "client_tokens": self.tokens_in,
            "tokens_sent": self.tokens_sent,
            "tokens_sent_vs_direct": share(self.tokens_sent, base.tokens_sent) if base else None,
            "openai": {
                "cost_usd": self.oa_cost,
                "cost_per_session_usd": self.oa_cost / n,
                "vs_direct": share(self.oa_cost, base.oa_cost) if base else None,
                "cached_share": share(self.oa_cached, self.ledger_tokens),
            },
            "anthropic": {
                "cost_usd": self.an_cost,
                "cost_per_session_usd": self.an_cost / n,
                "vs_direct": share(self.an_cost, base.an_cost) if base else None,
                "read_share": share(self.an_read, self.ledger_tokens),
                "write_share": share(self.an_write, self.ledger_tokens),
            },
            "requests_changed": share(self.requests_changed, self.upstream_requests),
            "messages_changed": share(self.msgs_changed, self.msgs),
            "fields_changed": dict(self.fields.most_common()),
            "requests_with_tools_added": self.tools_added,
            "seconds": self.seconds,
            "p50_ms_per_call": percentile_ms(self.latencies, 0.5) if self.latencies else None,
            "per_session": self.per_session,
        }


def replay_sessions(
    data: Path, quick: bool, stub_url: str, targets: dict[str, tuple[str, str, dict[str, str]]]
) -> dict[str, Any]:
    """Each SWE-agent trajectory's calls through each target, in order; what reached the stub, priced.

    ``targets``: name -> (base URL, body model, headers); ``"direct"`` (the stub itself) first.
    """
    import compaction_sessions as cs  # sibling benchmarks: the reader, the serialiser, cache pricing
    import httpx
    import profile_accuracy as pa

    from tokenlean.tokens import count_messages

    names = {p.name for p in pa.trace_files(data, quick)}
    sessions = [s for s in cs.load_sessions(data) if s.name in names]
    ser = cs.Serializer()
    tallies: dict[str, _ReplayTally] = {}
    with httpx.Client(timeout=httpx.Timeout(REPLAY_TIMEOUT_S)) as client:
        cursor = int(client.get(f"{stub_url}/bench/log", params={"since": 1 << 62}).json()["total"])
        for name, (url, model, headers) in targets.items():
            t = tallies[name] = _ReplayTally()
            t0 = time.perf_counter()
            for sess in sessions:
                ledger = cs.CacheLedger()
                sent0 = t.tokens_sent
                hdrs = dict(headers)
                if name == "tokenlean":
                    hdrs["x-tokenlean-session"] = f"swe-agent/{sess.name}"
                for a in sess.calls:
                    msgs = sess.messages[:a]
                    body = {"model": model, "messages": msgs, "temperature": 0, "max_tokens": MAX_TOKENS}
                    t.calls += 1
                    t.tokens_in += count_messages(msgs, PEER_MODEL)
                    c0 = time.perf_counter()
                    try:
                        resp = client.post(f"{url}/v1/chat/completions", json=body, headers=hdrs)
                        t.latencies.append(time.perf_counter() - c0)
                        if resp.status_code != 200 or not resp.json().get("choices"):
                            raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")
                    except Exception as exc:
                        t.errors += 1
                        if len(t.samples) < 5:
                            t.samples.append(f"{sess.name} call {t.calls}: {type(exc).__name__}: {exc}"[:300])
                    log = client.get(f"{stub_url}/bench/log", params={"since": cursor}).json()
                    cursor = int(log["total"])
                    records = log["records"]
                    t.no_upstream += not records
                    for rec in records:
                        up = rec["body"] if isinstance(rec.get("body"), dict) else {}
                        up_msgs = up.get("messages") or []
                        tools = up.get("tools") or ()
                        t.upstream_requests += 1
                        t.tokens_sent += count_messages(up_msgs, PEER_MODEL, tools)
                        t.tools_added += bool(tools)
                        t.requests_changed += up_msgs != msgs
                        t.msgs += max(len(msgs), len(up_msgs))
                        t.msgs_changed += sum(x != y for x, y in zip(msgs, up_msgs, strict=False))
                        t.msgs_changed += abs(len(msgs) - len(up_msgs))
                        # against the body as a peer's client sends it (tokenlean's route renames
                        # its model to that one on purpose)
                        t.fields.update(_fields_changed({**body, "model": PEER_MODEL}, up) or [])
                        segs = ser.segments(up_msgs)
                        ledger.add(segs, cs.anthropic_breakpoints(up_msgs))
                ser.reset()
                c = cs.costs(ledger)
                t.sessions += 1
                t.oa_cost += c["openai"]
                t.an_cost += c["anthropic"]
                t.oa_cached += ledger.oa_cached
                t.an_read += ledger.an_read
                t.an_write += ledger.an_write
                t.ledger_tokens += ledger.tokens
                t.per_session[sess.name] = {
                    "calls": len(sess.calls),
                    "tokens_sent": t.tokens_sent - sent0,
                    "openai_usd": c["openai"],
                    "anthropic_usd": c["anthropic"],
                }
            t.seconds = time.perf_counter() - t0
    base = tallies.get("direct")
    for t in tallies.values():
        for sname, ps in t.per_session.items():
            ref = base.per_session.get(sname) if base else None
            ps["openai_usd_vs_direct"] = _ratio(ps["openai_usd"], ref and ref["openai_usd"])
            ps["anthropic_usd_vs_direct"] = _ratio(ps["anthropic_usd"], ref and ref["anthropic_usd"])
    rows = {name: t.summary(base) for name, t in tallies.items()}
    return {
        "data": str(data),
        "trajectories": [s.name for s in sessions],
        "trajectories_available": len(list((data / cs.TRACES).glob("*.traj"))),
        "calls_per_system": sum(len(s.calls) for s in sessions),
        "prices": {"openai": cs.OPENAI_MODEL, "anthropic": cs.ANTHROPIC_MODEL, **cs.PRICES},
        "rows": rows,
    }


def headroom_digest(log: Path) -> dict[str, Any]:
    """What Headroom's own log says it did (every request of the run): transforms and warnings."""
    transforms: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    perf = saved = 0
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for ln in lines:
        if " PERF " in ln and "transforms=" in ln:
            perf += 1
            for tok in ln.split("transforms=", 1)[1].split():
                if ":" in tok or tok == "none":
                    parts = tok.split(":")
                    if len(parts) > 2 and parts[-1].replace(".", "", 1).isdigit():
                        parts = parts[:-1]  # a count or ratio after the transform's name
                    transforms[":".join(parts)] += 1
            for tok in ln.split():
                if tok.startswith("tok_saved="):
                    saved += int(tok.split("=", 1)[1] or 0)
        elif " - WARNING - " in ln:
            msg = ln.split(" - WARNING - ", 1)[1]
            msg = msg.split("] ", 1)[1] if msg.startswith("[hr_") else msg
            warnings[msg.split("(", 1)[0].strip()[:120]] += 1
    return {
        "requests_logged": perf,
        "tokens_saved_logged": saved,
        "transforms": dict(transforms.most_common(12)),
        "warnings": dict(warnings.most_common(8)),
        "kompress_available": not any("Kompress" in w and "not" in w for w in warnings),
    }


def replay_missing(data: Path | None) -> str | None:
    """Why the replay cannot run (printed to stderr by ``compaction_sessions.traces_found``), or None."""
    if data is None:
        return "no --data given"
    import compaction_sessions as cs

    if cs.traces_found(data):
        return None
    return (
        f"dataset not found: {data / cs.TRACES} (pass --data DIR, the folder holding agent_traces/swe-agent/)"
    )


def run_peers(
    tmp: Path,
    stub: Service,
    gateway: Service,
    env: dict[str, str],
    q: int,
    data: Path | None,
    missing: str | None,
) -> dict[str, Any]:
    """The peers block: each peer started, measured side by side with tokenlean ``off``, replayed.

    ``missing``: why the replay cannot run (``replay_missing``, checked before the run), or None.
    """
    t0 = time.perf_counter()
    started: dict[str, Service] = {}
    try:
        services, info = start_peers(tmp, stub.url, env, started, quick=bool(q))
        systems: dict[str, tuple[str, Callable[[], float | None]]] = {
            "tokenlean": (gateway.url, gateway.cpu_s)
        }
        for peer in PEERS:
            if peer.latency and peer.name in services:
                systems[peer.name] = (services[peer.name].url, services[peer.name].cpu_s)
        latency = peer_latency(systems, stub.url, q)
        replay: dict[str, Any] = {"not_run": missing or "no --data given"}
        if data is not None and not missing:
            targets = {
                "direct": (stub.url, PEER_MODEL, {"x-bench-direct": "1"}),
                "tokenlean": (gateway.url, REPLAY_ROUTE, {}),
            }
            for peer in PEERS:
                if peer.name in services:
                    targets[peer.name] = (services[peer.name].url, PEER_MODEL, _peer_headers(peer.name))
            replay = replay_sessions(data, bool(q), stub.url, targets)
        for name, svc in services.items():
            if name.startswith("headroom"):
                info[name]["log"] = headroom_digest(svc.log)
            else:
                tail = svc.log_tail(200_000).splitlines()
                info[name]["log"] = {
                    "lines": len(tail),
                    "error_lines": [ln[:200] for ln in tail if "ERROR" in ln or "Traceback" in ln][:5],
                }
            info[name]["cpu_s_total"] = svc.cpu_s()
    finally:
        for svc in started.values():
            svc.close()
    systems_out: dict[str, Any] = {
        "tokenlean": {
            "label": "tokenlean serve",
            "package": "tokenlean",
            "version": _dist_version("tokenlean"),
            "setup": f"the benchmark's gateway process; latency: route '{PEER_MODEL}' (no lever, as `off`); "
            f"replay: route '{REPLAY_ROUTE}' (cache, layout, compaction ratio 0.3: the example config's "
            "route), one x-tokenlean-session per trajectory",
        },
        **info,
    }
    replay_rows = replay.get("rows", {})
    for name, row in systems_out.items():
        if "not_run" in row:
            continue
        row.update(latency.get(name, {}))
        if name in replay_rows:
            row["replay"] = replay_rows[name]
        elif "not_run" in replay:
            row["replay"] = {"not_run": replay["not_run"]}
    return {
        "config": {
            "model": PEER_MODEL,
            "rate_rps": PEER_RATE_RPS[q],
            "requests_per_side": PEER_REQUESTS[q],
            "warmup_per_side": PEER_WARMUP[q],
            "capacity_concurrency": PEER_TP_CONCURRENCY,
            "capacity_seconds": PEER_TP_SECONDS[q],
            "egress": f"HTTP(S)_PROXY/ALL_PROXY={EGRESS_TRAP}, NO_PROXY=127.0.0.1,localhost for the peers; "
            "every listener on 127.0.0.1",
        },
        "systems": systems_out,
        "replay": {k: v for k, v in replay.items() if k != "rows"},
        "direct": replay_rows.get("direct"),
        "wall_s": time.perf_counter() - t0,
    }


# -- the run ---------------------------------------------------------------------------------------


def run(
    quick: bool, rate: float | None, n: int | None, *, peers: bool = True, data: Path | None = None
) -> dict[str, Any]:
    q = 1 if quick else 0
    rate = rate or RATE_RPS[q]
    n = n or REQUESTS[q]
    warmup, concurrency, seconds = WARMUP[q], TP_CONCURRENCY[q], TP_SECONDS[q]
    started = time.perf_counter()
    missing = replay_missing(data) if peers else None  # says so now, not minutes into the run
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
            peer_block = (
                run_peers(tmp, stub, gateway, env, q, data, missing) if peers else {"not_run": "--no-peers"}
            )
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
        "peers": peer_block,
        "gateway_log": {"lines": len(log_lines), "problem_lines": len(problems), "tail": log_lines[-20:]},
        "pass": {
            f"off_added_p50_le_{TARGET_P50_MS:g}ms": off["added_p50_ms"] <= TARGET_P50_MS,
            f"off_added_p99_le_{TARGET_P99_MS:g}ms": off["added_p99_ms"] <= TARGET_P99_MS,
        },
        "wall_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared" / "datasets",
        help="the datasets folder (agent_traces/swe-agent/ for the peers' replay; default ../shared/datasets); "
        "without it the replay is listed under not_run and the rest runs",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip the peers block (LiteLLM, Headroom)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="fewer requests (for CI smoke tests)")
    parser.add_argument("--rate", type=float, help="gateway requests/s in the latency phase")
    parser.add_argument("--requests", type=int, help="measured requests per side and variant")
    parser.add_argument("--serve-stub", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_stub is not None:
        serve_stub(args.serve_stub)
        return 0
    result = run(args.quick, args.rate, args.requests, peers=not args.no_peers, data=args.data)
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
    _print_peers(console, result["peers"])


def _x(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _print_peers(console: Any, peers: dict[str, Any]) -> None:
    from rich.table import Table

    if "not_run" in peers:
        console.print(f"peers: not run ({peers['not_run']})")
        return
    cfg = peers["config"]
    systems = peers["systems"]
    lat = Table(
        title=f"Peers: added latency, open loop at {cfg['rate_rps']:g} req/s through each (+ as many direct), "
        f"{cfg['requests_per_side']} requests per side, model {cfg['model']}; x tl = ratio to tokenlean's "
        f"no-lever route in the same run; capacity: closed loop, {cfg['capacity_concurrency']} clients"
    )
    cols = ("system", "body", "added p50", "added p99", "CPU/req", "p50 x tl", "p99 x tl", "CPU x tl")
    cols += ("capacity", "rate share", "errors")
    for col in cols:
        if col == "system":
            lat.add_column(col, no_wrap=True, min_width=14)
        else:
            lat.add_column(col, justify="left" if col == "body" else "right")
    changes: dict[str, str] = {}
    for name, sysrow in systems.items():
        for body, r in sysrow.get("latency", {}).items():
            cap = sysrow.get("capacity", {})
            cpu = r["cpu_ms_per_request"]
            vs = r["vs_tokenlean"]
            fields = r["checks"].get("upstream_fields_changed")
            if fields:
                changes[name] = ", ".join(fields)
            lat.add_row(
                name,
                body,
                f"{r['added_p50_ms']:+.2f} ms",
                f"{r['added_p99_ms']:+.2f} ms",
                "-" if cpu is None else f"{cpu:.2f} ms",
                _x(vs["added_p50"]),
                _x(vs["added_p99"]),
                _x(vs["cpu_per_request"]),
                f"{cap['rps']:.0f}/s" if cap.get("rps") else "-",
                f"{cap['rate_share']:.0%}" if cap.get("rate_share") else "-",
                str(sum(r["errors"].values()) + cap.get("errors", 0)),
            )
    console.print(lat)
    for name, fields in changes.items():
        console.print(f"  {name} rewrote body fields on the way upstream: {fields}")

    replay = peers["replay"]
    if "not_run" in replay:
        console.print(f"[yellow]peers replay not run: {replay['not_run']}[/yellow]")
    else:
        rep = Table(
            title=f"Peers: {len(replay['trajectories'])} of {replay['trajectories_available']} SWE-agent "
            f"trajectories replayed, {replay['calls_per_system']} calls through each; what reached the "
            "upstream (tiktoken), priced under prompt caching (OA: OpenAI gpt-4o rules, An: Anthropic "
            "claude-sonnet-4-5 rules; $ per trajectory; x d = ratio to direct)"
        )
        cols = (
            "system",
            "calls",
            "upstream",
            "tokens sent",
            "x d",
            "OA $",
            "x d",
            "OA cached",
            "An $",
            "x d",
        )
        cols += ("An read", "req changed", "ms/call p50", "errors")
        for col in cols:
            if col == "system":
                rep.add_column(col, no_wrap=True, min_width=14)
            else:
                rep.add_column(col, justify="right")
        rows = {"direct": peers["direct"]} if peers.get("direct") else {}
        rows.update({n: s["replay"] for n, s in systems.items() if isinstance(s.get("replay"), dict)})
        for name, r in rows.items():
            if "not_run" in r:
                continue
            oa, an = r["openai"], r["anthropic"]
            rep.add_row(
                name,
                str(r["calls"]),
                str(r["upstream_requests"]),
                f"{r['tokens_sent']:,}",
                _x(r["tokens_sent_vs_direct"]),
                f"{oa['cost_per_session_usd']:.4f}",
                _x(oa["vs_direct"]),
                "-" if oa["cached_share"] is None else f"{oa['cached_share']:.0%}",
                f"{an['cost_per_session_usd']:.4f}",
                _x(an["vs_direct"]),
                "-" if an["read_share"] is None else f"{an['read_share']:.0%}",
                "-" if r["requests_changed"] is None else f"{r['requests_changed']:.0%}",
                "-" if r["p50_ms_per_call"] is None else f"{r['p50_ms_per_call']:.1f}",
                str(r["errors"]),
            )
        console.print(rep)
    for name, sysrow in systems.items():
        version = sysrow.get("version") or "not installed"
        if "not_run" in sysrow:
            console.print(f"[red]{name} ({sysrow['package']} {version}) not run: {sysrow['not_run']}[/red]")
            continue
        extra = f", ready {sysrow['startup_s']:.1f} s after start" if sysrow.get("startup_s") else ""
        console.print(f"{name}: {sysrow['package']} {version}{extra}; {sysrow['setup']}")
        log = sysrow.get("log") or {}
        if "transforms" in log:
            console.print(
                f"  its log: {log['requests_logged']} requests, transforms {log['transforms']}; "
                f"Kompress {'available' if log['kompress_available'] else 'unavailable (model not cached)'}"
            )
    console.print(f"peers block: {peers['wall_s']:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
