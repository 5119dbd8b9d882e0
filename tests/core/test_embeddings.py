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


# -- the direct forward pass (default) against sentence-transformers' encode --------------------------

TEXTS = [
    "How do I reset my password?",
    "I forgot my password and need to change it.",
    "What is the boiling point of water at sea level?",
    "",
    "   leading and trailing spaces   ",
    "naïve café 東京 🙂",
    "broken \ud83d surrogate",
    "a",
    "Which is the best way to learn machine learning from scratch if I only have evenings free? " * 3,
    "token " * 5000,  # past the model's window: truncated like encode truncates
]


@pytest.fixture(scope="module")
def reference() -> object:
    """The plain ``SentenceTransformer.encode`` path, LRU off."""
    from tokenlean.embeddings import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(cache_size=0, backend="sentence-transformers")


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def fast(request: pytest.FixtureRequest) -> object:
    """The direct pass in each precision; a small batch size so a batch spans padded chunks."""
    from tokenlean.embeddings import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(cache_size=0, batch_size=3, backend="fast", precision=request.param)


def test_default_embedder_uses_the_fast_path(embedder) -> None:
    embedder.embed(["load"])
    assert embedder.backend_used in ("fast-float32", "fast-bfloat16")


def test_fast_path_agrees_with_sentence_transformers(fast, reference) -> None:
    ref = reference.embed(TEXTS)
    batch = fast.embed(TEXTS)
    single = np.stack([fast.embed_one(t) for t in TEXTS])
    assert fast.backend_used == f"fast-{fast.precision}"
    for got in (batch, single):
        assert got.shape == ref.shape and got.dtype == np.float32
        assert np.isfinite(got).all()
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        cos = (got * ref).sum(1)
        assert cos.min() >= (0.9999 if fast.precision == "float32" else 0.99), cos
    # what the cache compares: pair cosines barely move, and the paraphrase stays nearest
    sims, ref_sims = batch @ batch.T, ref @ ref.T
    assert np.abs(sims - ref_sims).max() < 0.01
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]


def test_fast_path_edge_cases(fast) -> None:
    assert fast.embed([]).shape == (0, fast.dim)
    v = fast.embed(["same text", "other text", "same text"])
    assert np.array_equal(v[0], v[2])
    with pytest.raises(InputError):
        fast.embed("not a list")
    with pytest.raises(InputError):
        fast.embed([b"bytes"])


def test_backend_options_are_checked() -> None:
    from tokenlean.embeddings import SentenceTransformerEmbedder
    from tokenlean.errors import ConfigError

    with pytest.raises(ConfigError):
        SentenceTransformerEmbedder(backend="onnx")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SentenceTransformerEmbedder(precision="int8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SentenceTransformerEmbedder(backend="fast", device="cuda")


def test_plain_backend_stays_available(reference) -> None:
    reference.embed(["load"])
    assert reference.backend_used == "sentence-transformers"
    assert reference._fast is None


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, tokenlean, tokenlean.embeddings\nprint('torch' in sys.modules)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"
