"""Where omitted text lives, so that every marker can be expanded back, later and elsewhere.

A compaction marker (``[… 86 tokens omitted · om-… …]``) is a promise: the text it replaced can be
read back with ``expand_omitted``. When the compacted history is only a view, a process-local
store keeps that promise. When the history itself is rewritten (LangChain
``TokenleanCompactionMiddleware(rewrite_history=True)``, a checkpointed thread, a memory block), the marker
outlives the process and the compactor object, so the store must too.

``OmissionStore`` is the protocol; three stores implement it:

* ``SQLiteOmissionStore`` — the default: a file, durable across processes and restarts, shared by
  every compactor that opens the same path (WAL; readers never block the writer). Default path
  ``$TOKENLEAN_OMISSIONS`` or ``$XDG_DATA_HOME/tokenlean/omissions.sqlite3``
  (``~/.local/share/tokenlean/omissions.sqlite3``). **It holds prompt content** (tool outputs,
  documents, user text) in clear: place it where that data may live, and set ``retention`` to
  what your data policy allows. Rows older than ``retention`` (default 30 days since last
  stored) are deleted.
* ``RedisOmissionStore`` — the same for a fleet: every process reads what any process omitted;
  retention is a per-key TTL.
* ``MemoryOmissionStore`` — volatile and bounded (LRU): for tests, for a view-only compaction in
  one process, and where prompt content must never touch a disk. A rewritten history with a
  volatile store would lose data, so ``rewrite_history=True`` refuses it (``ConfigError``).

Handles are 128-bit content hashes (``om-`` + 32 hex digits): the same text always gets the same
handle, so stores need no coordination, and collisions are out of reach even across a fleet.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tokenlean.errors import CompactionError, ConfigError, UnknownHandleError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "DEFAULT_RETENTION",
    "HANDLE_PATTERN",
    "MemoryOmissionStore",
    "OmissionStore",
    "RedisOmissionStore",
    "SQLiteOmissionStore",
    "default_omission_path",
    "find_handle",
    "make_handle",
    "open_omission_store",
]

log = logging.getLogger("tokenlean.compaction.omissions")

DEFAULT_RETENTION = 30 * 24 * 3600.0
"""Seconds an omission is kept after it was last stored (``None`` keeps it forever)."""

# 32 hex digits now; 10 for handles issued before 128-bit handles (still looked up as given).
HANDLE_PATTERN = re.compile(r"om-(?:[0-9a-f]{32}|[0-9a-f]{10})(?![0-9a-f])")


def make_handle(text: str) -> str:
    """The 128-bit content handle of ``text`` (lone surrogates hashed as-is, never an error)."""
    return "om-" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def find_handle(text: str) -> str:
    """The handle inside ``text`` (a bare handle or a whole marker); the stripped text if none."""
    m = HANDLE_PATTERN.search(text)
    return m.group() if m else text.strip()


def default_omission_path() -> Path:
    """``$TOKENLEAN_OMISSIONS``, else ``$XDG_DATA_HOME/tokenlean/omissions.sqlite3``.

    A data directory, not a cache directory: what is in it cannot be rebuilt.
    """
    env = os.environ.get("TOKENLEAN_OMISSIONS")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    root = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return root / "tokenlean" / "omissions.sqlite3"


@runtime_checkable
class OmissionStore(Protocol):
    """Handle -> omitted text. ``durable`` says whether it outlives the process."""

    durable: bool

    def put(self, text: str) -> str:
        """Keep ``text``; return its handle."""
        ...

    def get(self, handle: str) -> str:
        """The text behind ``handle`` (``UnknownHandleError`` if unknown or expired)."""
        ...

    def __contains__(self, handle: object) -> bool: ...


def _check_retention(retention: float | None) -> float | None:
    if retention is not None and not retention > 0:
        raise ConfigError(f"retention is seconds > 0 (or None to keep forever), got {retention!r}")
    return None if retention is None else float(retention)


class MemoryOmissionStore:
    """Volatile, bounded (LRU) store: one process, gone when it exits."""

    durable = False

    def __init__(self, max_items: int = 50_000) -> None:
        if max_items < 1:
            raise ConfigError("max_items must be >= 1")
        self.max_items = max_items
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, text: str) -> str:
        handle = make_handle(text)
        with self._lock:
            self._items[handle] = text
            self._items.move_to_end(handle)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return handle

    def get(self, handle: str) -> str:
        key = find_handle(handle)
        with self._lock:
            try:
                return self._items[key]
            except KeyError:
                raise UnknownHandleError(handle) from None

    def __contains__(self, handle: object) -> bool:
        return isinstance(handle, str) and find_handle(handle) in self._items

    def __len__(self) -> int:
        return len(self._items)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS omissions (
    handle TEXT PRIMARY KEY,
    text BLOB NOT NULL,
    stored REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS omissions_stored ON omissions(stored);
"""


