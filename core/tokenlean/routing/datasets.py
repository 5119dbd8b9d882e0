"""Outcome datasets: prompts with how well a strong and a weak model answered each.

Read by ``tokenlean route eval``, the offline report (``tokenlean.routing.eval``), the benchmarks
and ``scripts/train_default_router.py``: outcome CSVs (a ``prompt`` column and one column per
model) and RouteLLM's GSM8K, MMLU and MT-Bench sets, decontaminated as RouteLLM does.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokenlean.errors import ConfigError, EmptyInputError, InputError

__all__ = [
    "ROUTELLM_STRONG",
    "ROUTELLM_WEAK",
    "OutcomeData",
    "load_mt_bench",
    "load_outcome_csv",
    "load_outcomes",
    "load_routellm",
]

ROUTELLM_STRONG = "gpt-4-1106-preview"
ROUTELLM_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"


@dataclass
class OutcomeData:
    """Prompts with the strong and the weak model's quality on each (same length arrays)."""

    name: str
    prompts: list[str]
    strong: np.ndarray
    weak: np.ndarray
    strong_model: str = "strong"
    weak_model: str = "weak"
    skipped: int = 0
    groups: list[str] | None = None  # e.g. the MMLU subject, for stratified splits
    weak_responses: list[str] | None = None

    def __post_init__(self) -> None:
        self.strong = np.asarray(self.strong, dtype=np.float64)
        self.weak = np.asarray(self.weak, dtype=np.float64)
        if not (len(self.prompts) == len(self.strong) == len(self.weak)):
            raise InputError("prompts, strong and weak outcomes must have the same length")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def strong_quality(self) -> float:
        return float(self.strong.mean())

    @property
    def weak_quality(self) -> float:
        return float(self.weak.mean())

    def subset(self, idx: np.ndarray) -> OutcomeData:
        pick = [int(i) for i in idx]
        return OutcomeData(
            self.name,
            [self.prompts[i] for i in pick],
            self.strong[idx],
            self.weak[idx],
            self.strong_model,
            self.weak_model,
            0,
            None if self.groups is None else [self.groups[i] for i in pick],
            None if self.weak_responses is None else [self.weak_responses[i] for i in pick],
        )


def _truth(value: str) -> float | None:
    v = value.strip()
    if v == "" or v.lower() in ("nan", "none", "null", "na"):
        return None
    low = v.lower()
    if low == "true":
        return 1.0
    if low == "false":
        return 0.0
    try:
        x = float(v)
    except ValueError:
        return None
    return None if math.isnan(x) else x


def _contaminated(path: Path) -> set[str]:
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.add(json.loads(line)["eval_prompt"])
    return out


def load_outcome_csv(
    paths: str | Path | Iterable[str | Path],
    strong: str,
    weak: str,
    *,
    name: str | None = None,
    exclude: set[str] | None = None,
    group_from_file: bool = False,
) -> OutcomeData:
    """Read outcome CSVs: a ``prompt`` column and one 0/1 or score column per model.

    Extra columns are ignored; rows whose strong or weak outcome is missing are skipped and
    counted in ``OutcomeData.skipped``. ``{model}_response`` columns, when present, are kept
    for cascade evaluation.
    """
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not files:
        raise EmptyInputError("no CSV files given")
    prompts: list[str] = []
    s_out: list[float] = []
    w_out: list[float] = []
    groups: list[str] = []
    responses: list[str] = []
    skipped = 0
    has_resp = True
    csv.field_size_limit(1 << 27)
    for f in files:
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            for col in ("prompt", strong, weak):
                if col not in cols:
                    raise InputError(f"{f}: missing column {col!r} (columns: {cols[:8]})")
            has_resp = has_resp and f"{weak}_response" in cols
            for row in reader:
                p = row["prompt"]
                if exclude and p in exclude:
                    continue
                s, w = _truth(row.get(strong) or ""), _truth(row.get(weak) or "")
                if s is None or w is None or not p:
                    skipped += 1
                    continue
                prompts.append(p)
                s_out.append(s)
                w_out.append(w)
                groups.append(f.stem)
                responses.append(row.get(f"{weak}_response") or "")
    if not prompts:
        raise EmptyInputError(f"no usable rows in {[str(f) for f in files]}")
    return OutcomeData(
        name or files[0].stem,
        prompts,
        np.array(s_out),
        np.array(w_out),
        strong_model=strong,
        weak_model=weak,
        skipped=skipped,
        groups=groups if group_from_file else None,
        weak_responses=responses if has_resp else None,
    )


