"""Saving and loading learned routers: numpy arrays and JSON, no pickle, versioned with the embedder.

A saved router is a folder with two files:

* ``router.json``: the format name and version, the targets, threshold and output controls, every
  scorer's settings and scalars, the embedder the router expects (name, dimension, SHA-256 of the
  static embedder's token table, the probe texts), the router's own scores of the probe texts,
  provenance (``info``: rows, data file and its SHA-256, training time) and the SHA-256 of
  ``arrays.npz``.
* ``arrays.npz``: every array (compressed ``.npy`` members, plain numbers only, read with
  ``allow_pickle=False``): weights, centring vectors, the ``knn-gap`` neighbours and their gains,
  the ``lexical`` vocabulary (UTF-8 bytes, one term a line), and the embedder's vectors of the probes.

``load`` refuses (``EmbedderMismatchError``) an embedder of another name or dimension, or one whose
vectors of the probe texts differ from the saved ones by more than 2e-3; a file that is missing,
corrupt (its SHA-256), of a newer format, or that does not reproduce its saved probe scores raises
``RouterFileError``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import weakref
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tokenlean.errors import ConfigError, EmbedderMismatchError, RouterFileError, TokenleanError
from tokenlean.routing.decision import OutputControl
from tokenlean.routing.lexical import LexicalGapScorer, _Tfidf
from tokenlean.routing.scorers import (
    SCORERS,
    EnsembleScorer,
    KNNGapScorer,
    KNNScorer,
    LogisticScorer,
    MatrixFactorizationScorer,
    QualityGapScorer,
)

if TYPE_CHECKING:  # the router calls in here (save, load); this module never imports it
    from tokenlean.routing.features import PromptFeatures
    from tokenlean.routing.learned import LearnedRouter

__all__ = ["DEFAULT_ROUTER_DIR", "ROUTER_FORMAT", "ROUTER_FORMAT_VERSION", "load_router", "save_router"]

log = logging.getLogger("tokenlean.routing.persist")

#: The router shipped with tokenlean (``LearnedRouter.default``).
DEFAULT_ROUTER_DIR = Path(__file__).resolve().parent / "data" / "default_router"
ROUTER_FORMAT = "tokenlean-router"
ROUTER_FORMAT_VERSION = 1
_PROBE_TEXTS = (
    "What is the capital of France?",
    "Solve for x: 3x + 7 = 22. Show your work.",
    "Write a Python function that returns the n-th Fibonacci number.\nUse memoization.\nExplain its cost.",
    "Which of these numbers is prime?\nA. 21\nB. 27\nC. 29\nD. 33",
    "Summarize the causes of the French Revolution in three sentences.",
    "Translate 'good morning, how did you sleep?' into Japanese and Spanish.",
    "Prove that the square root of 2 is irrational.",
    "Draft a polite email declining a meeting.\nKeep it short.\nSuggest next Tuesday instead.",
)
_PROBE_TOLERANCE = 2e-3


class _Arrays:
    """The arrays of a router being saved; ``compact`` narrows the large ones."""

    def __init__(self, compact: bool) -> None:
        self.compact = compact
        self.data: dict[str, np.ndarray] = {}

    def put(self, key: str, value: Any, how: str = "exact") -> str:
        a = np.asarray(value)
        if a.dtype == object:
            raise ConfigError(f"cannot save {key}: not a numeric array")
        if self.compact and how == "half":  # 16 bits, scaled per column (no float16 overflow)
            a32 = a.astype(np.float32)
            scale = np.abs(a32).max(axis=0) if a32.ndim == 2 else np.abs(a32).max(keepdims=True)
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            self.data[f"{key}.h"] = (a32 / scale).astype(np.float16)
            self.data[f"{key}.hscale"] = scale
            return key
        if self.compact and how == "unit8" and a.ndim == 2:
            scale = np.abs(a).max(axis=1).astype(np.float32)
            scale[scale == 0] = 1.0
            self.data[f"{key}.q"] = np.round(a / scale[:, None] * 127).astype(np.int8)
            self.data[f"{key}.scale"] = scale
            return key
        self.data[key] = a
        return key


def _get(arrays: Mapping[str, np.ndarray], key: str, dtype: Any) -> np.ndarray:
    if key in arrays:
        return np.array(arrays[key], dtype=dtype)
    if f"{key}.h" in arrays and f"{key}.hscale" in arrays:
        return (arrays[f"{key}.h"].astype(np.float32) * arrays[f"{key}.hscale"].astype(np.float32)).astype(
            dtype
        )
    if f"{key}.q" in arrays and f"{key}.scale" in arrays:
        q, scale = arrays[f"{key}.q"], arrays[f"{key}.scale"]
        return (q.astype(np.float32) * (scale.astype(np.float32) / 127)[:, None]).astype(dtype)
    raise RouterFileError(f"arrays.npz has no array {key!r}")


def _opt_array(arrays: Mapping[str, np.ndarray], key: str | None, dtype: Any) -> np.ndarray | None:
    return None if key is None else _get(arrays, key, dtype)


def _need(value: Any, what: str) -> Any:
    if value is None:
        raise ConfigError(f"cannot save an unfitted router ({what} is not fitted): fit() it first")
    return value


def _dump_scorer(s: Any, key: str, st: _Arrays) -> dict[str, Any]:
    t = type(s)
    if t is LogisticScorer:
        st.put(f"{key}.w", _need(s.w, "logistic"))
        return {"kind": "logistic", "l2": s.l2, "max_iter": s.max_iter, "tol": s.tol, "b": float(s.b)}
    if t is KNNScorer:
        st.put(f"{key}.x", _need(s.x, "knn"), "half")
        st.put(f"{key}.y", _need(s.y, "knn"), "half")
        return {"kind": "knn", "k": s.k, "temperature": s.temperature, "prior": float(s.prior)}
    if t is MatrixFactorizationScorer:
        st.put(f"{key}.p", _need(s.p, "mf"), "half")
        st.put(f"{key}.u", _need(s.u, "mf"))
        meta = {"dim": s.dim, "l2": s.l2, "epochs": s.epochs, "lr": s.lr, "seed": s.seed}
        return {"kind": "mf", **meta, "b": float(s.b)}
    if t is QualityGapScorer:
        heads = _need(s.heads, "gap")
        return {
            "kind": "gap",
            "c": s.c,
            "heads": [_dump_scorer(h, f"{key}.h{i}", st) for i, h in enumerate(heads)],
        }
    if t is KNNGapScorer:
        st.put(f"{key}.x", _need(s.x, "knn-gap"), "unit8")
        st.put(f"{key}.gap", _need(s.gap, "knn-gap"), "half")
        st.put(f"{key}.mean", _need(s.mean, "knn-gap"))
        st.put(f"{key}.proj", _need(s.proj, "knn-gap"), "half")
        return {"kind": "knn-gap", "k": s.k, "components": s.components, "prior": float(s.prior)}
    if t is LexicalGapScorer:
        tfidf = _need(s._tfidf, "lexical")
        terms = sorted(tfidf.vocab, key=tfidf.vocab.__getitem__)
        blob = "\n".join(terms).encode("utf-8", "surrogatepass")
        st.put(f"{key}.vocab", np.frombuffer(blob, dtype=np.uint8))
        st.put(f"{key}.idf", tfidf.idf, "half")
        st.put(f"{key}.w", _need(s.w, "lexical"), "half")
        return {
            "kind": "lexical",
            "alpha": s.alpha,
            "min_df": s.min_df,
            "min_t": s.min_t,
            "folds": s.folds,
            "max_iter": s.max_iter,
            "tol": s.tol,
            "seed": s.seed,
            "b": float(s.b),
            "evidence": float(s.evidence),
            "reliable": bool(s.reliable),
            "terms": len(terms),
        }
    if t is EnsembleScorer:
        if not s._scale:
            raise ConfigError("cannot save an unfitted router (the ensemble is not fitted): fit() it first")
        members = []
        for i, (m, sc) in enumerate(zip(s.members, s._scale, strict=True)):
            # a member that sat out was maybe never fitted: keep its settings only
            members.append(_dump_scorer(m, f"{key}.m{i}", st) if sc is not None else _settings(m))
        return {
            "kind": "ensemble",
            "min_complete": s.min_complete,
            "members": members,
            "scale": [None if sc is None else [float(sc[0]), float(sc[1])] for sc in s._scale],
        }
    raise ConfigError(
        f"cannot save a scorer of type {t.__name__}: save() knows tokenlean's own scorers "
        f"({', '.join(sorted(SCORERS))})"
    )


def _settings(m: Any) -> dict[str, Any]:
    """A member that sat out: its kind (and settings), no state."""
    return {"kind": getattr(m, "kind", type(m).__name__), "unfitted": True}


def _load_scorer(meta: Mapping[str, Any], key: str, arrays: Mapping[str, np.ndarray]) -> Any:
    kind = meta.get("kind")
    if meta.get("unfitted"):
        if kind not in SCORERS:
            raise RouterFileError(f"unknown scorer kind {kind!r}")
        return SCORERS[kind]()
    if kind == "logistic":
        lg = LogisticScorer(l2=float(meta["l2"]), max_iter=int(meta["max_iter"]), tol=float(meta["tol"]))
        lg.w, lg.b = _get(arrays, f"{key}.w", np.float64), float(meta["b"])
        return lg
    if kind == "knn":
        kn = KNNScorer(k=int(meta["k"]), temperature=float(meta["temperature"]))
        kn.x, kn.y = _get(arrays, f"{key}.x", np.float32), _get(arrays, f"{key}.y", np.float32)
        kn.prior = float(meta["prior"])
        return kn
    if kind == "mf":
        mf = MatrixFactorizationScorer(
            dim=int(meta["dim"]),
            l2=float(meta["l2"]),
            epochs=int(meta["epochs"]),
            lr=float(meta["lr"]),
            seed=int(meta["seed"]),
        )
        mf.p, mf.u, mf.b = (
            _get(arrays, f"{key}.p", np.float64),
            _get(arrays, f"{key}.u", np.float64),
            float(meta["b"]),
        )
        return mf
    if kind == "gap":
        gap = QualityGapScorer(c=float(meta["c"]))
        h0, h1 = (_load_scorer(h, f"{key}.h{i}", arrays) for i, h in enumerate(meta["heads"]))
        gap.heads = (h0, h1)
        return gap
    if kind == "knn-gap":
        kg = KNNGapScorer(k=None if meta["k"] is None else int(meta["k"]), components=int(meta["components"]))
        kg.x = _get(arrays, f"{key}.x", np.float32)
        kg.gap = _get(arrays, f"{key}.gap", np.float32)
        kg.mean = _get(arrays, f"{key}.mean", np.float32)
        kg.proj = _get(arrays, f"{key}.proj", np.float32)
        kg.prior = float(meta["prior"])
        return kg
    if kind == "lexical":
        lx = LexicalGapScorer(
            float(meta["alpha"]),
            min_df=int(meta["min_df"]),
            min_t=float(meta["min_t"]),
            folds=int(meta["folds"]),
            max_iter=int(meta["max_iter"]),
            tol=float(meta["tol"]),
            seed=int(meta["seed"]),
        )
        blob = _get(arrays, f"{key}.vocab", np.uint8).tobytes().decode("utf-8", "surrogatepass")
        terms = blob.split("\n") if blob else []
        tfidf = _Tfidf.__new__(_Tfidf)
        tfidf.vocab = {t: i for i, t in enumerate(terms)}
        tfidf.idf = _get(arrays, f"{key}.idf", np.float64)
        lx._tfidf = tfidf
        lx.w = _get(arrays, f"{key}.w", np.float64)
        if not (len(terms) == len(tfidf.idf) == len(lx.w) == int(meta["terms"])):
            raise RouterFileError("the lexical scorer's vocabulary and weights do not match")
        lx.b, lx.evidence, lx.reliable = float(meta["b"]), float(meta["evidence"]), bool(meta["reliable"])
        return lx
    if kind == "ensemble":
        members = [_load_scorer(m, f"{key}.m{i}", arrays) for i, m in enumerate(meta["members"])]
        ens = EnsembleScorer(members)
        ens.min_complete = int(meta["min_complete"])
        ens._scale = [None if sc is None else (float(sc[0]), float(sc[1])) for sc in meta["scale"]]
        if len(ens._scale) != len(members):
            raise RouterFileError("the ensemble's members and scales do not match")
        return ens
    raise RouterFileError(f"unknown scorer kind {kind!r}")


def _output_from(d: Any) -> OutputControl | None:
    if d is None:
        return None
    return OutputControl(
        max_tokens=d.get("max_tokens"), stop=tuple(d.get("stop") or ()), instruction=d.get("instruction")
    )


_TABLE_SHA: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _table_sha256(base: Any) -> str | None:
    """SHA-256 of a static embedder's token table (``None`` for other embedders)."""
    from tokenlean.embeddings import StaticEmbedder

    if not isinstance(base, StaticEmbedder):
        return None
    sha = _TABLE_SHA.get(base)
    if sha is None:
        table = np.ascontiguousarray(base._load()[0], dtype=np.float32)
        sha = hashlib.sha256(table.tobytes()).hexdigest()
        _TABLE_SHA[base] = sha
    return sha


