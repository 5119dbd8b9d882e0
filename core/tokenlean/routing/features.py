"""What a learned router sees of a prompt: its embedding, whole and in halves, and its length.

Shared by ``LearnedRouter`` and ``CheapestAdequateRouter`` so both featurise alike, and so a
saved router (``tokenlean.routing.persist``) is versioned against one embedder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tokenlean.errors import ConfigError, EmbedderMismatchError, EmptyInputError
from tokenlean.routing.outcomes import OutcomeTable

__all__ = ["PromptFeatures", "SegmentedEmbedder", "prompt_segments", "whole_prompt_view"]


def _standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(axis=0)
    sd = x.std(axis=0) + 1e-6
    return mu, sd


def prompt_segments(text: str) -> tuple[str, str]:
    """The first and the second half of a prompt's lines; ``(text, "")`` below three lines."""
    lines = text.strip().split("\n")
    if len(lines) < 3:
        return text, ""
    k = len(lines) // 2
    return "\n".join(lines[:k]), "\n".join(lines[k:])


class SegmentedEmbedder:
    """Embeds each prompt three times, side by side: whole, first half of its lines, second half.

    A mean-pooled vector blurs the parts of a prompt that say different things about who should
    answer it: the question and its answer choices, the instructions and the data. Keeping the
    halves apart lets the router weigh them separately. It helps where prompts have parts (a question
    and its choices, instructions and data) and changes nothing for one-paragraph prompts; finer
    cuts (thirds) did not help. ``benchmarks/routing.py`` measures it.
    """

    views = 3

    def __init__(self, base: Any) -> None:
        self.base = base
        self.name = f"{getattr(base, 'name', type(base).__name__)}+segments"
        self.dim = int(getattr(base, "dim", 0)) * self.views

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            raise EmptyInputError("no texts to embed")
        halves = [prompt_segments(t) for t in texts]
        # The static embedder rejects empty text; a blank second half embeds as a blank.
        vecs = np.asarray(
            self.base.embed(texts + [h for h, _ in halves] + [t or " " for _, t in halves]),
            dtype=np.float32,
        )
        n = len(texts)
        return np.hstack([vecs[:n], vecs[n : 2 * n], vecs[2 * n :]])


