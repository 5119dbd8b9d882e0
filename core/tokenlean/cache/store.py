"""Cache entries and where they live: the ``CacheStore`` protocol and its SQLite implementation.

SQLite in WAL mode is the embedded default because it gives, for free, what a cache shared by
threads and processes needs: a committed entry survives ``kill -9`` (the WAL is fsynced by the OS
on process death), readers never see a torn row, and several processes can write the same file.
Every process keeps its own in-memory vector index; ``changes_since`` lets it pick up entries and
deletions written by other processes (checked cheaply with ``PRAGMA data_version``). Deletions are
kept as a log for that purpose; the log is bounded (``max_deletions``), and a process that fell
further behind than the log reaches rebuilds its index from the entries instead of missing deletions.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from tokenlean.errors import CacheBackendError, ConfigError

__all__ = ["CacheEntry", "CacheStore", "Changes", "SQLiteStore", "dump_json"]


def dump_json(value: Any) -> str:
    """JSON for a stored answer: readable UTF-8, or ``\\u`` escapes when it holds a lone surrogate.

    A model can emit half an emoji (a stream cut between surrogates); SQLite and Redis only take
    valid UTF-8, and an answer already paid for must not fail its store. The escaped form reads
    back to the identical string.
    """
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


@dataclass(slots=True)
class CacheEntry:
    """One cached answer.

    ``payload`` is the JSON-able answer (an OpenAI-shaped response body, or whatever the adapter
    stores); ``chunks`` the stream pieces when the answer was streamed, so a hit replays a stream.
    ``min_score`` is the entry's own threshold, raised by ``report_wrong`` feedback.
    """

    namespace: str
    key: str
    query: str
    payload: Any
    embedding: np.ndarray | None = None
    chunks: list[str] | None = None
    created_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    hits: int = 0
    last_access: float = field(default_factory=time.time)
    min_score: float = 0.0
    id: int | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now if now is not None else time.time()) >= self.expires_at


@runtime_checkable
class CacheStore(Protocol):
    """Durable storage of entries; ids are positive integers assigned by ``put``."""

    def put(self, entry: CacheEntry) -> int: ...

    def get(self, entry_id: int) -> CacheEntry | None: ...

    def get_by_key(self, namespace: str, key: str) -> CacheEntry | None: ...

    def touch(self, entry_id: int, now: float | None = None) -> None: ...

    def set_min_score(self, entry_id: int, value: float) -> None: ...

    def delete(self, ids: Sequence[int]) -> None: ...

    def evict(self, max_entries: int, policy: str) -> list[tuple[int, str]]: ...

    def expire(self, now: float | None = None) -> list[tuple[int, str]]: ...

    def count(self) -> int: ...

    def all_vectors(self) -> Iterator[tuple[int, str, np.ndarray]]: ...

    def close(self) -> None: ...


class Changes(NamedTuple):
    """What an index must apply to catch up with the file, all read from one snapshot of it.

    ``last_id`` and ``last_seq`` are the marks to pass next time: everything up to them is covered
    by this answer. ``reset`` means the answer is not a delta: ``added`` holds every entry and the
    index must drop what it has first (first sync, or deletions since the old mark were pruned).
    """

    added: list[tuple[int, str, np.ndarray]]
    deleted: list[tuple[int, str]]
    last_id: int
    last_seq: int
    reset: bool


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    query TEXT NOT NULL,
    payload TEXT NOT NULL,
    chunks TEXT,
    embedding BLOB,
    created_at REAL NOT NULL,
    expires_at REAL,
    hits INTEGER NOT NULL DEFAULT 0,
    last_access REAL NOT NULL,
    min_score REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_key ON entries(namespace, key);
CREATE INDEX IF NOT EXISTS entries_access ON entries(last_access);
CREATE TABLE IF NOT EXISTS deletions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id INTEGER NOT NULL,
    namespace TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""

_COLS = "id, namespace, key, query, payload, chunks, embedding, created_at, expires_at, hits, last_access, min_score"


def _row(row: tuple[Any, ...]) -> CacheEntry:
    emb = np.frombuffer(row[6], dtype=np.float32).copy() if row[6] is not None else None
    return CacheEntry(
        id=int(row[0]),
        namespace=row[1],
        key=row[2],
        query=row[3],
        payload=json.loads(row[4]),
        chunks=json.loads(row[5]) if row[5] is not None else None,
        embedding=emb,
        created_at=row[7],
        expires_at=row[8],
        hits=int(row[9]),
        last_access=row[10],
        min_score=float(row[11]),
    )


class SQLiteStore:
    """A ``CacheStore`` in one SQLite file (WAL), safe for threads and for several processes.

    ``path=":memory:"`` keeps everything in RAM (one process only). ``synchronous="FULL"`` also
    survives power loss at the cost of an fsync per write; the default survives process crashes.

    ``max_deletions`` bounds the deletion log that other processes sync from: the oldest records
    beyond it are pruned, and a process whose mark predates the pruned ones gets a full reload from
    ``changes_since`` instead of a delta. Only a process that stayed idle through that many
    deletions pays for it, so the bound trades a rare reload for a log that cannot grow forever.
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        synchronous: str = "NORMAL",
        timeout: float = 10.0,
        max_deletions: int = 10_000,
    ):
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ConfigError(f"unknown synchronous mode {synchronous!r}")
        if isinstance(max_deletions, bool) or not isinstance(max_deletions, int) or max_deletions < 1:
            raise ConfigError(f"max_deletions must be a positive integer, got {max_deletions!r}")
        self.max_deletions = max_deletions
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=timeout, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            with self._tx():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
        except sqlite3.Error as exc:
            raise CacheBackendError(f"cannot open cache database {self.path}: {exc}") from exc

    # -- plumbing ------------------------------------------------------------------------------
    class _Tx:
        """A transaction holding the store's lock: ``BEGIN IMMEDIATE`` for writes (the write lock
        is taken up front), plain ``BEGIN`` for a read snapshot (every statement inside sees the
        file as of the first one)."""

        def __init__(self, store: SQLiteStore, begin: str = "BEGIN IMMEDIATE") -> None:
            self.store = store
            self.begin = begin

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:
                self.store._db.execute(self.begin)
            except BaseException:
                self.store._lock.release()
                raise
            return self.store._db

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            try:
                self.store._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            finally:
                self.store._lock.release()

    def _tx(self) -> SQLiteStore._Tx:
        return SQLiteStore._Tx(self)

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise CacheBackendError(f"cache database read failed: {exc}") from exc

    def _snapshot(self) -> SQLiteStore._Tx:
        return SQLiteStore._Tx(self, "BEGIN")

    def _write(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            with self._tx() as db:
                return db.execute(sql, args)
        except sqlite3.Error as exc:
            raise CacheBackendError(f"cache database write failed: {exc}") from exc

    # -- CacheStore ----------------------------------------------------------------------------
    def put(self, entry: CacheEntry) -> int:
        """Insert ``entry`` (replacing an entry of the same namespace and key); returns its id.

        The entry is durable when this returns: that is the acknowledgement.
        """
        emb = None if entry.embedding is None else np.asarray(entry.embedding, np.float32).tobytes()
        try:
            with self._tx() as db:
                old = db.execute(
                    "SELECT id FROM entries WHERE namespace=? AND key=?", (entry.namespace, entry.key)
                ).fetchall()
                for (old_id,) in old:
                    db.execute("DELETE FROM entries WHERE id=?", (old_id,))
                self._log_deletions(db, [(int(i), entry.namespace) for (i,) in old])
                cur = db.execute(
                    f"INSERT INTO entries({_COLS}) VALUES (NULL,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        entry.namespace,
                        entry.key,
                        entry.query,
                        dump_json(entry.payload),
                        None if entry.chunks is None else dump_json(entry.chunks),
                        emb,
                        entry.created_at,
                        entry.expires_at,
                        entry.hits,
                        entry.last_access,
                        entry.min_score,
                    ),
                )
                entry.id = int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise CacheBackendError(f"cache database write failed: {exc}") from exc
        return entry.id

    def bulk_put(self, entries: Sequence[CacheEntry]) -> None:
        """Insert many new entries in one transaction (imports, benchmarks); sets their ids."""
        try:
            with self._tx() as db:
                for e in entries:
                    emb = None if e.embedding is None else np.asarray(e.embedding, np.float32).tobytes()
                    cur = db.execute(
                        f"INSERT INTO entries({_COLS}) VALUES (NULL,?,?,?,?,?,?,?,?,?,?,?)",
                        (e.namespace, e.key, e.query, dump_json(e.payload),
                         None if e.chunks is None else dump_json(e.chunks), emb, e.created_at, e.expires_at,
                         e.hits, e.last_access, e.min_score),
                    )  # fmt: skip
                    e.id = int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise CacheBackendError(f"cache database write failed: {exc}") from exc

    def get(self, entry_id: int) -> CacheEntry | None:
        rows = self._read(f"SELECT {_COLS} FROM entries WHERE id=?", (entry_id,))
        return _row(rows[0]) if rows else None

    def get_many(self, ids: Sequence[int]) -> dict[int, CacheEntry]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return {
            int(r[0]): _row(r) for r in self._read(f"SELECT {_COLS} FROM entries WHERE id IN ({marks})", ids)
        }

    def get_by_key(self, namespace: str, key: str) -> CacheEntry | None:
        rows = self._read(
            f"SELECT {_COLS} FROM entries WHERE namespace=? AND key=? ORDER BY id DESC LIMIT 1",
            (namespace, key),
        )
        return _row(rows[0]) if rows else None

    def touch(self, entry_id: int, now: float | None = None) -> None:
        self._write(
            "UPDATE entries SET hits = hits + 1, last_access = ? WHERE id = ?",
            (now if now is not None else time.time(), entry_id),
        )

    def set_min_score(self, entry_id: int, value: float) -> None:
        self._write("UPDATE entries SET min_score = ? WHERE id = ?", (float(value), entry_id))

    @staticmethod
    def _seq(db: sqlite3.Connection, table: str) -> int:
        """The last id AUTOINCREMENT handed out for ``table`` (it survives deleting that row)."""
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (table,)).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _floor(db: sqlite3.Connection) -> int:
        """Deletion records up to this seq may have been pruned."""
        row = db.execute("SELECT v FROM meta WHERE k='deletions_floor'").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _set_floor(db: sqlite3.Connection, seq: int) -> None:
        db.execute("DELETE FROM deletions WHERE seq <= ?", (seq,))
        db.execute("INSERT OR REPLACE INTO meta(k, v) VALUES ('deletions_floor', ?)", (str(seq),))

    def _log_deletions(self, db: sqlite3.Connection, gone: Sequence[tuple[int, str]]) -> None:
        """Record deletions for other processes' indexes; prune the log past ``max_deletions``.

        Pruning waits until the log is well past the bound, so it runs once per many deletions
        rather than adding work to every one.
        """
        if not gone:
            return
        db.executemany("INSERT INTO deletions(entry_id, namespace) VALUES (?, ?)", gone)
        horizon = self._seq(db, "deletions") - self.max_deletions
        if horizon - self._floor(db) > self.max_deletions // 4:
            self._set_floor(db, horizon)

    def _delete_where(self, where: str, args: Sequence[Any]) -> list[tuple[int, str]]:
        try:
            with self._tx() as db:
                gone = [
                    (int(i), ns)
                    for i, ns in db.execute(f"SELECT id, namespace FROM entries WHERE {where}", args)
                ]
                db.executemany("DELETE FROM entries WHERE id=?", [(i,) for i, _ in gone])
                self._log_deletions(db, gone)
                return gone
        except sqlite3.Error as exc:
            raise CacheBackendError(f"cache database write failed: {exc}") from exc

    def delete(self, ids: Sequence[int]) -> None:
        if ids:
            self._delete_where(f"id IN ({','.join('?' * len(ids))})", list(ids))

    def evict(self, max_entries: int, policy: str = "lru") -> list[tuple[int, str]]:
        """Delete the least recently (``lru``) or least frequently (``lfu``) used entries over the cap."""
        over = self.count() - max_entries
        if over <= 0:
            return []
        order = {"lru": "last_access ASC, id ASC", "lfu": "hits ASC, last_access ASC, id ASC"}.get(policy)
        if order is None:
            raise ConfigError(f"unknown eviction policy {policy!r}; use 'lru' or 'lfu'")
        return self._delete_where(f"id IN (SELECT id FROM entries ORDER BY {order} LIMIT ?)", (over,))

    def expire(self, now: float | None = None) -> list[tuple[int, str]]:
        t = now if now is not None else time.time()
        return self._delete_where("expires_at IS NOT NULL AND expires_at <= ?", (t,))

    def count(self) -> int:
        return int(self._read("SELECT count(*) FROM entries")[0][0])

    def all_vectors(self) -> Iterator[tuple[int, str, np.ndarray]]:
        for i, ns, emb in self._read(
            "SELECT id, namespace, embedding FROM entries WHERE embedding IS NOT NULL"
        ):
            yield int(i), ns, np.frombuffer(emb, dtype=np.float32)

    # -- multi-process sync --------------------------------------------------------------------
    def data_version(self) -> int:
        """Changes whenever *another* connection commits (SQLite's ``PRAGMA data_version``)."""
        return int(self._read("PRAGMA data_version")[0][0])

    def marks(self) -> tuple[int, int]:
        """``(last entry id, last deletion seq)`` handed out so far, read from one snapshot."""
        try:
            with self._snapshot() as db:
                return self._seq(db, "entries"), self._seq(db, "deletions")
        except sqlite3.Error as exc:
            raise CacheBackendError(f"cache database read failed: {exc}") from exc

    def changes_since(self, last_id: int, last_seq: int) -> Changes:
        """Entries added after ``last_id`` and deletions after ``last_seq``, and the new marks.

        Everything is read in one read transaction, and the new marks are the ids that transaction
        had handed out: a row committed while this runs is either in the answer or after the new
        marks, never silently behind them. Nothing can appear later below the marks either: every
        write takes SQLite's single write lock before allocating an id and keeps it until it
        commits (a stale reader cannot start writing), so ids become visible in increasing order;
        the holes a rolled-back write leaves are never filled.

        A fresh index (``last_id == 0``) or one whose ``last_seq`` is older than the pruned part
        of the deletion log gets ``reset=True`` and every entry instead of a delta.
        """
        try:
            with self._snapshot() as db:
                new_id, new_seq = self._seq(db, "entries"), self._seq(db, "deletions")
                reset = last_id <= 0 or last_seq < self._floor(db)
                rows = db.execute(
                    "SELECT id, namespace, embedding FROM entries WHERE id > ? AND embedding IS NOT NULL",
                    (0 if reset else last_id,),
                ).fetchall()
                dels = (
                    []
                    if reset
                    else db.execute(
                        "SELECT entry_id, namespace FROM deletions WHERE seq > ? ORDER BY seq", (last_seq,)
                    ).fetchall()
                )
        except sqlite3.Error as exc:
            raise CacheBackendError(f"cache database read failed: {exc}") from exc
        added = [(int(i), ns, np.frombuffer(emb, dtype=np.float32)) for i, ns, emb in rows]
        return Changes(added, [(int(i), ns) for i, ns in dels], new_id, new_seq, reset)

    def namespace_vectors(self, namespace: str) -> list[tuple[int, np.ndarray]]:
        """Every embedded entry of ``namespace`` (to load one index shard on demand)."""
        return [
            (int(i), np.frombuffer(emb, dtype=np.float32))
            for i, emb in self._read(
                "SELECT id, embedding FROM entries WHERE namespace=? AND embedding IS NOT NULL ORDER BY id",
                (namespace,),
            )
        ]

    def stats(self) -> dict[str, Any]:
        row = self._read(
            "SELECT count(*), coalesce(sum(hits),0), count(DISTINCT namespace), "
            "coalesce(sum(length(payload) + length(query) + coalesce(length(embedding),0)),0) FROM entries"
        )[0]
        return {"entries": int(row[0]), "hits": int(row[1]), "namespaces": int(row[2]), "bytes": int(row[3])}

    def clear(self) -> None:
        """Delete every entry; other processes see a pruned log and rebuild (one row, not one each)."""
        try:
            with self._tx() as db:
                db.execute("DELETE FROM entries")
                db.execute("INSERT INTO deletions(entry_id, namespace) VALUES (0, '')")
                self._set_floor(db, self._seq(db, "deletions"))
        except sqlite3.Error as exc:
            raise CacheBackendError(f"cache database write failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()
