"""The Redis backend sends its HNSW search width with every query (issue 16, item 4).

The index's own ``EF_RUNTIME`` (20) found a planted paraphrase in about half the lookups of a
100k-entry index; the width now goes in the KNN clause, scaled with the indexed documents unless
fixed, so it also reaches indexes created before. Recall at scale is the benchmark's job.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tokenlean.cache.index import auto_ef_search
from tokenlean.cache.store import CacheEntry
from tokenlean.errors import ConfigError


def _units(n: int, dim: int = 16) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "64"])
def test_ef_runtime_must_be_a_positive_int_or_none(bad: object) -> None:
    pytest.importorskip("redis")
    from tokenlean.cache.redis_backend import RedisBackend

    with pytest.raises(ConfigError):
        RedisBackend("redis://127.0.0.1:1", ef_runtime=bad)  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.redis
@pytest.mark.parametrize("fixed", [None, 33])
def test_knn_query_carries_the_search_width(redis_stack: str, fixed: int | None) -> None:
    from tokenlean.cache.redis_backend import RedisBackend

    backend = RedisBackend(redis_stack, prefix=f"efr{fixed}:", ef_runtime=fixed, size_interval=0.0)
    backend.clear()
    try:
        x = _units(12)
        for i, v in enumerate(x):
            backend.put(CacheEntry(namespace="ns", key=f"k{i}", query=f"q{i}", payload=i, embedding=v), None)
        sent: list[tuple[Any, ...]] = []
        real = backend.client.execute_command

        def spy(*args: Any, **kwargs: Any) -> Any:
            sent.append(args)
            return real(*args, **kwargs)

        backend.client.execute_command = spy
        found = backend.search("ns", x[4], 2)
        assert found and found[0][0].key == "k4"
        search = next(a for a in sent if a[0] == "FT.SEARCH")
        assert "EF_RUNTIME $ef" in search[2]
        ef = search[search.index("ef") + 1]
        assert ef == str(fixed if fixed is not None else 3 * auto_ef_search(12))
        assert not backend.search("other", x[4], 2)  # the namespace filter still holds
    finally:
        backend.clear()
