"""Search width and tombstones of the HNSW shards (issue 16, item 4: recall at scale).

A fixed ``efSearch`` of 64 found a planted paraphrase in about half the lookups of a 1M-entry shard:
the width now grows with the shard (``auto_ef_search``) and is handed to faiss with every search.
Removed entries are skipped by faiss during the search instead of over-asking for ``k`` plus every
tombstone. Timing and recall at scale are the benchmark's job (``benchmarks/semantic_cache.py
--only scale``); these tests pin the mechanics on small shards made HNSW by a low threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tokenlean.cache.index import FaissIndex, auto_ef_search
from tokenlean.errors import ConfigError


def _units(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _spy(index: FaissIndex, ns: str) -> list[tuple[int, Any]]:
    """Record ``(k, params)`` of every faiss search on ``ns``'s shard."""
    shard = index._shards[ns]
    real = shard.index.search
    calls: list[tuple[int, Any]] = []

    def search(x: np.ndarray, k: int, params: Any = None) -> Any:
        calls.append((k, params))
        return real(x, k, params=params)

    shard.index.search = search
    return calls


def test_auto_ef_search_grows_with_the_shard_and_is_capped() -> None:
    assert auto_ef_search(0) == auto_ef_search(100_000) == 64
    assert auto_ef_search(200_000) == 97
    assert auto_ef_search(1_000_000) == 255
    assert auto_ef_search(10**9) == 512
    sizes = [1, 10_000, 30_000, 100_000, 300_000, 1_000_000, 5_000_000]
    widths = [auto_ef_search(n) for n in sizes]
    assert widths == sorted(widths)


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "64"])
def test_ef_search_must_be_a_positive_int_or_none(bad: object) -> None:
    with pytest.raises(ConfigError):
        FaissIndex(16, ef_search=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", ["sq8", "float32"])
def test_hnsw_search_gets_the_scaled_or_fixed_width(codec: str) -> None:
    x = _units(300)
    scaled = FaissIndex(16, hnsw_threshold=50, vectors=codec)
    fixed = FaissIndex(16, hnsw_threshold=50, vectors=codec, ef_search=7)
    for index in (scaled, fixed):
        index.add("ns", list(range(300)), x)
        assert index._shards["ns"].hnsw
    calls = _spy(scaled, "ns")
    assert scaled.search("ns", x[5], 3)[0][0] == 5
    assert calls[-1][1].efSearch == auto_ef_search(300)
    calls = _spy(fixed, "ns")
    fixed.search("ns", x[5], 3)
    assert calls[-1][1].efSearch == 7


@pytest.mark.parametrize("hnsw_threshold", [50, 20_000])  # HNSW and flat shards
def test_tombstones_are_skipped_inside_the_search(hnsw_threshold: int) -> None:
    x = _units(400)
    index = FaissIndex(16, hnsw_threshold=hnsw_threshold, vectors="float32", ef_search=400)
    index.add("ns", list(range(1000, 1400)), x)
    query = x[7]
    order = np.argsort(-(x @ query))
    gone = [int(i) for i in order[:30]]  # the 30 nearest, under the fifth that forces a rebuild
    index.remove("ns", [1000 + i for i in gone])
    assert index._shards["ns"].dead  # still tombstones, not rebuilt away
    calls = _spy(index, "ns")
    found = index.search("ns", query, 5)
    assert calls[-1][0] == 5  # asks faiss for k, not k plus every tombstone
    assert [i for i, _ in found] == [1000 + int(i) for i in order[30:35]]
    # a removed id added back is live again and found
    index.add("ns", [1000 + gone[0]], x[gone[0]].reshape(1, -1))
    assert index.search("ns", query, 1)[0][0] == 1000 + gone[0]


def test_tombstone_bitmap_grows_past_the_first_bytes() -> None:
    x = _units(200)
    index = FaissIndex(16, hnsw_threshold=50, vectors="float32")
    index.add("ns", list(range(200)), x)
    index.remove("ns", [3, 150, 199])
    shard = index._shards["ns"]
    assert len(shard.dead_bits) * 8 >= 200
    for i in (3, 150, 199):
        assert index.search("ns", x[i], 1)[0][0] != i
    assert index.search("ns", x[100], 1)[0][0] == 100
