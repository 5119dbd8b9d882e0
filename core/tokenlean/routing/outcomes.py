"""Routing outcomes: the files a router is trained and evaluated on, and the opt-in outcome log.

**Outcome files** (``tokenlean route train`` / ``route eval``, ``read_outcomes``) have one row per
prompt: the prompt text (column ``prompt``) or, in privacy mode, the router's feature vector
(column ``features`` plus ``chars``, the prompt's length in characters), and one score column per
model: 0/1 correctness, ``true``/``false``, or a judge score on any one scale. A score column is
named by its model; ``strong`` and ``weak`` columns stand in for the strong and weak model when
the file has no column of that name. An empty cell (or ``nan``/``null``/``none``/``na``) means
"not known"; rows with no known score are skipped and counted. Anything else that is not a number
(a typo, an infinity, a missing column) raises ``OutcomeFormatError`` naming the file and line:
a router trained on misread outcomes would be silently wrong. CSV (``.csv``) and JSON lines
(``.jsonl``/``.ndjson``/``.json``: one object per line, scores as top-level keys or under
``"scores"``) are read.

**The outcome log** (``OutcomeLog``; opt-in: ``LearnedRouter(..., outcome_log=PATH)``) is JSON
lines, one record per routed call and one per piece of feedback. Exactly this is stored::

    {"v": 1, "type": "decision", "call_id": "9f1c...", "time": 1733400000.123, "router": "learned",
     "strong": "gpt-4o", "weak": "gpt-4o-mini", "target": "gpt-4o-mini", "score": -0.21,
     "threshold": 0.35, "explore": false,
     "prompt": "the text the router judged: the last user turn, at most 2,000 characters"}
    {"v": 1, "type": "feedback", "call_id": "9f1c...", "time": 1733400009.5,
     "model": "gpt-4o-mini", "score": 1.0, "ok": true}

With ``privacy="features"`` the decision record holds no text at all: ``"prompt"`` is replaced by
``"features": {"embedder": NAME, "dtype": "float16", "dim": D, "b64": ..., "chars": N}``, the
router's embedding of the prompt (whole prompt and its two halves, float16, base64) and its length
in characters, which is all the router needs to be retrained (the word-based ``lexical`` member of
the ensemble then sits out). Embeddings are not text but are not anonymous either: published
inversion attacks recover much of a sentence from its embedding, so treat the log as sensitive.
Nothing else is recorded: no other message, no system prompt, no answer, no user or tenant id
(put a stable id of yours in ``request.metadata["call_id"]`` and it is used as the call id).
``tokenlean route train LOG.jsonl`` joins feedback to decisions by call id (the last feedback per
call and model wins) and trains on the result.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from tokenlean.errors import ConfigError, EmptyInputError, OutcomeFormatError

__all__ = [
    "LOG_VERSION",
    "PRIVACY_MODES",
    "OutcomeLog",
    "OutcomeTable",
    "decode_features",
    "encode_features",
    "read_outcomes",
]

log = logging.getLogger("tokenlean.routing.outcomes")

#: Version of the outcome-log records (``"v"``); readers refuse records of a newer one.
LOG_VERSION = 1
#: What a decision record keeps of the prompt: its text, or only the router's feature vector.
PRIVACY_MODES = ("text", "features")
_MISSING = frozenset(("", "nan", "none", "null", "na"))
_RESERVED = frozenset(("prompt", "features", "chars", "scores", "call_id", "id"))


# -- feature vectors (privacy mode) -------------------------------------------------------------------


def encode_features(vector: np.ndarray, *, embedder: str, chars: int) -> dict[str, Any]:
    """A router vector as stored in privacy mode: float16, base64, with its embedder and length."""
    v = np.asarray(vector, dtype=np.float32).ravel()
    if not np.isfinite(v).all():
        raise ConfigError("a feature vector must be finite")
    return {
        "embedder": embedder,
        "dtype": "float16",
        "dim": int(v.size),
        "b64": base64.b64encode(v.astype("<f2").tobytes()).decode("ascii"),
        "chars": int(chars),
    }


def decode_features(obj: object, where: str = "features") -> tuple[np.ndarray, int | None, str | None]:
    """``(vector, chars, embedder)`` from ``encode_features``' dict or a plain list of numbers."""
    chars: int | None = None
    embedder: str | None = None
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as exc:
            raise OutcomeFormatError(f"{where}: not a JSON list or object ({exc.msg})") from None
    if isinstance(obj, Mapping):
        if obj.get("dtype", "float16") != "float16" or not isinstance(obj.get("b64"), str):
            raise OutcomeFormatError(f"{where}: expected {{'dtype': 'float16', 'b64': ...}}")
        try:
            raw = base64.b64decode(obj["b64"], validate=True)
        except ValueError:
            raise OutcomeFormatError(f"{where}: 'b64' is not base64") from None
        if len(raw) % 2:
            raise OutcomeFormatError(f"{where}: 'b64' does not hold float16 values")
        vec = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        dim = obj.get("dim")
        if dim is not None and dim != vec.size:
            raise OutcomeFormatError(f"{where}: 'dim' says {dim}, the vector has {vec.size} values")
        c = obj.get("chars")
        if c is not None:
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise OutcomeFormatError(f"{where}: 'chars' must be a whole number >= 0, got {c!r}")
            chars = c
        e = obj.get("embedder")
        embedder = e if isinstance(e, str) else None
    elif isinstance(obj, list):
        if not obj or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in obj):
            raise OutcomeFormatError(f"{where}: a feature vector must be a non-empty list of numbers")
        vec = np.asarray(obj, dtype=np.float32)
    else:
        raise OutcomeFormatError(f"{where}: expected a list of numbers or an encoded vector, got {obj!r:.60}")
    if vec.size == 0 or not np.isfinite(vec).all():
        raise OutcomeFormatError(f"{where}: the feature vector is empty or not finite")
    return vec, chars, embedder


