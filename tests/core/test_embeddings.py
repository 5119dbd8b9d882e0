"""Embedders: the shared MiniLM and the static table distilled from it (real model, real files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tokenlean.errors import InputError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_static_embedder_keeps_meaning_at_the_coarse_level(static_embedder, embedder) -> None:
    texts = [
        "How do I reset my password?",
        "I forgot my password and need to change it.",
        "What is the boiling point of water at sea level?",
    ]
    v = static_embedder.embed(texts)
    assert v.shape == (3, embedder.dim) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]  # the paraphrase is nearest
    # the same ordering as the transformer it was distilled from
    t = embedder.embed(texts)
    assert (t[0] @ t[1] > t[0] @ t[2]) == (sims[0, 1] > sims[0, 2])


def test_static_embedder_edge_cases(static_embedder) -> None:
    v = static_embedder.embed(["", "   ", "naïve café 東京 🙂"])
    assert not v[0].any() and not v[1].any()  # nothing to average: a zero row, not NaN
    assert np.isfinite(v).all() and np.linalg.norm(v[2]) == pytest.approx(1.0, abs=1e-5)
    assert static_embedder.embed([]).shape == (0, static_embedder.dim)
    long = "token " * 5000  # truncated at max_tokens, not an error
    assert np.linalg.norm(static_embedder.embed([long])[0]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InputError):
        static_embedder.embed("not a list")
    with pytest.raises(InputError):
        static_embedder.embed([b"bytes"])


def test_static_table_is_cached_and_loads_without_torch(static_embedder, tmp_path: Path) -> None:
    """Once distilled, a new process embeds from the stored table: no transformer, no torch import."""
    table = static_embedder._path()
    assert table.exists()
    code = (
        "import sys\n"
        "from tokenlean.embeddings import StaticEmbedder\n"
        f"e = StaticEmbedder(cache_dir={str(table.parent)!r})\n"
        "v = e.embed(['hello world'])\n"
        "assert v.shape == (1, 384)\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


def test_corrupt_static_table_is_rebuilt(static_embedder, tmp_path: Path) -> None:
    from tokenlean.embeddings import StaticEmbedder

    fresh = StaticEmbedder(static_embedder.source, cache_dir=tmp_path)
    path = fresh._path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a numpy file")
    v = fresh.embed(["rebuilt from the model"])
    assert np.linalg.norm(v[0]) == pytest.approx(1.0, abs=1e-5)
    assert np.load(path).shape == (static_embedder._load()[0].shape)
    ref = static_embedder.embed(["rebuilt from the model"])
    assert np.allclose(v, ref, atol=1e-5)