def load_mt_bench(folder: Path, strong: str = ROUTELLM_STRONG, weak: str = ROUTELLM_WEAK) -> OutcomeData:
    """MT-Bench: route on the first turn; quality = the judge's mean score over both turns."""
    bad = _contaminated(folder / "contaminated_prompts.jsonl")
    questions = [
        json.loads(x)
        for x in (folder / "question.jsonl").read_text(encoding="utf-8").splitlines()
        if x.strip()
    ]
    scores: dict[tuple[int, str], list[float]] = {}
    answers: dict[int, str] = {}
    for line in (folder / "judgements.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        j = json.loads(line)
        if j.get("score") is None or float(j["score"]) < 0:
            continue
        scores.setdefault((int(j["question_id"]), j["model"]), []).append(float(j["score"]))
        prompt = str(j.get("user_prompt") or "")
        start, end = "[The Start of Assistant's Answer]\n", "\n[The End of Assistant's Answer]"
        if j["model"] == weak and int(j.get("turn", 1)) == 1 and start in prompt:
            answers[int(j["question_id"])] = prompt.split(start, 1)[1].split(end, 1)[0].strip()
    prompts, s_out, w_out, resp, skipped = [], [], [], [], 0
    for q in questions:
        turns = q["turns"]
        if turns[0] in bad or (len(turns) > 1 and turns[1] in bad):
            continue
        qid = int(q["question_id"])
        s, w = scores.get((qid, strong)), scores.get((qid, weak))
        if not s or not w:
            skipped += 1
            continue
        prompts.append(turns[0])
        s_out.append(sum(s) / len(s))
        w_out.append(sum(w) / len(w))
        resp.append(answers.get(qid, ""))
    return OutcomeData(
        "mt_bench",
        prompts,
        np.array(s_out),
        np.array(w_out),
        strong_model=strong,
        weak_model=weak,
        skipped=skipped,
        weak_responses=resp if any(resp) else None,
    )


def load_routellm(root: str | Path) -> dict[str, OutcomeData]:
    """GSM8K, MMLU and MT-Bench from ``root`` (``.../routing/routellm``), decontaminated as RouteLLM does."""
    root = Path(root)
    out: dict[str, OutcomeData] = {}
    g = root / "gsm8k"
    if (g / "gsm8k_responses.csv").exists():
        out["gsm8k"] = load_outcome_csv(
            g / "gsm8k_responses.csv",
            ROUTELLM_STRONG,
            ROUTELLM_WEAK,
            name="gsm8k",
            exclude=_contaminated(g / "contaminated_prompts.jsonl"),
        )
    m = root / "mmlu"
    files = sorted((m / "responses").glob("mmlu_*.csv"))
    if files:
        out["mmlu"] = load_outcome_csv(
            files,
            ROUTELLM_STRONG,
            ROUTELLM_WEAK,
            name="mmlu",
            exclude=_contaminated(m / "contaminated_prompts.jsonl"),
            group_from_file=True,
        )
    t = root / "mt_bench"
    if (t / "question.jsonl").exists():
        out["mt_bench"] = load_mt_bench(t)
    if not out:
        raise EmptyInputError(f"no RouteLLM outcome data under {root}")
    return out


def load_outcomes(
    csv_files: Sequence[str | Path] | None = None,
    strong: str | None = None,
    weak: str | None = None,
    data_dir: str | Path | None = None,
) -> dict[str, OutcomeData]:
    """The datasets an evaluation names: outcome CSVs (one set each, named by file), or RouteLLM's
    sets under ``data_dir/routing/routellm`` (``data_dir`` laid out as ``../shared/datasets``).

    Shared by ``tokenlean route eval`` and ``benchmarks/routing.py``; a missing column name or
    data folder is a ``ConfigError`` that says what to pass.
    """
    if csv_files:
        if not (strong and weak):
            raise ConfigError("--csv needs --strong MODEL and --weak MODEL (the outcome column names)")
        return {Path(c).stem: load_outcome_csv(c, strong, weak, name=Path(c).stem) for c in csv_files}
    if data_dir is None:
        raise ConfigError("give --csv FILE --strong M --weak M, or --data DIR")
    root = Path(data_dir) / "routing" / "routellm"
    if not root.exists():
        raise ConfigError(
            f"routing data not found under {root}; pass --data DIR (laid out as ../shared/datasets)"
        )
    return load_routellm(root)