# -- the table every reader produces ------------------------------------------------------------------


@dataclass
class OutcomeTable:
    """Rows of (prompt text and/or router vector, prompt length, a score per model; NaN = unknown).

    ``prompts[i]`` is ``None`` for a privacy-mode row, ``vectors[i]`` is ``None`` where only the
    text is known (the router embeds it). ``pair(strong, weak)`` gives the two score columns.
    """

    source: str
    prompts: list[str | None]
    vectors: list[np.ndarray | None]
    lengths: np.ndarray
    scores: dict[str, np.ndarray]
    embedder: str | None = None
    skipped: int = 0
    sha256: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if len(self.vectors) != n or len(self.lengths) != n or any(len(v) != n for v in self.scores.values()):
            raise ConfigError("an outcome table's columns must have the same length")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def models(self) -> list[str]:
        return list(self.scores)

    @property
    def has_text(self) -> bool:
        """Every row has its prompt text (the word-based scorer and text embedding can be used)."""
        return all(p is not None for p in self.prompts)

    def pair(self, strong: str, weak: str) -> tuple[np.ndarray, np.ndarray]:
        """The strong and the weak model's scores (NaN where unknown)."""
        for m in (strong, weak):
            if m not in self.scores:
                raise OutcomeFormatError(f"{self.source}: no outcomes for model {m!r} (have {self.models})")
        return self.scores[strong], self.scores[weak]

    def subset(self, idx: Sequence[int] | np.ndarray) -> OutcomeTable:
        pick = [int(i) for i in idx]
        return OutcomeTable(
            self.source,
            [self.prompts[i] for i in pick],
            [self.vectors[i] for i in pick],
            self.lengths[pick],
            {m: s[pick] for m, s in self.scores.items()},
            self.embedder,
            0,
            self.sha256,
            dict(self.info),
        )


