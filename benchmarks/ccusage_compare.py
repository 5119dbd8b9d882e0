"""Claude Code token totals: tokenlean's transcript reader against ccusage on the same files.

    python benchmarks/ccusage_compare.py [--data DIR] [--json OUT] [--quick] [--ccusage VERSION]

``DIR`` is a Claude Code config folder (``~/.claude``: its ``projects/`` is read in place) or a
folder of transcripts in that layout; the default is the hand-built fixtures
(``tests/core/profile/fixtures/claude_code``), whose other folders of ``*.jsonl`` (``inline/``) are
copied into a scratch config folder as projects of their own so both tools see every file.

Both sides read the same files: ccusage (``npx``, pinned to ``CCUSAGE_VERSION``) with
``CLAUDE_CONFIG_DIR`` pointing at them, ``--offline --mode calculate --timezone UTC`` (its bundled
LiteLLM prices, never a transcript's ``costUSD``, days in UTC), and tokenlean's reader
(``read_trace`` per transcript, then ``merge_agent_sessions``, as ``read_traces`` does). Compared:

* tokens per session (ccusage's session id is the transcript's file name; a subagent's file
  under ``<session>/subagents/`` counts in ``<session>``, as in tokenlean), per UTC day and in
  total: uncached input, output, cache creation (writes), cache read. ``equal_tokens`` holds when
  every one of those is equal.
  A response is dated by its first row here and by its kept (last) row in ccusage: the two can
  differ only for a response written across midnight UTC.
* cost, with both sides priced from the same table: ccusage's per-token prices are read back
  from ccusage itself (a probe run: 100,000 tokens of one kind for each model seen, each in a file
  of its own, priced by the same ccusage command) into a ``PriceTable``, and tokenlean prices each
  call with it the way the profiler does (``ProfileContext``). ccusage's table has no 1-hour
  cache-write price (it prices every write at the 5-minute rate), so neither side charges the
  1-hour surcharge here; ``totals.ours_cost_default_table`` is tokenlean's own figure with it.
  ``cost_rel_diff = |ours - ccusage| / ccusage`` on the totals.

Why 19.0.3: ccusage 16.x-18.x keep the *first* row of a response (``message.id:requestId``),
whose ``output_tokens`` Claude Code writes mid-stream (ccusage issues #797, #888, #901, #938), and
do not deduplicate rows without a ``requestId`` (#976, fixed by #985); 19.x keeps the row with the
most tokens and keys rows without a request id by message id, which is tokenlean's rule. Their
``session`` report also groups by the transcript's *folder*, so sessions are not comparable there
(``--ccusage 16.2.5`` still runs: totals and days are compared). 20.x is a native binary with no
linux-x64 build on the registry used here. ccusage 19 needs Node >= 22: with an older ``node``
the ``node@22`` npm package is fetched next to it (``npx -p node@22 -p ccusage@19.0.3``).

Without ``npx`` nothing runs: a message says so and the JSON is ``{"not_run": reason}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _output import write_json

from tokenlean.errors import TraceFormatError
from tokenlean.metering.prices import PriceTable
from tokenlean.profile.coding_agents import find_claude_code_sessions, merge_agent_sessions
from tokenlean.profile.estimates import ProfileContext
from tokenlean.profile.readers import read_trace
from tokenlean.profile.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "core" / "profile" / "fixtures" / "claude_code"
CCUSAGE_VERSION = "19.0.3"
NODE_PACKAGE = "node@22"  # ccusage 19 needs Node >= 22
FIELDS = ("input", "output", "cache_creation", "cache_read")
_CC_FIELDS = {
    "input": "inputTokens",
    "output": "outputTokens",
    "cache_creation": "cacheCreationTokens",
    "cache_read": "cacheReadTokens",
}
_PROBE_TOKENS = 100_000  # below the 200k long-context threshold
_PROBE_USAGE = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_creation": "cache_creation_input_tokens",
    "cache_read": "cache_read_input_tokens",
}
_PRICE_KEYS = {
    "input": "input",
    "output": "output",
    "cache_creation": "cache_write",
    "cache_read": "cached_input",
}
_SYNTHETIC = "<synthetic>"


class CcusageError(RuntimeError):
    """ccusage could not be run or printed something that is not its JSON report."""


# -- the files ---------------------------------------------------------------------------------
def claude_config(data: Path, work: Path) -> Path:
    """A ``CLAUDE_CONFIG_DIR`` holding ``data``'s transcripts.

    ``data`` itself when its transcripts are all under ``projects/`` (a real ``~/.claude``);
    otherwise a copy under ``work`` in which ``projects/`` is copied and every other folder of
    ``*.jsonl`` files becomes a project of its own (ccusage reads ``projects/<project>/`` only).
    """
    data = data.expanduser().resolve()
    if data.name == "projects" and not (data / "projects").is_dir():
        data = data.parent
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such folder")
    loose = [
        d
        for d in sorted(data.iterdir())
        if d.is_dir() and d.name != "projects" and any(p.suffix == ".jsonl" for p in d.iterdir())
    ]
    if (data / "projects").is_dir() and not loose:
        return data
    config = work / "claude"
    projects = config / "projects"
    if (data / "projects").is_dir():
        shutil.copytree(data / "projects", projects)
    for d in loose:
        shutil.copytree(d, projects / d.name, dirs_exist_ok=True)
    if not projects.is_dir():
        raise FileNotFoundError(f"{data}: no projects/ folder and no folder of *.jsonl transcripts")
    return config


def session_of(source: str) -> str:
    """ccusage's session id of a call read from ``source`` (``path:line``): the transcript's file
    name, or for a subagent's file (``<session>/subagents/*.jsonl``) its session's."""
    path = Path(source.rsplit(":", 1)[0])
    return path.parent.parent.name if path.parent.name == "subagents" else path.stem


def _day(started_at: float | None) -> str:
    return datetime.fromtimestamp(started_at, UTC).date().isoformat() if started_at is not None else "unknown"


def read_ours(config: Path) -> tuple[Trace, list[str]]:
    """Every Claude Code call under ``config/projects`` (each response once), and the transcripts
    the reader rejected (``path: reason``; ccusage skips unreadable lines instead)."""
    parts: list[Trace] = []
    rejected: list[str] = []
    for f in find_claude_code_sessions(config / "projects"):
        try:
            parts.append(read_trace(f, fmt="claude-code", empty_sessions=True))
        except TraceFormatError as exc:
            rejected.append(str(exc))
    return merge_agent_sessions(Trace.merge(parts)), rejected


def call_rows(trace: Trace, costs: Sequence[Decimal] | None = None) -> list[dict[str, Any]]:
    """One row per call: session, UTC day, model, the four token counts in ccusage's units, cost."""
    rows = []
    for i, c in enumerate(trace.calls):
        u = c.usage
        rows.append(
            {
                "session": session_of(c.source),
                "day": _day(c.started_at),
                "model": c.model or "unknown",
                "input": u.uncached_input_tokens,
                "output": u.output_tokens,
                "cache_creation": u.cache_write_tokens,
                "cache_read": u.cached_input_tokens,
                "cost": float(costs[i]) if costs is not None else 0.0,
            }
        )
    return rows


