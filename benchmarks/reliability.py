"""Reliability: the cache's promises under crashes, sharing processes and many tenants, in figures.

    python benchmarks/reliability.py [--quick] [--json OUT]

Everything runs on this machine (files in a temporary directory); every loop is bounded in count
and in time and stops by itself. What it measures (``not_measured`` in the JSON would list anything
left out, so no zero below stands for a missing figure):

* ``faults.sqlite_kill9`` — an application process stores entries in a SQLite (WAL) cache and
  prints each acknowledged store; it is killed with SIGKILL mid-write; a fresh process reopens the
  file and looks every acknowledged entry up. Figure: acknowledged N, lost (must be 0).
* ``faults.redis_kill9`` — the same writer on a Redis Stack backend, killed the same way; then the
  Redis server itself is killed with SIGKILL and restarted on its append-only file, started with
  ``appendfsync always`` (every acknowledged write fsynced first; Redis's default ``everysec``
  can lose up to a second of acknowledged writes when the server dies). Figure: lost (must be 0).
* ``faults.redis_restart`` — user calls (lookup; on a miss a stand-in model answers and the answer
  is stored) go on while Redis is killed and, later, restarted. Figures: failed user calls (must
  be 0), wrong answers (must be 0), and the time from the restart to the first cache hit.
* ``faults.sqlite_8_processes`` — eight processes write to one cache file at once while syncing
  their in-memory indexes; when all are done each syncs once more and reports what its index
  holds. Figure: acknowledged entries missing from some other process's index (must be 0).
* ``faults.replica_killed`` — two real llama.cpp servers behind a ``ReplicaGroup``; worker threads
  keep non-streaming and streaming calls going; one replica is killed with SIGKILL (as soon as a
  stream it serves has delivered a token), restarted later, then the other (see
  ``reliability_replicas.py``). Figures: non-streaming calls failed (must be 0, also those in
  flight on the killed replica), streams that failed before their first token (must be 0),
  streams cut after tokens that ended with the explicit ``StreamInterrupted`` error, and streams
  that ended silently truncated (must be 0).
* ``load`` — an open-loop request rate (half the stack's measured capacity) of async calls through
  the LangChain agent middleware stack (layout + compaction + cache + metering) and, on the same
  schedule, a bare agent, both against a local stub upstream (see ``reliability_load.py``).
  Figures: errors per arm (must be 0), latency p50 / p99 per arm and the added latency.
* ``soak`` — 1,000,000 metered calls (default ``Meter``, one task per 20 calls) and 100,000 cache
  entries (embedded SQLite file + faiss, semantic tier on the static embedder when available) in
  one process. Figures: RSS at start, after a warm-up tenth, and at the end; growth after warm-up.
  The cache keeps every entry's vector in memory (as 8-bit codes plus HNSW links; ``max_entries``
  bounds it), so the cache part is reported on its own, from before its first entry and after
  a warm-up tenth.
* ``fuzz`` — hypothesis-generated bad input (malformed messages, lone surrogates and non-UTF-8,
  a 5 MB message, a tool message without its call, negative / NaN / infinite ratios and params) at
  every public entry point and adapter (see ``reliability_fuzz.py``). Figures: untyped exceptions
  escaping (must be 0) and calls past their deadline (must be 0).
* ``isolation`` — 50 tenants store their own answer to the same questions; random lookups (exact
  and reworded, semantic tier on the static embedder when available) must only ever return the
  asking tenant's answer. Figure: cross-tenant hits (must be 0).

JSON: ``{"faults": {...}, "load": {...}, "fuzz": {...}, "isolation": {...}, "not_measured": [...]}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
CORE = str(ROOT / "core")
if CORE not in sys.path:
    sys.path.insert(0, CORE)

NOT_MEASURED: list[str] = []  # every figure issue 15 asks for is measured

# -- kill -9 mid-write ---------------------------------------------------------------------------

_WRITER = """
import sys
sys.path.insert(0, {core!r})
from tokenlean.cache import RedisBackend, SemanticCache
target = sys.argv[1]
backend = RedisBackend(target, prefix="k9:") if target.startswith("redis://") else target
cache = SemanticCache(backend, semantic=False)
start = int(sys.argv[2])
for i in range(start, start + 10_000_000):
    if cache.store("question %d" % i, "answer %d" % i).stored:
        print(i, flush=True)  # acknowledged: store() returned