def whole_prompt_view(vectors: np.ndarray) -> np.ndarray:
    """The whole-prompt block of ``SegmentedEmbedder`` vectors."""
    return vectors[:, : vectors.shape[1] // SegmentedEmbedder.views]


class PromptFeatures:
    """What the learned routers see of a prompt: its embedding (whole and in halves) and its length.

    Shared by ``LearnedRouter`` and ``CheapestAdequateRouter`` so both featurise alike.
    """

    segments: bool
    _embedder: Any
    _center: np.ndarray | None
    _mu: np.ndarray | None
    _sd: np.ndarray | None

    def _init_features(self, embedder: Any, segments: bool) -> None:
        self._embedder = embedder
        self.segments = segments
        self._center = None
        self._mu = None
        self._sd = None

    @property
    def embedder(self) -> Any:
        """What ``embed`` uses: the given (default: static) embedder, segmented if asked."""
        if self._embedder is None:
            from tokenlean.embeddings import get_static_embedder

            self._embedder = get_static_embedder()
        if self.segments and not isinstance(self._embedder, SegmentedEmbedder):
            self._embedder = SegmentedEmbedder(self._embedder)
        return self._embedder

    @property
    def base_embedder(self) -> Any:
        """The embedder under the segmentation (the one a saved router is versioned against)."""
        emb = self.embedder
        return emb.base if isinstance(emb, SegmentedEmbedder) else emb

    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """The router's vectors for ``prompts`` (to precompute ``vectors=`` once for many fits)."""
        return np.asarray(self.embedder.embed(list(prompts)), dtype=np.float32)

    def features(
        self,
        prompts: Sequence[str] | None,
        vectors: np.ndarray | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Embedding plus log length (length alone is RouteLLM's weakest useful baseline signal).

        The embedding is centred on the training prompts' mean and re-normalised (each segment
        on its own): all prompts share a large common direction (even unrelated texts have a high
        cosine), and what tells prompts apart is the small rest, which
        this puts on one scale. Without ``prompts`` (privacy mode) give ``vectors`` and
        ``lengths`` (each prompt's length in characters).
        """
        if prompts is None and (vectors is None or lengths is None):
            raise ConfigError("without prompts, give vectors= (router.embed output) and lengths=")
        if vectors is None:
            assert prompts is not None
            vecs = self.embed(prompts)
        else:
            vecs = np.asarray(vectors, dtype=np.float32)
        views = SegmentedEmbedder.views if self.segments else 1
        if vecs.ndim != 2 or vecs.shape[1] % views:
            raise ConfigError(
                f"vectors of shape {vecs.shape} are not this router's embeddings: use router.embed(prompts)"
            )
        if self._center is None:
            self._center = vecs.mean(axis=0)
        elif self._center.shape[0] != vecs.shape[1]:
            raise ConfigError(
                f"vectors have {vecs.shape[1]} dimensions, the router was fitted on {self._center.shape[0]}"
            )
        if lengths is not None:
            chars = np.asarray(lengths, dtype=np.float64)
            if chars.shape != (len(vecs),) or not np.isfinite(chars).all() or (chars < 0).any():
                raise ConfigError("lengths must be one prompt length (characters, >= 0) per vector")
        else:
            assert prompts is not None
            if len(prompts) != len(vecs):
                raise ConfigError(f"{len(prompts)} prompts but {len(vecs)} vectors")
            chars = np.array([len(p) for p in prompts], dtype=np.float64)
        blocks = (vecs - self._center).reshape(len(vecs), views, -1)
        blocks = blocks / (np.linalg.norm(blocks, axis=2, keepdims=True) + 1e-9)
        vecs = blocks.reshape(len(vecs), -1)
        lens = np.log1p(chars.astype(np.float32))[:, None]
        return np.hstack([vecs, lens / 10.0])

    def _fit_features(
        self,
        prompts: Sequence[str] | None,
        vectors: np.ndarray | None,
        lengths: Sequence[int] | np.ndarray | None = None,
        *,
        standardize: bool = True,
    ) -> np.ndarray:
        x = self.features(prompts, vectors, lengths)
        if standardize:
            self._mu, self._sd = _standardize(x[:, -1:])
            x = self._norm(x)
        return x

    def _norm(self, x: np.ndarray) -> np.ndarray:
        if self._mu is None or self._sd is None:
            return x
        x = x.copy()
        x[:, -1:] = (x[:, -1:] - self._mu) / self._sd * 0.1
        return x

    def _table_inputs(self, table: OutcomeTable) -> tuple[list[str] | None, np.ndarray | None]:
        """``(texts, vectors)`` for an outcome table: texts when every row has one (the router
        embeds them), else vectors, the privacy-mode rows' own and the embedded text rows'."""
        if table.has_text:
            return [p for p in table.prompts if p is not None], None
        name = getattr(self.embedder, "name", type(self.embedder).__name__)
        if table.embedder is not None and table.embedder != name:
            raise EmbedderMismatchError(
                f"{table.source}: feature vectors come from {table.embedder!r}, this router embeds with {name!r}"
            )
        todo = [i for i, v in enumerate(table.vectors) if v is None]
        done = [v for v in table.vectors if v is not None]
        dim = done[0].size
        embedded = np.empty((0, dim), dtype=np.float32)
        if todo:
            texts = [table.prompts[i] or "" for i in todo]
            embedded = self.embed(texts)
            if embedded.shape[1] != dim:
                raise EmbedderMismatchError(
                    f"{table.source}: {dim}-value feature vectors, this router's have {embedded.shape[1]}"
                )
        out = np.empty((len(table), dim), dtype=np.float32)
        for i, v in enumerate(table.vectors):
            if v is not None:
                out[i] = v
        for k, i in enumerate(todo):
            out[i] = embedded[k]
        return None, out