def _score(value: object, where: str) -> float:
    """A score cell: a number, a bool or ``true``/``false``; NaN for "not known"; anything else raises."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        x = float(value)
    elif isinstance(value, str):
        v = value.strip().lower()
        if v in _MISSING:
            return math.nan
        if v in ("true", "false"):
            return 1.0 if v == "true" else 0.0
        try:
            x = float(v)
        except ValueError:
            raise OutcomeFormatError(
                f"{where}: {value!r} is not a score (a number, true/false, or empty)"
            ) from None
    else:
        raise OutcomeFormatError(f"{where}: {value!r:.60} is not a score")
    if math.isnan(x):
        return math.nan
    if not math.isfinite(x):
        raise OutcomeFormatError(f"{where}: a score must be finite, got {value!r}")
    return x


def _columns(
    available: Sequence[str], models: Sequence[str], fallbacks: Mapping[str, str], where: str
) -> dict[str, str]:
    """``{model: column}``: the column named by the model, else its fallback (``strong``/``weak``)."""
    out: dict[str, str] = {}
    for m in models:
        if m in available:
            out[m] = m
        elif m in fallbacks and fallbacks[m] in available:
            out[m] = fallbacks[m]
        else:
            alt = f" or {fallbacks[m]!r}" if m in fallbacks else ""
            raise OutcomeFormatError(f"{where}: no column {m!r}{alt} (columns: {list(available)[:12]})")
    if len(set(out.values())) != len(out):
        raise OutcomeFormatError(f"{where}: two models read the same column: {out}")
    return out


class _Rows:
    """Accumulates rows and checks what every reader must check."""

    def __init__(self, source: str, models: Sequence[str]) -> None:
        self.source = source
        self.models = list(models)
        self.prompts: list[str | None] = []
        self.vectors: list[np.ndarray | None] = []
        self.lengths: list[int] = []
        self.scores: dict[str, list[float]] = {m: [] for m in self.models}
        self.embedder: str | None = None
        self.skipped = 0
        self.dim: int | None = None

    def add(
        self,
        where: str,
        prompt: object,
        features: object,
        chars: object,
        scores: Mapping[str, float],
    ) -> None:
        if all(math.isnan(scores[m]) for m in self.models):
            self.skipped += 1  # nothing known about this prompt
            return
        text: str | None = None
        vec: np.ndarray | None = None
        if prompt is not None and prompt != "":
            if not isinstance(prompt, str):
                raise OutcomeFormatError(f"{where}: 'prompt' must be text, got {prompt!r:.60}")
            text = prompt
        if features is not None and features != "":
            vec, fchars, emb = decode_features(features, f"{where}: features")
            if self.dim is None:
                self.dim = vec.size
            elif vec.size != self.dim:
                raise OutcomeFormatError(
                    f"{where}: a {vec.size}-value feature vector among {self.dim}-value ones"
                )
            if emb is not None:
                if self.embedder is not None and emb != self.embedder:
                    raise OutcomeFormatError(
                        f"{where}: vectors of two embedders ({self.embedder!r}, {emb!r})"
                    )
                self.embedder = emb
            if fchars is not None:
                chars = fchars
        if text is None and vec is None:
            if prompt == "" or features == "":
                self.skipped += 1  # a blank prompt is never routed
                return
            raise OutcomeFormatError(f"{where}: neither a prompt nor a feature vector")
        if text is not None:
            n = len(text)
        else:
            if chars is None or chars == "":
                raise OutcomeFormatError(f"{where}: a feature vector needs 'chars' (the prompt's length)")
            try:
                n = int(str(chars)) if not isinstance(chars, int) or isinstance(chars, bool) else chars
            except ValueError:
                raise OutcomeFormatError(f"{where}: 'chars' must be a whole number, got {chars!r}") from None
            if n < 0:
                raise OutcomeFormatError(f"{where}: 'chars' must be >= 0, got {n}")
        self.prompts.append(text)
        self.vectors.append(vec)
        self.lengths.append(n)
        for m in self.models:
            self.scores[m].append(scores[m])

    def table(self, sha: str, info: dict[str, Any] | None = None) -> OutcomeTable:
        if not self.prompts:
            raise EmptyInputError(f"{self.source}: no rows with a known outcome ({self.skipped} skipped)")
        return OutcomeTable(
            self.source,
            self.prompts,
            self.vectors,
            np.asarray(self.lengths, dtype=np.int64),
            {m: np.asarray(v, dtype=np.float64) for m, v in self.scores.items()},
            self.embedder,
            self.skipped,
            sha,
            info or {},
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_csv(path: Path, models: Sequence[str], fallbacks: Mapping[str, str]) -> OutcomeTable:
    csv.field_size_limit(1 << 27)
    rows = _Rows(str(path), models)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = list(reader.fieldnames or [])
            if "prompt" not in cols and "features" not in cols:
                raise OutcomeFormatError(
                    f"{path}: needs a 'prompt' or a 'features' column (columns: {cols[:12]})"
                )
            use = _columns(cols, models, fallbacks, str(path))
            for line, row in enumerate(reader, start=2):
                where = f"{path}:{line}"
                if None in row:
                    raise OutcomeFormatError(f"{where}: more cells than columns")
                scores = {m: _score(row.get(c), f"{where}: {c}") for m, c in use.items()}
                rows.add(where, row.get("prompt"), row.get("features"), row.get("chars"), scores)
    except UnicodeDecodeError as exc:
        raise OutcomeFormatError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise OutcomeFormatError(f"{path}: not a readable CSV ({exc})") from None
    return rows.table(_sha256(path))


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per non-blank line; a torn *last* line (a crash mid-write) is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise OutcomeFormatError(f"{path}: not UTF-8 text ({exc.reason})") from None
    lines = text.split("\n")
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) and not text.endswith("\n"):
                log.warning("%s:%d: incomplete last line skipped (a write cut short?)", path, i)
                continue
            raise OutcomeFormatError(f"{path}:{i}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise OutcomeFormatError(f"{path}:{i}: each line must be a JSON object")
        yield i, obj


def _is_log(path: Path) -> bool:
    for _, obj in _json_lines(path):
        return obj.get("type") in ("decision", "feedback")
    return False


def _read_jsonl(path: Path, models: Sequence[str] | None, fallbacks: Mapping[str, str]) -> OutcomeTable:
    records = list(_json_lines(path))
    if not records:
        raise EmptyInputError(f"{path}: no records")
    if models is None:  # every score key that is not a reserved one
        seen: dict[str, None] = {}
        for _, obj in records:
            keys = (
                obj["scores"]
                if isinstance(obj.get("scores"), Mapping)
                else {k: 0 for k in obj if k not in _RESERVED}
            )
            seen.update(dict.fromkeys(keys))
        models = list(seen)
    rows = _Rows(str(path), models)
    for i, obj in records:
        where = f"{path}:{i}"
        src = obj.get("scores", obj)
        if not isinstance(src, Mapping):
            raise OutcomeFormatError(f"{where}: 'scores' must be an object of model -> score")
        scores = {}
        for m in models:
            col = m if m in src else fallbacks.get(m)
            scores[m] = _score(src.get(col) if col is not None else None, f"{where}: {m}")
        rows.add(where, obj.get("prompt"), obj.get("features"), obj.get("chars"), scores)
    for m in models:
        if all(math.isnan(x) for x in rows.scores[m]):
            raise OutcomeFormatError(f"{path}: no outcome of model {m!r} in any row")
    return rows.table(_sha256(path))


def _read_log(path: Path, models: Sequence[str] | None) -> OutcomeTable:
    """Join an outcome log's feedback to its decisions by call id."""
    decisions: dict[str, tuple[int, dict[str, Any]]] = {}
    feedback: dict[str, dict[str, float]] = {}
    pairs: dict[tuple[str, str], None] = {}
    used_ok = False
    out_of_unit = False
    duplicates = 0
    for i, obj in _json_lines(path):
        where = f"{path}:{i}"
        v = obj.get("v")
        if not isinstance(v, int) or isinstance(v, bool) or v > LOG_VERSION:
            raise OutcomeFormatError(f"{where}: record version {v!r} (this tokenlean reads <= {LOG_VERSION})")
        cid = obj.get("call_id")
        if not isinstance(cid, str) or not cid:
            raise OutcomeFormatError(f"{where}: 'call_id' must be a non-empty string")
        kind = obj.get("type")
        if kind == "decision":
            if not isinstance(obj.get("strong"), str) or not isinstance(obj.get("weak"), str):
                raise OutcomeFormatError(f"{where}: a decision record needs 'strong' and 'weak'")
            if cid in decisions:
                duplicates += 1
            decisions[cid] = (i, obj)
            pairs[(obj["strong"], obj["weak"])] = None
        elif kind == "feedback":
            model = obj.get("model")
            if not isinstance(model, str) or not model:
                raise OutcomeFormatError(f"{where}: a feedback record needs 'model'")
            s = _score(obj.get("score"), f"{where}: score")
            if math.isnan(s):
                raise OutcomeFormatError(f"{where}: feedback without a score")
            used_ok = used_ok or "ok" in obj
            out_of_unit = out_of_unit or not 0.0 <= s <= 1.0
            feedback.setdefault(cid, {})[model] = s  # the last feedback per call and model wins
        else:
            raise OutcomeFormatError(f"{where}: unknown record type {kind!r}")
    if used_ok and out_of_unit:
        raise OutcomeFormatError(
            f"{path}: feedback mixes ok=True/False (0/1) with scores outside [0, 1]; "
            "give judge scores on a 0-1 scale, or use one kind of feedback per log"
        )
    if models is None:
        if len(pairs) != 1:
            raise OutcomeFormatError(
                f"{path}: decisions of {len(pairs)} strong/weak pairs {list(pairs)[:4]}: name --strong and --weak"
            )
        models = list(next(iter(pairs)))
    rows = _Rows(str(path), models)
    unmatched = sum(1 for cid in feedback if cid not in decisions)
    no_feedback = 0
    for cid, (i, obj) in decisions.items():
        got = feedback.get(cid)
        if not got:
            no_feedback += 1
            continue
        scores = {m: got.get(m, math.nan) for m in models}
        feats = obj.get("features")
        rows.add(f"{path}:{i}", obj.get("prompt"), feats, None, scores)
    if rows.skipped:
        log.info("%s: %d decisions had feedback only for other models", path, rows.skipped)
    info = {
        "decisions": len(decisions),
        "without_feedback": no_feedback,
        "unmatched_feedback": unmatched,
        "duplicate_call_ids": duplicates,
        "models": list(models),
    }
    table = rows.table(_sha256(path), info)
    table.skipped += no_feedback
    return table


