"""The embedded backend under concurrency and crashes: nothing acknowledged is ever lost or torn.

These drive ``EmbeddedBackend`` (SQLite + faiss) directly with random unit vectors so that child
processes start in a fraction of a second (no torch); the semantic logic above it is covered in
``test_semantic.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from tokenlean.cache.backends import EmbeddedBackend
from tokenlean.cache.store import CacheEntry

CORE = str(Path(__file__).resolve().parents[3] / "core")

WRITER = textwrap.dedent(
    """
    import hashlib, json, sys, numpy as np
    sys.path.insert(0, {core!r})
    from tokenlean.cache.backends import EmbeddedBackend
    from tokenlean.cache.store import CacheEntry
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    backend = EmbeddedBackend(path)
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    for i in range(n):
        vec = rng.normal(size=16).astype("float32"); vec /= np.linalg.norm(vec)
        body = {{"text": tag + "-" + str(i) + "-" + "x" * (i % 50)}}
        body["sha"] = hashlib.sha256(body["text"].encode()).hexdigest()
        entry = CacheEntry(namespace="ns", key=tag + str(i), query=tag + str(i), payload=body, embedding=vec)
        backend.put(entry, None)
        print(entry.id, flush=True)  # acknowledged: durable from here on
    """
)


def _vec(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=16).astype(np.float32)
    return v / np.linalg.norm(v)


def _entry(tag: str, i: int, vec: np.ndarray) -> CacheEntry:
    text = f"{tag}-{i}-" + "y" * (i % 40)
    body = {"text": text, "sha": hashlib.sha256(text.encode()).hexdigest()}
    return CacheEntry(namespace="ns", key=f"{tag}{i}", query=f"{tag}{i}", payload=body, embedding=vec)


def _intact(entry: CacheEntry) -> bool:
    body = entry.payload
    return hashlib.sha256(body["text"].encode()).hexdigest() == body["sha"]


def _writer(tmp_path: Path) -> Path:
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(core=CORE))
    return script


def test_eight_threads_and_two_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    backend = EmbeddedBackend(path)
    script = _writer(tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), f"proc{k}", "60"], stdout=subprocess.PIPE, text=True
        )
        for k in range(2)
    ]
    errors: list[BaseException] = []
    vectors: dict[str, np.ndarray] = {}
    lock = threading.Lock()

    def work(t: int) -> None:
        rng = np.random.default_rng(t)
        try:
            for i in range(40):
                vec = _vec(rng)
                backend.put(_entry(f"t{t}", i, vec), None)
                with lock:
                    vectors[f"t{t}{i}"] = vec
                for entry, _ in backend.search("ns", vec, 3):  # concurrent readers see whole rows only
                    assert _intact(entry)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert not errors, errors
    assert all(p.returncode == 0 for p in procs)
    acked = [int(x) for out in outs for x in out.split()]
    assert len(acked) == 120
    assert backend.store.count() == 8 * 40 + 120
    # the other processes' writes are visible to this process's index
    other = backend.store.get(acked[-1])
    assert other is not None and other.embedding is not None
    found = backend.search("ns", other.embedding, 1)
    assert found and found[0][0].id == acked[-1]
    for key, vec in list(vectors.items())[:50]:
        top = backend.search("ns", vec, 1)
        assert top and top[0][0].key == key and _intact(top[0][0])
    reopened = EmbeddedBackend(path)
    rows = reopened.store.get_many(acked)
    assert len(rows) == 120 and all(_intact(e) for e in rows.values())


def test_kill_9_during_writes_keeps_every_acknowledged_entry(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    script = _writer(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), "crash", "100000"], stdout=subprocess.PIPE, text=True
    )
    acked: list[int] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while len(acked) < 300 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)  # mid-write: the child is still inserting
    proc.wait(timeout=10)
    acked += [int(x) for x in proc.stdout.read().split() if x.strip().isdigit()]
    assert len(acked) >= 300
    backend = EmbeddedBackend(path)
    rows = backend.store.get_many(acked)
    assert set(rows) == set(acked), f"lost {len(set(acked) - set(rows))} acknowledged entries"
    assert all(_intact(e) for e in rows.values())
    last = rows[acked[-1]]
    assert last.embedding is not None
    assert backend.search("ns", last.embedding, 1)[0][0].id == acked[-1]  # index rebuilt on start
    json.dumps(backend.stats())
