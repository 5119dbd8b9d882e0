"""The index holds 8-bit codes by default; the similarities a cache decides on stay exact.

Quantised vectors only propose candidates: the embedded backend rescores them against the float32
embeddings stored with each entry. These tests use random unit vectors (no model) and compare
every score the backend returns with the float32 inner product, in flat and HNSW shards, and
check that the ranking matches an exact index's.
"""

from __future__ import annotations

import numpy as np
import pytest

from tokenlean.cache.backends import EmbeddedBackend
from tokenlean.cache.index import FaissIndex
from tokenlean.cache.store import CacheEntry
from tokenlean.errors import ConfigError


def _units(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _fill(backend: EmbeddedBackend, vecs: np.ndarray) -> None:
    backend.bulk_load(
        [
            CacheEntry(namespace="ns", key=f"k{i}", query=f"q{i}", payload=i, embedding=v)
            for i, v in enumerate(vecs)
        ]
    )


@pytest.mark.parametrize("hnsw_threshold", [10_000, 50])  # flat shard, then an HNSW one
def test_scores_are_exact_and_ranking_matches_float32(hnsw_threshold: int) -> None:
    vecs = _units(400, 32, seed=1)
    queries = _units(40, 32, seed=2)
    # near-duplicates of stored vectors too, where 8-bit rounding could swap close neighbours
    queries = np.vstack([queries, vecs[:40] + 0.01 * _units(40, 32, seed=3)])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    coded = EmbeddedBackend(hnsw_threshold=hnsw_threshold)
    exact = EmbeddedBackend(hnsw_threshold=hnsw_threshold, vectors="float32")
    _fill(coded, vecs)
    _fill(exact, vecs)
    assert isinstance(coded.index, FaissIndex) and not coded.index.exact
    for q in queries:
        got = coded.search("ns", q, 3)
        want = exact.search("ns", q, 3)
        assert len(got) == 3
        for entry, sim in got:
            assert sim == pytest.approx(float(np.dot(vecs[entry.payload], q)), abs=1e-6)
        assert [e.payload for e, _ in got] == [e.payload for e, _ in want]


def test_codes_take_a_quarter_of_float32_memory() -> None:
    vecs = _units(1000, 64, seed=4)
    sizes = {}
    for kind in ("sq8", "fp16", "float32"):
        index = FaissIndex(64, vectors=kind)
        index.add("ns", list(range(1000)), vecs)
        sizes[kind] = index.memory_bytes()
    assert sizes["sq8"] < sizes["fp16"] < sizes["float32"]
    assert FaissIndex(64, vectors="float32").exact and not FaissIndex(64).exact


def test_unknown_vector_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        FaissIndex(8, vectors="int4")
    with pytest.raises(ConfigError):
        EmbeddedBackend(vectors="float64")


def test_ids_out_of_order_removals_and_rebuilds_keep_the_map_right() -> None:
    """Ids normally arrive in increasing order (the labels array is the map); another process's
    write can arrive late, out of order, and removals and rebuilds must still find every id."""
    vecs = _units(60, 16, seed=5)
    index = FaissIndex(16, hnsw_threshold=10_000)
    index.add("ns", list(range(0, 40, 2)), vecs[0:40:2])  # even ids, increasing
    index.add("ns", [0, 2], vecs[[0, 2]])  # repeats are ignored
    assert len(index) == 20 and index.ids("ns") == set(range(0, 40, 2))
    index.add("ns", [5, 3, 3], vecs[[5, 3, 3]])  # late and out of order (and a duplicate)
    assert len(index) == 22 and {3, 5} <= index.ids("ns")
    index.remove("ns", [0, 2, 4, 6, 3, 999])  # enough dead to rebuild the shard
    live = (set(range(0, 40, 2)) | {3, 5}) - {0, 2, 4, 6, 3}
    assert index.ids("ns") == live and len(index) == len(live)
    for i in sorted(live):
        assert index.search("ns", vecs[i], 1)[0][0] == i
    index.add("ns", [41], vecs[[41]])
    assert index.search("ns", vecs[41], 1)[0][0] == 41 and len(index) == len(live) + 1