def read_outcomes(
    path: str | Path,
    *,
    strong: str | None = None,
    weak: str | None = None,
    models: Sequence[str] | None = None,
) -> OutcomeTable:
    """Read an outcome CSV, an outcome JSONL file or an outcome log (see the module docstring).

    Give ``strong`` and ``weak`` (a pair; ``strong``/``weak`` columns stand in when no column is
    named by the model) or ``models`` (N models, columns named by each). A log names its models
    itself; a JSONL file without either reads every score key.
    """
    p = Path(path)
    if not p.is_file():
        raise OutcomeFormatError(f"no outcome file at {p}")
    if (strong is None) != (weak is None):
        raise ConfigError("give both strong and weak, or neither")
    if strong is not None and models is not None:
        raise ConfigError("give strong/weak or models, not both")
    fallbacks: dict[str, str] = {}
    wanted: list[str] | None = list(models) if models is not None else None
    if strong is not None and weak is not None:
        if strong == weak:
            raise ConfigError("the strong and the weak model must differ")
        wanted = [strong, weak]
        fallbacks = {strong: "strong", weak: "weak"}
    if wanted is not None and (
        len(set(wanted)) != len(wanted) or not all(isinstance(m, str) and m for m in wanted)
    ):
        raise ConfigError(f"model names must be distinct non-empty strings, got {wanted}")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        if wanted is None:
            raise ConfigError("a CSV needs the model columns: give strong= and weak= (or models=)")
        return _read_csv(p, wanted, fallbacks)
    if suffix in (".jsonl", ".ndjson", ".json"):
        if _is_log(p):
            return _read_log(p, wanted)
        return _read_jsonl(p, wanted, fallbacks)
    raise OutcomeFormatError(f"{p}: outcome files are .csv or .jsonl, not {suffix or 'no suffix'!r}")