# -- ccusage -----------------------------------------------------------------------------------
def _major(version: str) -> int:
    head = version.lstrip("v").split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def node_major() -> int:
    """The major version of the ``node`` on PATH (0 when there is none)."""
    node = shutil.which("node")
    if node is None:
        return 0
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return _major(out.strip())


def ccusage_command(version: str, report: str, node: int) -> list[str]:
    """The ``npx`` command line of one ccusage JSON report on the Claude Code data."""
    if _major(version) >= 19:
        pkgs = ["-p", f"ccusage@{version}"]
        if node < 22:
            pkgs = ["-p", NODE_PACKAGE, *pkgs]
        head = ["npx", "-y", *pkgs, "ccusage", "claude", report]
    else:
        head = ["npx", "-y", f"ccusage@{version}", report]
    return [*head, "--json", "--offline", "--mode", "calculate", "--timezone", "UTC"]


def run_ccusage(cmd: Sequence[str], config: Path, cwd: Path, timeout: float = 600) -> dict[str, Any]:
    """Run ``cmd`` on the transcripts under ``config`` and parse its JSON."""
    env = {
        **os.environ,
        "CLAUDE_CONFIG_DIR": str(config),
        "NO_COLOR": "1",
        "TZ": "UTC",
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
    }
    try:
        proc = subprocess.run(list(cmd), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CcusageError(f"{' '.join(cmd)}: {exc}") from exc
    text = proc.stdout
    if proc.returncode == 0 and text.strip() == "[]":  # ccusage 19 on a folder without usage
        return {}
    start = text.find("{")
    if proc.returncode != 0 or start < 0:
        tail = (proc.stderr or text).strip()[-800:]
        raise CcusageError(f"{' '.join(cmd)} exited with {proc.returncode}: {tail}")
    try:
        data = json.loads(text[start:])
    except json.JSONDecodeError as exc:
        raise CcusageError(f"{' '.join(cmd)} printed no JSON report: {exc}") from exc
    if not isinstance(data, dict):
        raise CcusageError(f"{' '.join(cmd)} printed {type(data).__name__}, not a JSON object")
    return data


def _entries(report: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = report.get(key)
    return [e for e in value if isinstance(e, Mapping)] if isinstance(value, list) else []


def ccusage_models(*reports: Mapping[str, Any]) -> set[str]:
    """The models named in ccusage reports' per-model breakdowns."""
    out: set[str] = set()
    for report in reports:
        for key in ("sessions", "daily"):
            for e in _entries(report, key):
                out.update(
                    str(b["modelName"]) for b in e.get("modelBreakdowns") or () if isinstance(b, Mapping)
                )
    return out - {_SYNTHETIC}


def probe_files(models: Iterable[str], projects: Path) -> dict[str, tuple[str, str]]:
    """One transcript per (model, token kind), ``projects/<name>/<name>.jsonl`` (a session of that
    name for ccusage 19, which names a session by its file, and for 16-18, by its folder);
    name -> (model, kind)."""
    out: dict[str, tuple[str, str]] = {}
    for i, model in enumerate(sorted(models)):
        for kind, field in _PROBE_USAGE.items():
            stem = f"probe-{i}-{kind}"
            folder = projects / stem
            folder.mkdir(parents=True, exist_ok=True)
            usage = {f: 0 for f in _PROBE_USAGE.values()}
            usage[field] = _PROBE_TOKENS
            row = {
                "type": "assistant",
                "sessionId": stem,
                "timestamp": "2025-01-01T00:00:00.000Z",
                "requestId": f"req_{stem}",
                "message": {"id": f"msg_{stem}", "model": model, "role": "assistant", "usage": usage},
            }
            line = json.dumps(row, separators=(",", ":"))  # as Claude Code writes (ccusage 19 scans for that)
            (folder / f"{stem}.jsonl").write_text(line + "\n", encoding="utf-8")
            out[stem] = (model, kind)
    return out


def rates_from_probe(report: Mapping[str, Any], probes: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """Per-model USD per million tokens of each kind, from the session report of the probe files."""
    cost = {str(e.get("sessionId")): float(e.get("totalCost") or 0.0) for e in _entries(report, "sessions")}
    rates: dict[str, dict[str, str]] = {}
    for stem, (model, kind) in probes.items():
        per_million = cost.get(stem, 0.0) * 1_000_000 / _PROBE_TOKENS
        rates.setdefault(model, {})[_PRICE_KEYS[kind]] = f"{per_million:.10g}"
    return rates


def price_table(rates: Mapping[str, Mapping[str, str]], version: str) -> PriceTable:
    """The ``PriceTable`` of ccusage's prices (no 1-hour write price: ccusage has none)."""
    source = f"ccusage {version} --offline (probed)"
    return PriceTable.from_dict(
        {"models": {m: dict(r) for m, r in rates.items()}, "meta": {"source": source}}
    )


def priced_rows(trace: Trace, rates: Mapping[str, Mapping[str, str]], version: str) -> list[dict[str, Any]]:
    """``call_rows`` with each call priced from ccusage's prices as the profiler prices it."""
    return call_rows(trace, ProfileContext(trace, price_table(rates, version)).baseline_costs)


# -- the comparison ----------------------------------------------------------------------------
def _zero() -> dict[str, Any]:
    return {**dict.fromkeys(FIELDS, 0), "cost": 0.0}


def _sum_rows(rows: Iterable[Mapping[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        acc = out.setdefault(str(r[key]), _zero())
        for f in FIELDS:
            acc[f] += int(r[f])
        acc["cost"] += float(r["cost"])
    return out


def _cc_counts(e: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {f: int(e.get(k) or 0) for f, k in _CC_FIELDS.items()}
    out["cost"] = float(e.get("totalCost") or 0.0)
    return out


def rel_diff(ours: float, theirs: float) -> float | None:
    """``|ours - theirs| / theirs``; None when ccusage's is 0 (it priced nothing: no comparison)."""
    return abs(ours - theirs) / abs(theirs) if theirs else None


def _pair(
    key: str, name: str, ours: Mapping[str, Any] | None, cc: Mapping[str, Any] | None
) -> dict[str, Any]:
    a, b = dict(ours or _zero()), dict(cc or _zero())
    a["cost"], b["cost"] = round(a["cost"], 9), round(b["cost"], 9)
    return {
        name: key,
        "ours": a,
        "ccusage": b,
        "equal_tokens": all(a[f] == b[f] for f in FIELDS),
        "cost_rel_diff": rel_diff(a["cost"], b["cost"]),
    }


def _pairs(name: str, ours: Mapping[str, Any], cc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [_pair(k, name, ours.get(k), cc.get(k)) for k in sorted(set(ours) | set(cc))]


def compare(
    rows: Sequence[Mapping[str, Any]],
    sessions: Mapping[str, Any],
    daily: Mapping[str, Any] | None = None,
    *,
    sessions_comparable: bool = True,
) -> dict[str, Any]:
    """tokenlean's call rows against ccusage's ``session`` (and ``daily``) JSON reports."""
    cc_sessions = {str(e.get("sessionId")): _cc_counts(e) for e in _entries(sessions, "sessions")}
    totals_raw = sessions.get("totals")
    cc_total = (
        _cc_counts(totals_raw)
        if isinstance(totals_raw, Mapping)
        else _sum_rows([{**v, "k": ""} for v in cc_sessions.values()], "k").get("", _zero())
    )
    ours_total = _sum_rows([{**r, "k": ""} for r in rows], "k").get("", _zero())
    out: dict[str, Any] = {
        "calls": len(rows),
        "sessions_comparable": sessions_comparable,
        "sessions": _pairs("session", _sum_rows(rows, "session"), cc_sessions),
        "totals": _pair("total", "key", ours_total, cc_total),
    }
    checked = [out["totals"]] + (out["sessions"] if sessions_comparable else [])
    if daily is not None:
        cc_days = {str(e.get("date")): _cc_counts(e) for e in _entries(daily, "daily")}
        out["days"] = _pairs("day", _sum_rows(rows, "day"), cc_days)
        checked += out["days"]
    out["equal_tokens"] = all(p["equal_tokens"] for p in checked)
    out["cost_rel_diff"] = out["totals"]["cost_rel_diff"]
    return out


def _cell(a: int, b: int) -> str:
    return f"{a:,}" if a == b else f"{a:,}≠{b:,}"


def format_table(result: Mapping[str, Any]) -> str:
    """The comparison as text: one line per session, day and the total; ``ours≠ccusage`` marks a
    difference, cost is ours / ccusage's."""
    head = f"{'':<44} {'input':>10} {'output':>12} {'cache create':>16} {'cache read':>16}  {'cost USD (ours / ccusage)':>27}"
    lines = [head, "-" * len(head)]
    sessions = result.get("sessions", []) if result.get("sessions_comparable", True) else []
    groups = [("session", sessions), ("day", result.get("days", []))]
    for name, pairs in [*groups, ("key", [result["totals"]])]:
        for p in pairs:
            a, b = p["ours"], p["ccusage"]
            label = f"{name} {p[name]}" if name != "key" else "total"
            if len(label) > 44:
                label = label[:43] + "…"
            cells = [_cell(a[f], b[f]) for f in FIELDS]
            cost = f"{a['cost']:.6f} / {b['cost']:.6f}"
            lines.append(
                f"{label:<44} {cells[0]:>10} {cells[1]:>12} {cells[2]:>16} {cells[3]:>16}  {cost:>27}"
            )
    if not result.get("sessions_comparable", True):
        lines.append("sessions left out: this ccusage version groups its sessions by folder, not by file")
    rel = result.get("cost_rel_diff")
    lines.append(
        f"tokens equal: {'yes' if result.get('equal_tokens') else 'NO'}; cost relative difference: "
        + ("n/a (ccusage priced nothing)" if rel is None else f"{rel:.6%}")
    )
    return "\n".join(lines)


# -- running it --------------------------------------------------------------------------------
def run(data: Path, version: str, quick: bool) -> dict[str, Any]:
    """The whole comparison on ``data`` (``CcusageError`` when ccusage cannot be run)."""
    node = node_major()
    with tempfile.TemporaryDirectory(prefix="ccusage-compare-") as tmp:
        work = Path(tmp)
        config = claude_config(data, work)
        trace, rejected = read_ours(config)
        sessions = run_ccusage(ccusage_command(version, "session", node), config, work)
        daily = None if quick else run_ccusage(ccusage_command(version, "daily", node), config, work)
        models = {c.model for c in trace.calls if c.model and c.model != _SYNTHETIC}
        models |= ccusage_models(sessions, *([daily] if daily else []))
        probe_config = work / "probe"
        probes = probe_files(models, probe_config / "projects")
        probe_report = (
            run_ccusage(ccusage_command(version, "session", node), probe_config, work) if probes else {}
        )
    rates = rates_from_probe(probe_report, probes)
    rows = priced_rows(trace, rates, version)
    result = compare(rows, sessions, daily, sessions_comparable=_major(version) >= 19)
    try:
        listed = sum(ProfileContext(trace, PriceTable.default()).baseline_costs, Decimal(0))
        result["totals"]["ours_cost_default_table"] = round(float(listed), 9)
    except Exception as exc:  # informational only
        result["totals"]["ours_cost_default_table"] = f"not priced: {exc}"
    return {
        "ccusage_version": version,
        "ccusage_command": " ".join(ccusage_command(version, "session", node)),
        "node_major": node,
        "data": str(data),
        "quick": quick,
        "rejected_by_reader": rejected,
        "prices": rates,
        **result,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=FIXTURES, help="Claude Code config or transcripts folder")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="the session report only (no daily report)")
    ap.add_argument("--ccusage", default=CCUSAGE_VERSION, help=f"ccusage version (default {CCUSAGE_VERSION})")
    args = ap.parse_args(argv)
    if shutil.which("npx") is None:
        reason = "npx is not on PATH: install Node.js (with npm) to compare with ccusage"
        print(f"ccusage comparison not run: {reason}")
        write_json(args.json, {"not_run": reason})
        return 0
    try:
        results = run(args.data, args.ccusage, args.quick)
    except (CcusageError, FileNotFoundError) as exc:
        print(f"ccusage comparison not run: {exc}", file=sys.stderr)
        write_json(args.json, {"not_run": str(exc)})
        return 1
    print(
        f"ccusage {results['ccusage_version']} vs tokenlean on {results['data']} ({results['calls']} calls)"
    )
    print(format_table(results))
    for line in results["rejected_by_reader"]:
        print(f"rejected by tokenlean's reader: {line}")
    write_json(args.json, results)
    rel = results["cost_rel_diff"]
    cost_ok = rel <= 0.01 if rel is not None else results["totals"]["ours"]["cost"] == 0
    return 0 if results["equal_tokens"] and cost_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
