"""The learned router: strong or weak model, from outcome data, thresholded to a strong-call share.

It owns its lifecycle: fit (``fit``, ``fit_table``), calibrate, decide, log decisions and
feedback for retraining (``tokenlean.routing.outcomes``), and save/load (``tokenlean.routing.
persist``, which knows the file format; this module only delegates to it).
"""

from __future__ import annotations

import math
import numbers
import random
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokenlean.errors import ConfigError, EmptyInputError, InputError, RouterFileError
from tokenlean.routing.decision import Decision, OutputControl, prompt_text
from tokenlean.routing.features import PromptFeatures
from tokenlean.routing.outcomes import PRIVACY_MODES, OutcomeLog, OutcomeTable, encode_features
from tokenlean.routing.persist import DEFAULT_ROUTER_DIR, load_router, save_router
from tokenlean.routing.scorers import SCORERS, calibrate_threshold, share_for_budget
from tokenlean.types import Request

__all__ = ["LearnedRouter"]


class LearnedRouter(PromptFeatures):
    """Strong-vs-weak router trained from outcome data, thresholded to a strong-call share.

    ``fit(prompts, strong_score, weak_score)`` learns, from prompt embeddings (plus log prompt
    length), a score that orders prompts by how much the strong model helps. Scorers:
    ``ensemble`` (default: ``gap``, ``knn-gap`` and, when the outcome data is large enough to
    trust it, ``lexical``, averaged as z-scores), ``gap`` (expected strong minus weak quality),
    ``knn-gap`` (gain of similar prompts), ``lexical`` (gain predicted from the prompt's words,
    ``tokenlean.routing.lexical``), and the classifiers of
    "strong wins" ``logistic``, ``knn``, ``mf`` (RouteLLM's matrix factorisation).
    ``calibrate(prompts, strong_share=...)`` or ``calibrate(..., budget=..., weak_cost=...,
    strong_cost=...)`` picks the threshold on a held-out set. ``decide`` then routes a request
    to ``strong`` when its score reaches it.

    The default embedder is the *static* one (``tokenlean.embeddings.get_static_embedder``): a
    decision sits on the request path, embedding included, where a transformer forward pass on a
    CPU is too slow, and the static vectors route about as well as MiniLM's (see
    ``benchmarks/routing.py``). Pass
    ``embedder=get_default_embedder()`` to use the transformer instead. With ``segments=True``
    (default) the embedder sees each prompt whole and in two halves (``SegmentedEmbedder``);
    vectors passed to ``fit``/``score``/``calibrate`` must come from ``router.embed(prompts)``.

    **Owning it.** ``LearnedRouter.default(strong, weak)`` loads the router shipped with
    tokenlean (trained on RouteLLM's GSM8K, MMLU and MT-Bench outcomes; ``scripts/
    train_default_router.py``). ``save(dir)`` / ``LearnedRouter.load(dir)`` keep a fitted router
    as numpy arrays (``allow_pickle=False``) and JSON, versioned with the embedder it expects.
    With ``outcome_log=PATH`` every decision is logged with a call id (``Decision.extra
    ["call_id"]``) and ``feedback(call_id, ok=...)`` or ``feedback(call_id, score=...)`` records
    how the answer did; ``privacy="features"`` logs the router's vectors instead of the prompt
    text (``tokenlean.routing.outcomes`` says exactly what is stored). ``explore=0.05`` sends that
    share of logged calls to the *other* model, so feedback covers both models across all kinds
    of prompts (without it the strong model is only ever seen on the prompts it was sent).
    ``tokenlean route train LOG.jsonl`` retrains on the log; ``fit_table`` does it in Python.
    """

    name = "learned"
    #: Call ids remembered for ``feedback`` without ``model=`` (the newest this many).
    remember_calls = 100_000

    def __init__(
        self,
        strong: str,
        weak: str,
        *,
        scorer: str | Any = "ensemble",
        embedder: Any = None,
        segments: bool = True,
        threshold: float = 0.5,
        strong_output: OutputControl | None = None,
        weak_output: OutputControl | None = None,
        outcome_log: str | Path | OutcomeLog | None = None,
        privacy: str | None = None,
        explore: float = 0.0,
        seed: int | None = None,
    ) -> None:
        for role, model in (("strong", strong), ("weak", weak)):
            if not isinstance(model, str) or not model:
                raise ConfigError(f"the {role} model must be a non-empty name, got {model!r}")
        if strong == weak:
            raise ConfigError(f"the strong and the weak model must differ (both {strong!r})")
        self.strong, self.weak = strong, weak
        if isinstance(scorer, str) and scorer not in SCORERS:
            raise ConfigError(f"unknown scorer {scorer!r}; choose from {sorted(SCORERS)}")
        self.scorer = SCORERS[scorer]() if isinstance(scorer, str) else scorer
        self._init_features(embedder, segments)
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise ConfigError(f"threshold must be a number, got {threshold!r}")
        self.threshold: float = float(threshold)
        self.strong_output: OutputControl | None = strong_output
        self.weak_output: OutputControl | None = weak_output
        if privacy is not None and privacy not in PRIVACY_MODES:
            raise ConfigError(f"privacy must be one of {PRIVACY_MODES}, got {privacy!r}")
        if isinstance(outcome_log, OutcomeLog):
            if privacy is not None and privacy != outcome_log.privacy:
                raise ConfigError(
                    f"privacy={privacy!r} but the OutcomeLog was made with {outcome_log.privacy!r}"
                )
            self.outcome_log: OutcomeLog | None = outcome_log
        elif outcome_log is not None:
            if not isinstance(outcome_log, (str, Path)) or not str(outcome_log):
                raise ConfigError(f"outcome_log must be a path or an OutcomeLog, got {outcome_log!r}")
            self.outcome_log = OutcomeLog(outcome_log, privacy=privacy or "text")
        else:
            if privacy is not None:
                raise ConfigError("privacy= says what the outcome log keeps: give outcome_log= too")
            self.outcome_log = None
        if isinstance(explore, bool) or not isinstance(explore, numbers.Real) or not 0.0 <= explore < 1.0:
            raise ConfigError(f"explore must be a share in [0, 1), got {explore!r}")
        if explore and self.outcome_log is None:
            raise ConfigError("explore= only makes sense with outcome_log= (it buys feedback, at a price)")
        self.explore: float = float(explore)
        self._rng: random.Random = random.Random(seed)
        self._issued: OrderedDict[str, str] = OrderedDict()
        self._issued_lock: threading.Lock = threading.Lock()
        #: Provenance of a trained or loaded router (rows, data, time); saved with it.
        self.info: dict[str, Any] = {}

    @property
    def privacy(self) -> str | None:
        return None if self.outcome_log is None else self.outcome_log.privacy

    # -- fitting ------------------------------------------------------------------------------------

    def fit(
        self,
        prompts: Sequence[str] | None,
        strong_score: Sequence[float] | np.ndarray,
        weak_score: Sequence[float] | np.ndarray,
        *,
        vectors: np.ndarray | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
        allow_missing: bool = False,
    ) -> LearnedRouter:
        """Fit the scorer on each prompt's strong and weak outcome (0/1 or any score scale).

        Outcome scorers (``needs_outcomes``) get both qualities scaled together to [0, 1].
        Classifiers get label = strong beats weak (ties count half, as RouteLLM's win-rate
        labels do), samples weighted by how much the choice matters (|strong - weak|, ties
        kept at a small weight) so the model spends its capacity where routing changes quality.

        ``prompts=None`` with ``vectors`` and ``lengths`` fits on feature vectors alone (privacy
        mode; the word-based ``lexical`` member then sits out). ``allow_missing=True`` lets a
        NaN stand for "this model's outcome is not known" (feedback from routed traffic knows
        one model per call): ``gap`` learns each model's quality from the rows where it is
        known; the ensemble's members that need both outcomes use the complete rows only.
        """
        try:
            s = np.asarray(strong_score, dtype=np.float64)
            w = np.asarray(weak_score, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError("outcomes must be numbers") from None
        texts = None if prompts is None else list(prompts)
        if texts is None and (vectors is None or lengths is None):
            raise ConfigError("without prompts, give vectors= (router.embed output) and lengths=")
        n = len(texts) if texts is not None else len(np.asarray(vectors))
        if n == 0:
            raise EmptyInputError("no outcome rows to fit a router on")
        if s.ndim != 1 or w.ndim != 1 or not (n == len(s) == len(w)):
            raise ConfigError("prompts, strong_score and weak_score must have the same length")
        if np.isinf(s).any() or np.isinf(w).any():
            raise ConfigError("outcomes must be finite numbers")
        missing = np.isnan(s) | np.isnan(w)
        if missing.any():
            if not allow_missing:
                raise ConfigError(
                    "outcomes must be finite numbers (drop rows with a missing outcome, or pass "
                    "allow_missing=True to let NaN mean 'not known')"
                )
            if (np.isnan(s) & np.isnan(w)).any():
                raise ConfigError("a row with neither outcome known says nothing: drop it")
            if not getattr(self.scorer, "accepts_missing", False):
                raise ConfigError(
                    f"the {getattr(self.scorer, 'kind', 'given')} scorer needs both outcomes on every row "
                    f"({int(missing.sum())} rows have one): use scorer='ensemble' or 'gap'"
                )
        self._center = None  # re-estimated from these prompts
        self._mu = self._sd = None
        self.info = {"rows": n, "partial_rows": int(missing.sum()), "text": texts is not None}
        if getattr(self.scorer, "needs_outcomes", False):
            lo, hi = float(np.nanmin(np.r_[s, w])), float(np.nanmax(np.r_[s, w]))
            span = (hi - lo) or 1.0
            s_q, w_q = (s - lo) / span, (w - lo) / span
            if getattr(self.scorer, "uses_text", False):  # words only: no embedding needed
                if texts is None:
                    raise ConfigError("the lexical scorer learns from prompt texts; feature rows have none")
                self.scorer.fit_outcomes(texts, s_q, w_q)
                return self
            x = self._fit_features(texts, vectors, lengths)
            if getattr(self.scorer, "takes_texts", False):
                self.scorer.fit_outcomes(x, s_q, w_q, texts=texts)
            else:
                self.scorer.fit_outcomes(x, s_q, w_q)
            return self
        x = self._fit_features(texts, vectors, lengths, standardize=getattr(self.scorer, "kind", "") != "knn")
        gap = s - w
        y = np.where(gap > 0, 1.0, np.where(gap < 0, 0.0, 0.5))
        scale = np.abs(gap).max() or 1.0
        weight = 0.25 + np.abs(gap) / scale
        self.scorer.fit(x, y, weight)
        return self

    def fit_table(self, table: OutcomeTable) -> LearnedRouter:
        """Fit on an outcome file or log read by ``tokenlean.routing.outcomes.read_outcomes``.

        Rows where only one of the two models' outcome is known are used as ``fit`` does with
        ``allow_missing=True``; rows where neither is known are dropped.
        """
        s, w = table.pair(self.strong, self.weak)
        keep = ~(np.isnan(s) & np.isnan(w))
        if not keep.any():
            raise EmptyInputError(
                f"{table.source}: no row has an outcome of {self.strong!r} or {self.weak!r}"
            )
        if not keep.all():
            table = table.subset(np.flatnonzero(keep))
            s, w = table.pair(self.strong, self.weak)
        texts, vectors = self._table_inputs(table)
        self.fit(
            texts,
            s,
            w,
            vectors=vectors,
            lengths=None if texts is not None else table.lengths,
            allow_missing=True,
        )
        self.info.update({"source": Path(table.source).name, "sha256": table.sha256})
        return self

    # -- scoring and deciding ---------------------------------------------------------------------------

    def score(
        self,
        prompts: Sequence[str] | None,
        *,
        vectors: np.ndarray | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        texts = None if prompts is None else list(prompts)
        if getattr(self.scorer, "uses_text", False):
            if texts is None:
                raise ConfigError("the lexical scorer scores prompt texts; give prompts")
            return np.asarray(self.scorer.predict(texts), dtype=np.float64)
        x = self._norm(self.features(texts, vectors, lengths))
        if getattr(self.scorer, "takes_texts", False):
            return np.asarray(self.scorer.predict(x, texts=texts), dtype=np.float64)
        return np.asarray(self.scorer.predict(x), dtype=np.float64)

    def score_table(self, table: OutcomeTable) -> np.ndarray:
        """Scores of an outcome table's rows (text rows embedded, privacy rows as given)."""
        texts, vectors = self._table_inputs(table)
        return self.score(texts, vectors=vectors, lengths=None if texts is not None else table.lengths)

    def calibrate(
        self,
        prompts: Sequence[str],
        *,
        strong_share: float | None = None,
        budget: float | None = None,
        weak_cost: float | None = None,
        strong_cost: float | None = None,
        vectors: np.ndarray | None = None,
    ) -> float:
        """Set ``threshold`` for a target strong share, or the share a per-call budget affords."""
        if strong_share is None:
            if budget is None or weak_cost is None or strong_cost is None:
                raise ConfigError("give strong_share, or budget with weak_cost and strong_cost")
            strong_share = share_for_budget(budget, weak_cost, strong_cost)
        self.threshold = calibrate_threshold(self.score(prompts, vectors=vectors), strong_share)
        return self.threshold

    def decide(self, request: Request) -> Decision | None:
        text = prompt_text(request)
        if not text.strip():
            return None
        vec = None
        if self.outcome_log is not None and not getattr(self.scorer, "uses_text", False):
            vec = self.embed([text])  # embedded once: scored, and logged in privacy mode
        p = float(self.score([text], vectors=vec)[0])
        what = "strong-model gain" if getattr(self.scorer, "needs_outcomes", False) else "P(strong wins)"
        strong = p >= self.threshold
        reason = (
            f"learned ({self.scorer.kind}): {what}={p:.2f} {'>=' if strong else '<'} {self.threshold:.2f}"
        )
        if self.outcome_log is None:
            return Decision(
                self.strong if strong else self.weak,
                reason,
                self.name,
                score=p,
                output=self.strong_output if strong else self.weak_output,
            )
        explored = bool(self.explore) and self._rng.random() < self.explore
        if explored:
            strong = not strong
            reason += f"; exploring: sent to the {'strong' if strong else 'weak'} model instead"
        target = self.strong if strong else self.weak
        cid = request.metadata.get("call_id")
        call_id = cid if isinstance(cid, str) and cid else uuid.uuid4().hex
        record: dict[str, Any] = {
            "type": "decision",
            "call_id": call_id,
            "router": self.name,
            "strong": self.strong,
            "weak": self.weak,
            "target": target,
            "score": p if math.isfinite(p) else None,
            "threshold": self.threshold if math.isfinite(self.threshold) else None,
            "explore": explored,
        }
        if self.outcome_log.privacy == "features":
            vector = vec[0] if vec is not None else self.embed([text])[0]
            record["features"] = encode_features(vector, embedder=self.embedder.name, chars=len(text))
        else:
            record["prompt"] = text
        self.outcome_log.write(record, strict=False)
        with self._issued_lock:
            self._issued[call_id] = target
            self._issued.move_to_end(call_id)
            while len(self._issued) > self.remember_calls:
                self._issued.popitem(last=False)
        return Decision(
            target,
            reason,
            self.name,
            score=p,
            output=self.strong_output if strong else self.weak_output,
            extra={"call_id": call_id, **({"explore": True} if explored else {})},
        )

    def feedback(
        self,
        call_id: str,
        ok: bool | None = None,
        *,
        score: float | None = None,
        model: str | None = None,
    ) -> None:
        """Record how a routed call's answer did: ``ok=True/False`` or a judge ``score``.

        ``model`` defaults to the model this router sent the call to (give it when the call
        fell back to another model, when the router has restarted since, or to add the other
        model's outcome, e.g. from an offline judge of both answers). Appended to the outcome
        log; ``tokenlean route train`` joins it to the decision by call id.
        """
        if self.outcome_log is None:
            raise ConfigError("feedback needs an outcome log: LearnedRouter(..., outcome_log=PATH)")
        if not isinstance(call_id, str) or not call_id:
            raise InputError(f"call_id must be the non-empty id of a routed call, got {call_id!r}")
        if (ok is None) == (score is None):
            raise InputError("give ok=True/False or score=NUMBER (one of them)")
        record: dict[str, Any] = {"type": "feedback", "call_id": call_id}
        if ok is not None:
            if not isinstance(ok, bool):
                raise InputError(f"ok must be True or False, got {ok!r}")
            value = 1.0 if ok else 0.0
        else:
            if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
                raise InputError(f"score must be a finite number, got {score!r}")
            value = float(score)
        if model is None:
            with self._issued_lock:
                model = self._issued.get(call_id)
            if model is None:
                raise InputError(
                    f"call id {call_id!r} was not routed by this router since it started: pass model="
                )
        if model not in (self.strong, self.weak):
            raise InputError(f"model must be {self.strong!r} or {self.weak!r}, got {model!r}")
        record.update({"model": model, "score": value})
        if ok is not None:
            record["ok"] = ok
        self.outcome_log.write(record)

    # -- persistence ----------------------------------------------------------------------------------

    def save(self, path: str | Path, *, compact: bool = False) -> Path:
        """Write the fitted router to the folder ``path``: ``router.json`` + ``arrays.npz``.

        No pickle: every array is a plain numeric numpy array (read back with
        ``allow_pickle=False``), everything else JSON. ``compact=True`` stores the large arrays
        in 16 bits (and the ``knn-gap`` neighbours' unit vectors in 8 bits with a per-row scale),
        a much smaller file. A compact router's scores are not bit-identical to this one's
        (``benchmarks/routing_honest.py`` measures how little they move), so a few prompts at the
        threshold may flip; a router loaded from a compact file scores
        exactly as the file says and saves to the same file again. The embedder the
        router expects is recorded (name, dimension, a SHA-256 of the static embedder's table,
        and its vectors for a few probe texts), and the router's own scores of those probes, so
        ``load`` can refuse an embedder that would route differently.
        """
        return save_router(self, Path(path), compact=compact)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        strong: str | None = None,
        weak: str | None = None,
        embedder: Any = None,
        strict: bool = False,
        check_embedder: bool = True,
        **options: Any,
    ) -> LearnedRouter:
        """A router saved by ``save``; ``strong``/``weak`` rename its targets.

        The embedder (default: the static one) must be the one it was trained on: same name
        and dimension, and the same vectors for the saved probe texts (to 2e-3; else
        ``EmbedderMismatchError``). A static table whose SHA-256 differs but whose vectors
        agree (a rebuild on another CPU may differ in the last bits) loads with a warning, or
        raises with ``strict=True``. ``options`` are the runtime ones of the constructor
        (``outcome_log``, ``privacy``, ``explore``, ``seed``, ``threshold``, ``strong_output``,
        ``weak_output``). A missing, corrupt or newer-format file raises ``RouterFileError``.
        """
        return load_router(
            cls,
            Path(path),
            strong=strong,
            weak=weak,
            embedder=embedder,
            strict=strict,
            check_embedder=check_embedder,
            options=options,
        )

    @classmethod
    def default(cls, strong: str, weak: str, **options: Any) -> LearnedRouter:
        """The router shipped with tokenlean, routing between your ``strong`` and ``weak`` models.

        Trained on all of RouteLLM's GSM8K, MMLU and MT-Bench outcomes (GPT-4 vs Mixtral-8x7B,
        contaminated prompts excluded; ``scripts/train_default_router.py`` rebuilds it), with
        the threshold set so half of those prompts go strong. It ranks prompts by how much a
        strong model tends to help; set the share for *your* traffic with
        ``router.calibrate(your_prompts, strong_share=...)`` (no outcomes needed), and retrain
        on your own outcomes (``tokenlean route train``) when you have them. Needs the
        ``embeddings`` extra (the static embedder is distilled from MiniLM on first use).
        ``options`` as for ``load``.
        """
        if not (DEFAULT_ROUTER_DIR / "router.json").is_file():
            raise RouterFileError(
                f"the default router is not installed at {DEFAULT_ROUTER_DIR}; "
                "build it with scripts/train_default_router.py"
            )
        return cls.load(DEFAULT_ROUTER_DIR, strong=strong, weak=weak, **options)