# -- the outcome log -------------------------------------------------------------------------------


class OutcomeLog:
    """Append-only JSON-lines file of routed decisions and their feedback (module docstring).

    One line per record, written and flushed under a lock, so records of concurrent calls never
    interleave within a process; use one file per process. A decision that cannot be written
    (disk full) is logged as a warning and routing goes on; feedback that cannot be written raises.
    """

    def __init__(self, path: str | Path, *, privacy: str = "text") -> None:
        if privacy not in PRIVACY_MODES:
            raise ConfigError(f"privacy must be one of {PRIVACY_MODES}, got {privacy!r}")
        self.path = Path(path)
        self.privacy = privacy
        self._lock = threading.Lock()
        self._fh: TextIO | None = None
        self._warned = False

    def write(self, record: Mapping[str, Any], *, strict: bool = True) -> None:
        # ensure_ascii: any text, lone surrogates included, becomes one valid ASCII line
        line = json.dumps({"v": LOG_VERSION, **record, "time": round(time.time(), 3)}, allow_nan=False)
        try:
            with self._lock:
                if self._fh is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._fh = self.path.open("a", encoding="ascii")
                self._fh.write(line + "\n")
                self._fh.flush()
        except OSError as exc:
            if strict:
                raise
            if not self._warned:
                self._warned = True
                log.warning("outcome log %s: could not write (%s); routing goes on unlogged", self.path, exc)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> OutcomeLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