"""


_CHECK = """
import sys, json
sys.path.insert(0, CORE)
from tokenlean.cache import RedisBackend, SemanticCache
target = sys.argv[1]
c = SemanticCache(RedisBackend(target, prefix="k9:") if target.startswith("redis://") else target, semantic=False)
ids = json.loads(sys.stdin.read())
print(json.dumps([i for i in ids if c.lookup(f"question {i}").text != f"answer {i}"]))
"""


def kill9(
    workdir: Path,
    rounds: int,
    acks_per_round: int,
    time_limit: float,
    target: str | None = None,
    crash_server: Any = None,
) -> dict[str, Any]:
    """Kill the writer with SIGKILL after ``acks_per_round`` acknowledged stores, ``rounds`` times.

    ``target`` is a SQLite path (default: a file in ``workdir``) or a ``redis://`` URL; with
    ``crash_server`` (a ``RedisStackServer``) the server is killed and restarted before the check.
    """
    path = target or str(workdir / "kill9.db")
    script = workdir / "kill9_writer.py"
    script.write_text(_WRITER.format(core=CORE))
    acked: list[int] = []
    start = 0
    for _ in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(start)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        got = 0
        deadline = time.monotonic() + time_limit
        try:
            while got < acks_per_round and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                acked.append(int(line))
                got += 1
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
        start = (max(acked) + 1) if acked else start
        start += 1_000_000  # the next writer's keys never collide with a half-written one
    if crash_server is not None:
        crash_server.kill()
        crash_server.start()
    # a fresh process reads everything back
    check = _CHECK.replace("CORE", repr(CORE))
    out = subprocess.run(
        [sys.executable, "-c", check, str(path)],
        input=json.dumps(acked),
        capture_output=True,
        text=True,
        check=True,
    )
    lost = json.loads(out.stdout)
    result: dict[str, Any] = {"rounds": rounds, "acknowledged": len(acked), "lost": len(lost)}
    if crash_server is not None:
        result["server"] = f"killed and restarted, appendfsync {crash_server.appendfsync}"
    else:
        result["journal"] = "WAL, synchronous=NORMAL"
    return result


def redis_restart(url: str, server: Any, calls: int, down_after: int, down_calls: int) -> dict[str, Any]:
    """User calls through a Redis-backed cache while the server is killed and later restarted."""
    from tokenlean.cache import RedisBackend, SemanticCache

    cache = SemanticCache(RedisBackend(url, prefix="rs:", retry_interval=0.2), semantic=False)
    questions = [f"restart question {i}" for i in range(50)]

    def model(q: str) -> str:  # the stand-in for a model call: always right
        return f"answer to {q}"

    failed = wrong = hits = down_count = 0
    restarted_at: float | None = None
    recovery_s: float | None = None
    call_s: list[float] = []
    n = -1
    while True:
        n += 1
        # every planned call, then (bounded) until the cache serves again after the restart
        if n >= calls and (
            restarted_at is None or recovery_s is not None or time.monotonic() > restarted_at + 10
        ):
            break
        if n == down_after:
            server.kill()
        if n == down_after + down_calls:
            server.start()
            restarted_at = time.monotonic()
        q = questions[n % len(questions)]
        t0 = time.perf_counter()
        try:
            r = cache.lookup(q)
            answer = r.text if r.hit else model(q)
            if not r.hit:
                cache.store(q, answer)
        except Exception:  # what the promise excludes: a user call that fails because of the cache
            failed += 1
            continue
        call_s.append(time.perf_counter() - t0)
        hits += r.hit
        if r.hit and restarted_at is not None and recovery_s is None:
            recovery_s = time.monotonic() - restarted_at
        if down_after <= n < down_after + down_calls:
            down_count += 1
        wrong += answer != model(q)
    call_s.sort()
    return {
        "calls": n,
        "calls_while_down": down_count,
        "failed_user_calls": failed,
        "wrong_answers": wrong,
        "hits": hits,
        "recovery_s": None if recovery_s is None else round(recovery_s, 3),
        "call_p99_ms": round(call_s[int(0.99 * (len(call_s) - 1))] * 1000, 2) if call_s else None,
    }


# -- eight processes, one file -------------------------------------------------------------------

_SHARER = """
import sys, json, time
import numpy as np
sys.path.insert(0, {core!r})
from tokenlean.cache.backends import EmbeddedBackend
from tokenlean.cache.store import CacheEntry
path, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
backend = EmbeddedBackend(path)
rng = np.random.default_rng(me)
probe = np.ones(8, np.float32) / np.sqrt(8)
print("ready", flush=True)
sys.stdin.readline()
acked = []
for j in range(n):
    key = "w%d-%d" % (me, j)
    vec = rng.normal(size=8).astype("float32")
    backend.put(CacheEntry(namespace="ns", key=key, query=key, payload=j, embedding=vec / np.linalg.norm(vec)), None)
    acked.append(key)
    if j % 25 == 0:
        backend.search("ns", probe, 1)  # sync with the other writers while they write
