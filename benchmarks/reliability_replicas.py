"""A llama.cpp replica killed mid-run: what each kind of call in flight sees.

    python benchmarks/reliability_replicas.py [--rounds N] [--json OUT]

Two real llama.cpp servers (``tokenlean.server.LocalModelServer``, the GGUF model from PyPI) on
127.0.0.1 serve one model behind a ``ReplicaGroup`` (round robin, so both always have work; each
endpoint retries nothing itself: a failure goes to the group). Worker threads keep calls going,
half of them streaming. In each round, as soon as a stream served by one replica has delivered a
token, that replica's server is killed with SIGKILL; the calls go on for a while, then it is
restarted on the same port and the group takes it back after its cool-down. The next round kills
the other one.

Every call ends one of these ways, counted per kind (what the issue asks is in brackets):

* non-streaming: ``ok`` or ``failed`` [0 failed: a call in flight on the dead replica is retried on
  the other one]; ``in_flight_at_kill`` counts those that were on the killed replica;
* streaming, no token received yet when it failed: ``failed_before_token`` [0: retried elsewhere];
* streaming, tokens already received: ``interrupted`` (ended with ``StreamInterrupted``, the
  explicit error the client sees) or ``failed_after_token_other`` (another typed error);
* streaming that ended without an error but without a finished answer (no final response, or one
  with no ``finish_reason``): ``silently_truncated`` [must be 0];
* ``ok``: finished normally.

Every loop is bounded by a call count and by wall time; servers are stopped at the end whatever
happens.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
CORE = str(ROOT / "core")
if CORE not in sys.path:
    sys.path.insert(0, CORE)

from tokenlean.errors import StreamInterrupted, TokenleanError  # noqa: E402
from tokenlean.routing import OpenAICompatibleEndpoint, ReplicaGroup  # noqa: E402
from tokenlean.routing.endpoints import StreamChunk  # noqa: E402
from tokenlean.types import Message, Request, Response  # noqa: E402


class _Watched:
    """An endpoint that tells the benchmark which replica serves each thread's call right now.

    Instrumentation only: every call goes to the real endpoint unchanged; the benchmark needs to
    know when a stream on a given replica has delivered a token, to kill that replica then.
    """

    def __init__(self, inner: OpenAICompatibleEndpoint, board: dict[int, tuple[str, bool, bool]]) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.board = board  # thread id -> (replica, streaming, token received)

    def complete(self, request: Request) -> Response:
        me = threading.get_ident()
        self.board[me] = (self.name, False, False)
        try:
            return self.inner.complete(request)
        finally:
            self.board.pop(me, None)

    async def acomplete(self, request: Request) -> Response:  # pragma: no cover - not used here
        return await self.inner.acomplete(request)

    def stream(self, request: Request) -> Iterator[StreamChunk]:
        me = threading.get_ident()
        self.board[me] = (self.name, True, False)
        try:
            for chunk in self.inner.stream(request):
                if chunk.has_token:
                    self.board[me] = (self.name, True, True)
                yield chunk
        finally:
            self.board.pop(me, None)

    def astream(self, request: Request) -> Any:  # pragma: no cover - not used here
        return self.inner.astream(request)


def _request(i: int, max_tokens: int) -> Request:
    text = f"Write a short story number {i} about a lighthouse keeper and a storm."
    return Request((Message("user", text),), params={"max_tokens": max_tokens, "temperature": 0.0})


def replica_killed(
    work: Path,
    *,
    rounds: int = 2,
    workers: int = 6,
    before_kill_s: float = 3.0,
    down_s: float = 4.0,
    after_restart_s: float = 4.0,
    max_tokens: int = 48,
    token_wait_s: float = 20.0,
    time_limit: float = 240.0,
) -> dict[str, Any]:
    """Kill one of two llama.cpp replicas ``rounds`` times under load; count each call's outcome."""
    from tokenlean.server import LocalModelServer

    servers = [LocalModelServer(log_file=work / f"replica-{n}.log") for n in range(2)]
    board: dict[int, tuple[str, bool, bool]] = {}
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + time_limit
    examples: list[str] = []

    def note(what: str, detail: str = "") -> None:
        with lock:
            counts[what] += 1
            if detail and len(examples) < 10:
                examples.append(f"{what}: {detail[:200]}")

    def worker(w: int, group: ReplicaGroup) -> None:
        streaming = w % 2 == 1
        for i in range(w, 100_000, workers):
            if stop.is_set() or time.monotonic() > deadline:
                return
            req = _request(i, max_tokens)
            if not streaming:
                try:
                    resp = group.complete(req)
                except TokenleanError as exc:
                    note("non_streaming.failed", f"{type(exc).__name__}: {exc}")
                    continue
                note("non_streaming.ok" if resp.finish_reason else "non_streaming.no_finish_reason")
                continue
            got_token, final = False, None
            try:
                for chunk in group.stream(req):
                    got_token = got_token or chunk.has_token
                    if chunk.response is not None:
                        final = chunk.response
            except StreamInterrupted as exc:
                note("streaming.interrupted" if got_token else "streaming.failed_before_token", str(exc))
                continue
            except TokenleanError as exc:
                kind = "failed_after_token_other" if got_token else "failed_before_token"
                note(f"streaming.{kind}", f"{type(exc).__name__}: {exc}")
                continue
            if final is None or final.finish_reason is None:
                note("streaming.silently_truncated", repr(final)[:200])
            else:
                note("streaming.ok")

    kills: list[dict[str, Any]] = []
    t_start = time.monotonic()
    try:
        for s in servers:
            s.start()
        endpoints = [
            OpenAICompatibleEndpoint(s.base_url, s.model, name=f"replica-{n}", max_retries=0, timeout=60.0)
            for n, s in enumerate(servers)
        ]
        group = ReplicaGroup(
            [_Watched(e, board) for e in endpoints],  # type: ignore[list-item]
            strategy="round_robin",
            prefix_affinity=False,
            cooldown_s=2.0,
        )
        threads = [threading.Thread(target=worker, args=(w, group), daemon=True) for w in range(workers)]
        for t in threads:
            t.start()
        for rnd in range(rounds):
            victim = rnd % 2
            name = f"replica-{victim}"
            time.sleep(before_kill_s)
            # wait (bounded) until a stream on the victim has delivered a token, then kill it
            wait_until = time.monotonic() + token_wait_s
            while time.monotonic() < wait_until and time.monotonic() < deadline:
                if any(r == name and s and tok for r, s, tok in list(board.values())):
                    break
                time.sleep(0.01)
            snapshot = list(board.values())
            pid = servers[victim].pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            kills.append(
                {
                    "replica": name,
                    "stream_with_tokens_seen": any(r == name and s and t for r, s, t in snapshot),
                    "at_s": round(time.monotonic() - t_start, 1),
                    "non_streaming_in_flight": sum(1 for r, s, _ in snapshot if r == name and not s),
                    "streams_in_flight_with_tokens": sum(1 for r, s, t in snapshot if r == name and s and t),
                    "streams_in_flight_without_tokens": sum(
                        1 for r, s, t in snapshot if r == name and s and not t
                    ),
                }
            )
            time.sleep(down_s)
            servers[victim].stop()  # reap the killed process and close its log
            servers[victim].start()  # same port: the group's endpoint points at it again
            time.sleep(after_restart_s)
        stop.set()
        for t in threads:
            t.join(timeout=90.0)
        stuck = sum(t.is_alive() for t in threads)
        served = {r["name"]: r["served"] for r in group.stats()}
    finally:
        stop.set()
        for s in servers:
            s.stop()
    ns = {k.split(".", 1)[1]: v for k, v in counts.items() if k.startswith("non_streaming.")}
    st = {k.split(".", 1)[1]: v for k, v in counts.items() if k.startswith("streaming.")}
    return {
        "replicas": 2,
        "kills": kills,
        "non_streaming": {
            "calls": sum(ns.values()),
            "ok": ns.get("ok", 0),
            "failed": ns.get("failed", 0) + ns.get("no_finish_reason", 0),
            "in_flight_at_kill": sum(k["non_streaming_in_flight"] for k in kills),
        },
        "streaming": {
            "calls": sum(st.values()),
            "ok": st.get("ok", 0),
            "failed_before_token": st.get("failed_before_token", 0),
            "interrupted": st.get("interrupted", 0),
            "failed_after_token_other": st.get("failed_after_token_other", 0),
            "silently_truncated": st.get("silently_truncated", 0),
            "with_tokens_at_kill": sum(k["streams_in_flight_with_tokens"] for k in kills),
            "without_tokens_at_kill": sum(k["streams_in_flight_without_tokens"] for k in kills),
        },
        "served_per_replica": served,
        "workers_stuck": stuck,
        "examples": examples,
        "seconds": round(time.monotonic() - t_start, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tokenlean-replicas-") as tmp:
        out = replica_killed(Path(tmp), rounds=args.rounds)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
