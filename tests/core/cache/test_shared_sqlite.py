"""One SQLite cache file shared by processes: a reader's index sees every acknowledged write.

A writer process stores entries (some replacing earlier keys, which records deletions) while this
process syncs its in-memory index in a tight loop; after a final sync the index must hold exactly
the entries the file holds. Syncing from statements that each saw a different moment of the file
lost hundreds of entries per run for good (issue 14).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tokenlean.cache.backends import EmbeddedBackend
from tokenlean.cache.store import CacheEntry, SQLiteStore
from tokenlean.errors import ConfigError

CORE = str(Path(__file__).resolve().parents[3] / "core")

WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {core!r})
    from tokenlean.cache.store import CacheEntry, SQLiteStore
    path, n = sys.argv[1], int(sys.argv[2])
    store = SQLiteStore(path)
    vecs = np.random.default_rng(7).normal(size=(n, 8)).astype("float32")
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(n):
        key = "k%d" % (i - 5 if i % 10 == 9 else i)  # every tenth put replaces a key: a deletion
        store.put(CacheEntry(namespace="ns", key=key, query=key, payload=i, embedding=vecs[i]))
    print("done", flush=True)
    """
)


def _indexed(backend: EmbeddedBackend, namespace: str) -> set[int]:
    index = backend.index
    assert index is not None
    return index.ids(namespace)  # type: ignore[attr-defined]


def test_reader_index_misses_nothing_a_concurrent_writer_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(core=CORE))
    n = 10_000
    reader = EmbeddedBackend(path)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        probe = np.ones(8, np.float32) / np.sqrt(8)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        syncs = 0
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            reader.search("ns", probe, 1)  # each search first syncs with the file
            syncs += 1
        assert proc.wait(timeout=60) == 0
        assert proc.stdout.read().strip() == "done"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.search("ns", probe, 1)  # the final sync
    stored = {i for i, _, _ in reader.store.all_vectors()}
    indexed = _indexed(reader, "ns")
    missed, stale = stored - indexed, indexed - stored
    assert syncs > 10, "the reader never synced while the writer wrote"
    assert len(stored) == n - n // 10
    assert (len(missed), len(stale)) == (0, 0), (
        f"{len(missed)} missed, {len(stale)} stale after {syncs} syncs"
    )


ORDER_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {core!r})
    from tokenlean.cache.store import CacheEntry, SQLiteStore
    path, tag, n, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = SQLiteStore(path)
    vec = np.ones(4, np.float32)
    print("ready", flush=True)
    sys.stdin.readline()
    for start in range(0, n, batch):
        rows = [CacheEntry(namespace="ns", key=tag + str(i), query="q", payload=i, embedding=vec)
                for i in range(start, min(n, start + batch))]
        if batch == 1:
            store.put(rows[0])
        else:
            store.bulk_put(rows)  # several ids in one transaction
    """
)


def test_ids_become_visible_in_id_order_across_writer_processes(tmp_path: Path) -> None:
    """What one snapshot per sync relies on: no snapshot ever shows a hole that fills later.

    Two processes insert at once (one entry per transaction, five per transaction); every
    snapshot this process takes must hold exactly the ids 1..(last id handed out).
    """
    path = tmp_path / "order.db"
    SQLiteStore(path).close()  # the schema exists before anyone reads
    script = tmp_path / "order_writer.py"
    script.write_text(ORDER_WRITER.format(core=CORE))
    n = 3000
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), tag, str(n), str(batch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for tag, batch in (("a", 1), ("b", 5))
    ]
    con = sqlite3.connect(path, isolation_level=None, timeout=10)
    snapshots, holes, seen = 0, [], 0
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        deadline = time.monotonic() + 60
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            con.execute("BEGIN")
            count, top = con.execute("SELECT count(*), coalesce(max(id), 0) FROM entries").fetchone()
            seq = con.execute("SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name='entries'")
            handed_out = seq.fetchone()[0]
            con.execute("COMMIT")
            snapshots += 1
            if not count == top == handed_out:
                holes.append((count, top, handed_out))
            seen = max(seen, count)
        assert all(p.wait(timeout=60) == 0 for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        con.close()
    assert snapshots > 10 and seen > 0
    assert holes == []
    assert SQLiteStore(path).count() == 2 * n


def _store_rows(path: Path, sql: str) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


def _entry(key: str, vec: np.ndarray, namespace: str = "ns") -> CacheEntry:
    return CacheEntry(namespace=namespace, key=key, query=key, payload=key, embedding=vec)


def test_deletion_log_is_bounded_and_a_reader_behind_it_reloads(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    rng = np.random.default_rng(3)
    writer = SQLiteStore(path, max_deletions=40)
    reader = EmbeddedBackend(path)
    ids = []
    for i in range(200):
        e = _entry(f"k{i}", rng.normal(size=8).astype(np.float32))
        ids.append(writer.put(e))
    probe = np.ones(8, np.float32)
    reader.search("ns", probe, 1)
    assert _indexed(reader, "ns") == set(ids)
    # within the log's reach a reader gets a delta
    writer.delete(ids[:10])
    recent = writer.changes_since(*reader._marks)
    assert not recent.reset and sorted(i for i, _ in recent.deleted) == ids[:10]
    reader.search("ns", probe, 1)
    assert _indexed(reader, "ns") == set(ids[10:])
    # one at a time, far more deletions than the log keeps: it stays bounded...
    for i in ids[10:150]:
        writer.delete([i])
        assert _store_rows(path, "SELECT count(*) FROM deletions") <= 40 + 40 // 4 + 1
    # ...and a reader whose mark fell behind it reloads instead of keeping deleted entries
    behind = writer.changes_since(*reader._marks)
    assert behind.reset and behind.deleted == []
    assert sorted(i for i, _, _ in behind.added) == ids[150:]
    reader.search("ns", probe, 1)
    assert _indexed(reader, "ns") == set(ids[150:])
    # replacing a key logs its old id as deleted too
    writer.put(_entry("k199", probe))
    reader.search("ns", probe, 1)
    assert _indexed(reader, "ns") == {i for i, _, _ in writer.all_vectors()}
    assert len(_indexed(reader, "ns")) == 50


def test_clear_reaches_other_processes_without_logging_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "clear.db"
    a, b = EmbeddedBackend(path), EmbeddedBackend(path)
    vec = np.ones(8, np.float32) / np.sqrt(8)
    for i in range(30):
        a.put(_entry(f"k{i}", vec), None)
    assert len(b.search("ns", vec, 5)) == 5
    a.clear()
    assert _store_rows(path, "SELECT count(*) FROM deletions") == 0
    assert b.search("ns", vec, 5) == [] and _indexed(b, "ns") == set()
    a.put(_entry("again", vec), None)
    assert [e.key for e, _ in b.search("ns", vec, 5)] == ["again"]


def test_bad_max_deletions(tmp_path: Path) -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError):
            SQLiteStore(tmp_path / "x.db", max_deletions=bad)  # type: ignore[arg-type]