print(json.dumps(acked), flush=True)
sys.stdin.readline()  # every writer is done: one last sync
backend.search("ns", probe, 1)
print(json.dumps(sorted(backend.index.ids("ns"))), flush=True)
"""


def sqlite_shared(workdir: Path, processes: int, per_process: int, time_limit: float) -> dict[str, Any]:
    import sqlite3

    path = workdir / "shared.db"
    script = workdir / "sharer.py"
    script.write_text(_SHARER.format(core=CORE))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), str(i), str(per_process)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        acked: list[str] = []
        for p in procs:
            assert p.stdout is not None
            acked.extend(json.loads(p.stdout.readline()))
        elapsed = time.monotonic() - t0
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("sync\n")
            p.stdin.flush()
        seen = []
        for p in procs:
            assert p.stdout is not None
            seen.append(set(json.loads(p.stdout.readline())))
        for p in procs:
            p.wait(timeout=time_limit)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    with sqlite3.connect(path) as db:
        ids = dict(db.execute("SELECT key, id FROM entries WHERE namespace = 'ns'"))
    missing_in_file = sum(1 for k in acked if k not in ids)
    unseen = sum(1 for index in seen for k in acked if k in ids and ids[k] not in index)
    return {
        "processes": processes,
        "acknowledged": len(acked),
        "missing_from_file": missing_in_file,
        "unseen_by_another_process": unseen,
        "write_seconds": round(elapsed, 2),
    }


# -- tenant isolation ----------------------------------------------------------------------------

QUESTIONS = [
    "How do I reset my password?",
    "What is the refund policy?",
    "How can I change my billing address?",
    "Where do I download my invoices?",
    "How do I cancel my subscription?",
    "Can I add another user to my account?",
    "How do I enable two-factor authentication?",
    "What payment methods do you accept?",
    "How do I export my data?",
    "Why was my card declined?",
]
REWORDINGS = ["{q}", "{q_lower}", "Please tell me: {q}", "{q} Thanks!", "hi, {q_lower}"]


def isolation(tenants: int, lookups: int, seed: int = 0) -> dict[str, Any]:
    from tokenlean.cache import SemanticCache

    embedder = None
    try:
        from tokenlean.embeddings import get_static_embedder

        embedder = get_static_embedder()
        embedder.embed(["warm up"])
    except Exception as exc:  # no embeddings extra: the exact tier alone is still checked
        print(f"isolation: semantic tier off ({type(exc).__name__}: {exc})", file=sys.stderr)
    cache = SemanticCache(semantic=embedder is not None, embedder=embedder)
    for t in range(tenants):
        for qi, q in enumerate(QUESTIONS):
            cache.store(q, f"tenant {t} answer {qi}", tenant=f"t{t}")
    rng = random.Random(seed)
    hits = cross = wrong = 0
    semantic = 0
    for _ in range(lookups):
        t = rng.randrange(tenants)
        qi = rng.randrange(len(QUESTIONS))
        q = QUESTIONS[qi]
        text = rng.choice(REWORDINGS).format(q=q, q_lower=q.lower())
        r = cache.lookup(text, tenant=f"t{t}")
        if not r.hit:
            continue
        hits += 1
        semantic += r.tier == "semantic"
        if not (r.text or "").startswith(f"tenant {t} "):
            cross += 1
        elif r.text != f"tenant {t} answer {qi}":
            wrong += 1
    return {
        "tenants": tenants,
        "lookups": lookups,
        "hits": hits,
        "semantic_hits": semantic,
        "cross_tenant_hits": cross,
        "wrong_question_hits": wrong,
        "semantic_tier": embedder is not None,
    }


def redis_faults(work: Path, quick: bool) -> dict[str, Any]:
    """The Redis Stack figures, or why they could not be measured (no server here)."""
    from tokenlean.cache import RedisStackServer
    from tokenlean.errors import TokenleanError

    server = RedisStackServer(data_dir=work / "redis", persist=True, appendfsync="always")
    try:
        url = server.start()
    except TokenleanError as exc:
        reason = f"Redis Stack could not start: {exc}"
        print(f"reliability: {reason}", file=sys.stderr)
        return {"redis_kill9": {"skipped": reason}, "redis_restart": {"skipped": reason}}
    try:
        k9 = kill9(
            work,
            rounds=2 if quick else 10,
            acks_per_round=200 if quick else 2000,
            time_limit=60,
            target=url,
            crash_server=server,
        )
        rs = redis_restart(url, server, calls=600 if quick else 6000, down_after=200 if quick else 2000,
                           down_calls=200 if quick else 2000)  # fmt: skip
    finally:
        server.stop()
    return {"redis_kill9": k9, "redis_restart": rs}


def replica_fault(work: Path, quick: bool) -> dict[str, Any]:
    """Two llama.cpp replicas, one killed mid-run (``reliability_replicas``), or why not measured."""
    from reliability_replicas import replica_killed

    from tokenlean.errors import MissingDependencyError, ServerError
    from tokenlean.server import find_local_model

    try:
        if importlib.util.find_spec("llama_cpp") is None:
            raise MissingDependencyError("llama-cpp-python[server]", "server")
        find_local_model()
    except (MissingDependencyError, ServerError) as exc:
        reason = f"no local llama.cpp model: {exc}"
        print(f"reliability: {reason}", file=sys.stderr)
        return {"skipped": reason}
    if quick:
        return replica_killed(work, rounds=1, before_kill_s=1.0, down_s=2.0, after_restart_s=1.0)
    return replica_killed(work, rounds=4, before_kill_s=3.0, down_s=4.0, after_restart_s=6.0, time_limit=400)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def soak(work: Path, calls: int, entries: int) -> dict[str, Any]:
    """RSS over many metered calls, then over many cache entries (one process, bounded counts)."""
    import gc

    from tokenlean.cache import SemanticCache
    from tokenlean.metering import Meter
    from tokenlean.types import Usage

    meter = Meter()
    usage = Usage(1200, 80, cached_input_tokens=1024)
    start = _rss_mb()
    warm = max(1, calls // 10)
    after_warm = start
    t0 = time.monotonic()
    for i in range(calls):
        meter.record(
            model="gpt-4o-mini", usage=usage, task_id=f"task-{i // 20}", started_at=t0, ended_at=t0 + 0.5
        )
        if i == warm:
            gc.collect()
            after_warm = _rss_mb()
    meter.ledger.summary()
    gc.collect()
    end = _rss_mb()
    metering = {
        "calls": calls,
        "rss_start_mb": round(start, 1),
        "rss_after_warmup_mb": round(after_warm, 1),
        "rss_end_mb": round(end, 1),
        "growth_after_warmup_mb": round(end - after_warm, 1),
        "ledger_records_kept": len(meter.ledger),
        "summary_calls": meter.ledger.summary().calls,
        "seconds": round(time.monotonic() - t0, 1),
    }
    embedder = None
    try:
        from tokenlean.embeddings import get_static_embedder

        embedder = get_static_embedder()
        embedder.embed(["warm up"])
    except Exception as exc:
        print(f"soak: semantic tier off ({type(exc).__name__}: {exc})", file=sys.stderr)
    cache = SemanticCache(str(work / "soak.db"), semantic=embedder is not None, embedder=embedder)
    t0 = time.monotonic()
    warm = max(1, entries // 10)
    before = _rss_mb()
    after_warm = before
    for i in range(entries):
        cache.store(f"soak question {i} about item {i * 7919 % 100_003}", f"answer {i}")
        if i == warm:
            gc.collect()
            after_warm = _rss_mb()
    gc.collect()
    end = _rss_mb()
    caching = {
        "entries": entries,
        "semantic_tier": embedder is not None,
        "rss_before_mb": round(before, 1),
        "rss_after_warmup_mb": round(after_warm, 1),
        "rss_end_mb": round(end, 1),
        "growth_after_warmup_mb": round(end - after_warm, 1),
        "growth_mb": round(end - before, 1),
        "index_estimate_mb": round(cache.stats()["backend"].get("index_bytes", 0) / 2**20, 1),
        "seconds": round(time.monotonic() - t0, 1),
    }
    return {"metering": metering, "cache": caching}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small counts (under a minute)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    q = args.quick
    from reliability_fuzz import fuzz  # sibling modules (benchmarks/ is on sys.path when run)
    from reliability_load import load

    with tempfile.TemporaryDirectory(prefix="tokenlean-reliability-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        faults: dict[str, Any] = {
            "sqlite_kill9": kill9(
                work, rounds=2 if q else 10, acks_per_round=200 if q else 2000, time_limit=60
            ),
            "sqlite_8_processes": sqlite_shared(
                work, processes=8, per_process=150 if q else 2000, time_limit=120
            ),
        }
        faults.update(redis_faults(work, q))
        faults["replica_killed"] = replica_fault(work, q)
        loaded = load(duration_s=5 if q else 60)
        fuzzed = fuzz(quick=q)
        iso = isolation(tenants=50, lookups=5_000 if q else 100_000)
        soaked = soak(work, calls=100_000 if q else 1_000_000, entries=5_000 if q else 100_000)
        elapsed = time.monotonic() - t0
    out = {
        "faults": faults,
        "load": loaded,
        "fuzz": fuzzed,
        "isolation": iso,
        "soak": soaked,
        "not_measured": NOT_MEASURED,
    }
    out["seconds"] = round(elapsed, 1)
    rk, rr = faults["redis_kill9"], faults["redis_restart"]
    rows = [
        (
            "kill -9 mid-write (SQLite WAL)",
            f"acknowledged {faults['sqlite_kill9']['acknowledged']}",
            f"lost {faults['sqlite_kill9']['lost']}",
        ),
        (
            "kill -9 app + Redis (fsync always)",
            f"acknowledged {rk.get('acknowledged', '-')}",
            f"lost {rk.get('lost', rk.get('skipped'))}",
        ),
        (
            "Redis killed, later restarted",
            f"calls while down {rr.get('calls_while_down', '-')}",
            f"failed {rr.get('failed_user_calls', rr.get('skipped'))}, wrong {rr.get('wrong_answers', '-')}, "
            f"first hit {rr.get('recovery_s', '-')} s after restart",
        ),
        (
            "8 processes, one SQLite file",
            f"acknowledged {faults['sqlite_8_processes']['acknowledged']}",
            f"unseen by another process {faults['sqlite_8_processes']['unseen_by_another_process']}",
        ),
        (
            "50 tenants, same questions",
            f"hits {iso['hits']} / {iso['lookups']}",
            f"cross-tenant {iso['cross_tenant_hits']}",
        ),
    ]
    rk = faults["replica_killed"]
    if "skipped" in rk:
        rows.append(("llama.cpp replica killed", "not measured", rk["skipped"][:60]))
    else:
        ns, st = rk["non_streaming"], rk["streaming"]
        rows.append(
            (
                f"llama.cpp replica killed x{len(rk['kills'])}",
                f"calls {ns['calls']} + {st['calls']} streamed",
                f"failed {ns['failed']} (in flight {ns['in_flight_at_kill']}); streams: failed before a "
                f"token {st['failed_before_token']}, interrupted (explicit) {st['interrupted']} "
                f"+ {st['failed_after_token_other']}, silently truncated {st['silently_truncated']}",
            )
        )
    ld = loaded
    rows.append(
        (
            f"load: {ld['rate_rps']} req/s open loop, {ld['duration_s']} s",
            f"saturation {ld['saturation_rps']} req/s",
            f"errors {ld['errors']['bare']} bare / {ld['errors']['stack']} stack; added latency "
            f"p50 {ld['added_ms']['p50']} ms, p99 {ld['added_ms']['p99']} ms",
        )
    )
    rows.append(
        (
            f"fuzz: {fuzzed['entry_points']} entry points",
            f"calls {fuzzed['calls']:,}",
            f"untyped exceptions {fuzzed['untyped_exceptions']}, past deadline {fuzzed['past_deadline']}",
        )
    )
    sm, sc = soaked["metering"], soaked["cache"]
    rows.append(
        (
            f"soak: {sm['calls']:,} metered calls",
            f"RSS {sm['rss_after_warmup_mb']} -> {sm['rss_end_mb']} MB",
            f"growth after warm-up {sm['growth_after_warmup_mb']} MB",
        )
    )
    rows.append(
        (
            f"soak: {sc['entries']:,} cache entries",
            f"RSS {sc['rss_before_mb']} -> {sc['rss_end_mb']} MB",
            f"growth {sc['growth_mb']} MB ({sc['growth_after_warmup_mb']} MB after warm-up)",
        )
    )
    width = max(len(r[0]) for r in rows)
    print(f"reliability ({'quick' if q else 'full'}, {elapsed:.0f} s)")
    for name, a, b in rows:
        print(f"  {name:<{width}}  {a:<28} {b}")
    if NOT_MEASURED:
        print("  not measured yet: " + "; ".join(NOT_MEASURED))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