class SQLiteOmissionStore:
    """Durable store in one SQLite file, shared by processes (see the module docstring).

    Texts are stored as UTF-8 with lone surrogates passed through (``surrogatepass``), so any
    Python string a message can hold comes back identical. A ``put`` is committed before the
    handle is returned: a marker that reaches a checkpoint always has its text on disk. The file
    is opened lazily, on the first ``put`` or ``get``.
    """

    durable = True

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        retention: float | None = DEFAULT_RETENTION,
        timeout: float = 30.0,
    ) -> None:
        self.path = Path(path).expanduser() if path is not None else default_omission_path()
        if str(self.path) == ":memory:":
            raise ConfigError("an omission store on ':memory:' is volatile: use MemoryOmissionStore")
        self.retention = _check_retention(retention)
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                raise CompactionError(f"cannot open the omission store {self.path}: {exc}") from exc
            self._local.conn = conn
        return conn

    def put(self, text: str) -> str:
        return self.put_many([text])[0]

    def put_many(self, texts: Iterable[str]) -> list[str]:
        """Store several texts in one transaction; their handles in order."""
        rows = [(make_handle(t), t.encode("utf-8", "surrogatepass"), time.time()) for t in texts]
        if not rows:
            return []
        conn = self._conn()
        try:
            with self._lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        "INSERT INTO omissions(handle, text, stored) VALUES (?, ?, ?) "
                        "ON CONFLICT(handle) DO UPDATE SET stored = excluded.stored",
                        rows,
                    )
                    self._maybe_prune(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise CompactionError(f"cannot write the omission store {self.path}: {exc}") from exc
        return [r[0] for r in rows]

    def _maybe_prune(self, conn: sqlite3.Connection) -> None:
        now = time.time()
        if self.retention is None or now < self._next_prune:
            return
        self._next_prune = now + min(self.retention / 10, 3600.0)
        n = conn.execute("DELETE FROM omissions WHERE stored < ?", (now - self.retention,)).rowcount
        if n:
            log.info("omission store %s: %d entries past retention deleted", self.path, n)

    def get(self, handle: str) -> str:
        key = find_handle(handle)
        try:
            row = (
                self._conn().execute("SELECT text, stored FROM omissions WHERE handle = ?", (key,)).fetchone()
            )
        except sqlite3.Error as exc:
            raise CompactionError(f"cannot read the omission store {self.path}: {exc}") from exc
        if row is None or (self.retention is not None and row[1] < time.time() - self.retention):
            raise UnknownHandleError(handle)
        return bytes(row[0]).decode("utf-8", "surrogatepass")

    def __contains__(self, handle: object) -> bool:
        if not isinstance(handle, str):
            return False
        try:
            self.get(handle)
        except (UnknownHandleError, CompactionError):
            return False
        return True

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM omissions").fetchone()[0])

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class RedisOmissionStore:
    """Durable store in Redis (``redis`` extra): one key per omission, TTL = ``retention``.

    Durability is the server's: with ``appendonly yes`` and ``appendfsync always`` an
    acknowledged ``put`` survives a crash of the server too.
    """

    durable = True

    def __init__(
        self,
        client: Any = None,
        *,
        url: str | None = None,
        prefix: str = "tokenlean:om:",
        retention: float | None = DEFAULT_RETENTION,
    ) -> None:
        if client is None:
            if url is None:
                raise ConfigError("RedisOmissionStore needs a redis client or a url")
            try:
                import redis
            except ImportError as exc:  # pragma: no cover - depends on the environment
                from tokenlean.errors import MissingDependencyError

                raise MissingDependencyError("redis", extra="redis") from exc
            client = redis.Redis.from_url(url)
        self.client = client
        self.prefix = prefix
        self._errors = _redis_errors()
        self.retention = _check_retention(retention)

    def put(self, text: str) -> str:
        handle = make_handle(text)
        ttl = None if self.retention is None else max(1, int(self.retention))
        try:
            self.client.set(self.prefix + handle, text.encode("utf-8", "surrogatepass"), ex=ttl)
        except self._errors as exc:
            raise CompactionError(f"cannot write the omission store (redis): {exc}") from exc
        return handle

    def get(self, handle: str) -> str:
        try:
            raw = self.client.get(self.prefix + find_handle(handle))
        except self._errors as exc:
            raise CompactionError(f"cannot read the omission store (redis): {exc}") from exc
        if raw is None:
            raise UnknownHandleError(handle)
        return bytes(raw).decode("utf-8", "surrogatepass")

    def __contains__(self, handle: object) -> bool:
        if not isinstance(handle, str):
            return False
        try:
            return bool(self.client.exists(self.prefix + find_handle(handle)))
        except self._errors:
            return False


def _redis_errors() -> tuple[type[BaseException], ...]:
    """What a Redis client raises when the server is unreachable or refuses: not our own bugs."""
    try:
        from redis.exceptions import RedisError
    except ImportError:
        return (OSError,)
    return (RedisError, OSError)


def open_omission_store(store: OmissionStore | str | os.PathLike[str] | None) -> OmissionStore:
    """A store from what a user passed: a store, ``"memory"``, a SQLite path, or ``None`` (default)."""
    if store is None:
        return SQLiteOmissionStore()
    if isinstance(store, str) and store == "memory":
        return MemoryOmissionStore()
    if isinstance(store, (str, os.PathLike)):
        return SQLiteOmissionStore(store)
    if isinstance(store, OmissionStore):
        return store
    raise ConfigError(f"store must be an OmissionStore, 'memory' or a path, not {type(store).__name__}")
