"""Omission stores: what a marker stands for survives the compactor, the process and the restart."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tokenlean.compaction import (
    Compactor,
    MemoryOmissionStore,
    OmissionStore,
    RedisOmissionStore,
    SQLiteOmissionStore,
    default_omission_path,
)
from tokenlean.compaction.omissions import HANDLE_PATTERN, find_handle, make_handle
from tokenlean.errors import ConfigError, UnknownHandleError

TEXTS = ["plain text", "ünïcødé · 中文 · emoji 🙂", "lone surrogate \ud800 kept", "", "x" * 100_000]


def test_handles_are_128_bit_content_hashes() -> None:
    h = make_handle("some omitted text")
    assert HANDLE_PATTERN.fullmatch(h) and len(h) == 3 + 32
    assert make_handle("some omitted text") == h != make_handle("some omitted text.")
    assert find_handle(f"[… 86 tokens omitted · {h} …]") == h
    assert find_handle("om-0123456789") == "om-0123456789"  # a pre-128-bit handle is still looked up


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_round_trip_is_exact(kind: str, tmp_path) -> None:
    store = MemoryOmissionStore() if kind == "memory" else SQLiteOmissionStore(tmp_path / "om.db")
    assert isinstance(store, OmissionStore)
    handles = [store.put(t) for t in TEXTS]
    assert [store.get(h) for h in handles] == TEXTS
    assert all(h in store for h in handles) and "om-" + "0" * 32 not in store
    with pytest.raises(UnknownHandleError):
        store.get("om-" + "0" * 32)


def test_sqlite_store_is_shared_by_compactors_and_processes(tmp_path) -> None:
    path = tmp_path / "om.db"
    doc = "\n\n".join(
        f"Paragraph {i}: the tower is {300 + i} metres tall and was built in {1880 + i}." for i in range(40)
    )
    res = Compactor(ratio=0.8, mode="lexical", store=path).compact(doc, query="tower 1899")
    assert res.omissions
    fresh = Compactor(store=path)  # a new compactor, as after a restart
    for om in res.omissions:
        a, b = om.ranges[0]
        assert fresh.expand_omitted(om.marker) == doc[a:b]
    code = "import sys; from tokenlean.compaction import SQLiteOmissionStore as S; print(S(sys.argv[1]).get(sys.argv[2]))"
    om = res.omissions[0]
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), om.handle], capture_output=True, text=True, check=True
    ).stdout
    a, b = om.ranges[0]
    assert out[:-1] == doc[a:b]


def test_default_store_is_durable_at_the_documented_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOKENLEAN_OMISSIONS", str(tmp_path / "x" / "om.db"))
    assert default_omission_path() == tmp_path / "x" / "om.db"
    comp = Compactor(ratio=0.5)
    assert isinstance(comp.store, SQLiteOmissionStore) and comp.store.durable
    h = comp.store.put("kept for later")
    assert (tmp_path / "x" / "om.db").exists() and SQLiteOmissionStore().get(h) == "kept for later"
    monkeypatch.delenv("TOKENLEAN_OMISSIONS")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_omission_path() == tmp_path / "data" / "tokenlean" / "omissions.sqlite3"


def test_retention_expires_old_entries(tmp_path, monkeypatch) -> None:
    store = SQLiteOmissionStore(tmp_path / "om.db", retention=60)
    old = store.put("old text")
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 120)
    with pytest.raises(UnknownHandleError):
        store.get(old)  # expired even before the pruner has run
    store._next_prune = 0.0
    fresh = store.put("fresh text")
    assert len(store) == 1 and store.get(fresh) == "fresh text"  # the pruner deleted the old row
    assert SQLiteOmissionStore(tmp_path / "om.db", retention=None).get(fresh) == "fresh text"


def test_bad_settings_are_typed_errors(tmp_path) -> None:
    for bad in (0, -1.0):
        with pytest.raises(ConfigError):
            SQLiteOmissionStore(tmp_path / "om.db", retention=bad)
    with pytest.raises(ConfigError):
        SQLiteOmissionStore(":memory:")
    with pytest.raises(ConfigError):
        MemoryOmissionStore(max_items=0)
    with pytest.raises(ConfigError):
        Compactor(store=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        RedisOmissionStore()


def test_memory_store_is_bounded() -> None:
    store = MemoryOmissionStore(max_items=3)
    handles = [store.put(str(i)) for i in range(5)]
    assert len(store) == 3 and handles[0] not in store and store.get(handles[-1]) == "4"


@pytest.mark.integration
def test_redis_store_round_trip_and_ttl(redis_stack: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_stack)
    store = RedisOmissionStore(client, prefix="test:om:", retention=3600)
    handles = [store.put(t) for t in TEXTS]
    other = RedisOmissionStore(url=redis_stack, prefix="test:om:")  # another process's view
    assert [other.get(h) for h in handles] == TEXTS
    assert 0 < client.ttl("test:om:" + handles[0]) <= 3600
    with pytest.raises(UnknownHandleError):
        other.get("om-" + "1" * 32)
    comp = Compactor(ratio=0.8, mode="lexical", store=store)
    res = comp.compact("\n\n".join(f"Line {i} about item {i * 3}." for i in range(60)), query="item 42")
    assert res.omissions and all(other.get(om.handle) for om in res.omissions)