def _embedder_spec(router: PromptFeatures, st: _Arrays) -> dict[str, Any]:
    base = router.base_embedder
    spec: dict[str, Any] = {
        "name": getattr(base, "name", type(base).__name__),
        "dim": int(getattr(base, "dim", 0) or 0),
        "table_sha256": _table_sha256(base),
        "probe_texts": list(_PROBE_TEXTS),
    }
    try:
        probe = np.asarray(base.embed(list(_PROBE_TEXTS)), dtype=np.float32)
    except TokenleanError:  # e.g. a placeholder embedder of precomputed vectors: no probe
        probe = None
    if probe is not None:
        st.data["embedder.probe"] = probe
        spec["dim"] = spec["dim"] or int(probe.shape[1])
    return spec


def _router_state(router: LearnedRouter, compact: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from tokenlean import __version__

    st = _Arrays(compact)
    scorer = _dump_scorer(router.scorer, "scorer", st)
    feats = {
        "center": None if router._center is None else st.put("features.center", router._center),
        "mu": None if router._mu is None else st.put("features.mu", router._mu),
        "sd": None if router._sd is None else st.put("features.sd", router._sd),
    }
    meta: dict[str, Any] = {
        "format": ROUTER_FORMAT,
        "version": ROUTER_FORMAT_VERSION,
        "kind": "learned",
        "strong": router.strong,
        "weak": router.weak,
        "threshold": router.threshold,
        "segments": router.segments,
        "scorer": scorer,
        "features": feats,
        "outputs": {
            "strong": None if router.strong_output is None else router.strong_output.to_dict(),
            "weak": None if router.weak_output is None else router.weak_output.to_dict(),
        },
        "embedder": _embedder_spec(router, st),
        "compact": compact,
        "tokenlean": __version__,
        "info": _jsonable(router.info),
    }
    if "embedder.probe" in st.data:
        # the router as it will load (compact arrays included) scores the probes: load() checks them
        twin = type(router)(
            router.strong,
            router.weak,
            scorer=_load_scorer(scorer, "scorer", st.data),
            embedder=router._embedder,
            segments=router.segments,
        )
        twin._center = _opt_array(st.data, feats["center"], np.float32)
        twin._mu = _opt_array(st.data, feats["mu"], np.float32)
        twin._sd = _opt_array(st.data, feats["sd"], np.float32)
        meta["probe_scores"] = [float(x) for x in twin.score(list(_PROBE_TEXTS))]
    return meta, st.data


def _jsonable(obj: Any) -> Any:
    try:
        return json.loads(json.dumps(obj, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"router.info must be plain JSON data: {exc}") from None


def _write_router(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:

    buf = io.BytesIO()
    np.savez_compressed(buf, allow_pickle=False, **arrays)
    data = buf.getvalue()
    meta["arrays_sha256"] = hashlib.sha256(data).hexdigest()
    path.mkdir(parents=True, exist_ok=True)
    for name, content in (
        ("arrays.npz", data),
        ("router.json", (json.dumps(meta, indent=1) + "\n").encode()),
    ):
        tmp = path / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(content)
        tmp.replace(path / name)
    return path


def _read_router(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:

    meta_file, arrays_file = path / "router.json", path / "arrays.npz"
    if not meta_file.is_file() or not arrays_file.is_file():
        raise RouterFileError(f"{path}: not a saved router (router.json and arrays.npz expected)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RouterFileError(f"{meta_file}: not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != ROUTER_FORMAT:
        raise RouterFileError(f"{meta_file}: not a {ROUTER_FORMAT} file")
    version = meta.get("version")
    if not isinstance(version, int) or version > ROUTER_FORMAT_VERSION:
        raise RouterFileError(
            f"{meta_file}: format version {version!r}; this tokenlean reads <= {ROUTER_FORMAT_VERSION} (upgrade it)"
        )
    data = arrays_file.read_bytes()
    if meta.get("arrays_sha256") != hashlib.sha256(data).hexdigest():
        raise RouterFileError(
            f"{arrays_file}: its SHA-256 is not the one router.json records (corrupt or mixed up)"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise RouterFileError(f"{arrays_file}: unreadable ({exc})") from None
    return meta, arrays


def _check_embedder(
    router: LearnedRouter,
    meta: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    *,
    strict: bool,
    where: str,
) -> None:
    spec = meta.get("embedder") or {}
    base = router.base_embedder
    name = getattr(base, "name", type(base).__name__)
    if spec.get("name") != name:
        raise EmbedderMismatchError(
            f"{where}: trained on embedder {spec.get('name')!r}, this one is {name!r}; "
            "load it with that embedder, or retrain (tokenlean route train)"
        )
    probe = arrays.get("embedder.probe")
    if probe is not None:
        texts = list(spec.get("probe_texts") or [])
        now = np.asarray(base.embed(texts), dtype=np.float32)
        if now.shape != probe.shape:
            raise EmbedderMismatchError(
                f"{where}: embedder {name!r} gives {now.shape[1]}-d vectors, the router expects {probe.shape[1]}"
            )
        diff = float(np.abs(now - probe).max())
        if diff > _PROBE_TOLERANCE:
            raise EmbedderMismatchError(
                f"{where}: embedder {name!r} embeds the probe texts differently from the one the router "
                f"was trained on (max difference {diff:.3g} > {_PROBE_TOLERANCE}); retrain, or use that embedder"
            )
    else:
        dim = int(getattr(base, "dim", 0) or 0)
        if spec.get("dim") and dim and dim != spec["dim"]:
            raise EmbedderMismatchError(
                f"{where}: embedder {name!r} is {dim}-d, the router expects {spec['dim']}"
            )
    want = spec.get("table_sha256")
    have = _table_sha256(base) if want else None
    if want and have != want:
        msg = (
            f"{where}: the static embedder's table (SHA-256 {str(have)[:12]}...) is not the one the router was "
            f"trained with ({want[:12]}...)"
        )
        if strict:
            raise EmbedderMismatchError(msg)
        log.warning("%s, but it embeds the probe texts alike (a rebuild on another machine?): loading", msg)
    expected = meta.get("probe_scores")
    if expected is not None:
        got = router.score(list(spec.get("probe_texts") or []))
        exp = np.asarray(expected, dtype=np.float64)
        tol = 1e-3 * max(1.0, float(np.abs(exp).max()))
        if got.shape != exp.shape or float(np.abs(got - exp).max()) > tol:
            raise RouterFileError(
                f"{where}: the loaded router does not reproduce the scores it was saved with"
            )


def save_router(router: LearnedRouter, path: Path, *, compact: bool = False) -> Path:
    """``LearnedRouter.save``."""
    meta, arrays = _router_state(router, compact)
    return _write_router(path, meta, arrays)


def load_router(
    cls: type[LearnedRouter],
    path: Path,
    *,
    strong: str | None,
    weak: str | None,
    embedder: Any,
    strict: bool,
    check_embedder: bool,
    options: Mapping[str, Any],
) -> LearnedRouter:
    """``LearnedRouter.load``."""
    meta, arrays = _read_router(Path(path))
    if meta.get("kind") != "learned":
        raise RouterFileError(f"{path}: a {meta.get('kind')!r} router, not a LearnedRouter")
    allowed = {"outcome_log", "privacy", "explore", "seed", "threshold", "strong_output", "weak_output"}
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(f"unknown load options {sorted(unknown)}; allowed: {sorted(allowed)}")
    try:
        scorer = _load_scorer(meta["scorer"], "scorer", arrays)
        outputs = meta.get("outputs") or {}
        kwargs: dict[str, Any] = {
            "threshold": float(meta["threshold"]),
            "strong_output": _output_from(outputs.get("strong")),
            "weak_output": _output_from(outputs.get("weak")),
            **options,
        }
        router = cls(
            strong or meta["strong"],
            weak or meta["weak"],
            scorer=scorer,
            embedder=embedder,
            segments=bool(meta["segments"]),
            **kwargs,
        )
        feats = meta.get("features") or {}
        router._center = _opt_array(arrays, feats.get("center"), np.float32)
        router._mu = _opt_array(arrays, feats.get("mu"), np.float32)
        router._sd = _opt_array(arrays, feats.get("sd"), np.float32)
        router.info = dict(meta.get("info") or {})
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, TokenleanError):
            raise
        raise RouterFileError(f"{path}: router.json does not describe a router ({exc!r})") from None
    if check_embedder:
        _check_embedder(router, meta, arrays, strict=strict, where=str(path))
    return router
