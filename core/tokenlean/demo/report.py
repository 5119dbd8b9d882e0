"""How the demo shows what it measured: the console tables and the section of the HTML report."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = ["correct_cell", "estimate_rows", "estimate_table", "fmt_s", "html_section", "notes", "rich_tables"]


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


def correct_cell(r: dict[str, Any]) -> str:
    """``"7/18 → 8/18"``: answers graded correct, baseline → all levers."""
    n = r["answers"]
    return f"{r['correct_before']}/{n} → {r['correct_after']}/{n}"


def _usd(v: str | None) -> str:
    return "-" if v is None else f"${Decimal(v):.4f}"


def estimate_rows(estimates: list[dict[str, Any]]) -> list[list[str]]:
    """The profiler-vs-applied rows as text: lever, estimate, applied, difference, error, basis."""
    out = []
    for e in estimates:
        err = e.get("error")
        out.append(
            [
                e["lever"],
                _usd(e["estimated_cost_saved"]),
                _usd(e["applied_cost_saved"]),
                _usd(e["difference"]) if e["difference"] is not None else "-",
                "-" if err is None else f"{err:+.0%}",
                e["basis"],
            ]
        )
    return out


_ESTIMATE_HEADERS = [
    "lever",
    "profiler estimate",
    "applied (attributed)",
    "estimate − applied",
    "error",
    "how applied is measured",
]


def estimate_table(estimates: list[dict[str, Any]]) -> Any:
    """Console table: each lever's estimated cost saving on the baseline trace vs the applied one."""
    from rich.table import Table

    table = Table(
        title="profiler estimate (baseline trace, each lever alone) vs applied (all levers on)",
        title_justify="left",
        caption_justify="left",
        caption="applied = "
        + "; ".join(f"{e['lever']}: {e['basis']}" for e in estimates if e["applied_cost_saved"] is not None)
        + ". Per-lever applied savings are attributed after the other levers; only the totals are "
        "the same quantity on both sides.",
    )
    for i, h in enumerate(["lever", "estimate", "applied", "est − applied", "error"]):
        table.add_column(h, justify="right" if i else "left")
    for row in estimate_rows(estimates):
        table.add_row(*row[:5])
    return table


def rich_tables(rows: list[dict[str, Any]], totals: dict[str, Any]) -> list[Any]:
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
    summary.add_row("TTFT p50", fmt_s(totals["ttft_p50_before_s"]), fmt_s(totals["ttft_p50_after_s"]), "")
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
    n = totals["answers"]
    summary.add_row(
        "correct answers",
        f"{totals['correct_before']}/{n}",
        f"{totals['correct_after']}/{n}",
        f"{totals['correct_after'] - totals['correct_before']:+d}",
    )
    summary.add_row("worded as baseline", "-", f"{totals['same_answers']}/{n}", "identical text")

    per_task = Table(title="per task", title_justify="left")
    per_task.add_column("task")
    per_task.add_column("tokens", justify="right")
    per_task.add_column("cost", justify="right")
    per_task.add_column("hits", justify="right")
    per_task.add_column("correct", justify="right")
    per_task.add_column("same text", justify="right")
    for r in [*rows, totals]:
        per_task.add_row(
            r["task"],
            f"{r['tokens_before']:,} → {r['tokens_after']:,}",
            f"${Decimal(r['cost_before']):.4f} → ${Decimal(r['cost_after']):.4f}",
            f"{r['cache_hits']}/{r['calls']}",
            correct_cell(r),
            f"{r['same_answers']}/{r['answers']}",
        )
    return [summary, per_task]


def html_section(
    rows: list[dict[str, Any]],
    totals: dict[str, Any],
    notes: list[str],
    estimates: list[dict[str, Any]] | None = None,
) -> str:
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
        "correct before",
        "correct after",
        "worded as baseline",
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
                fmt_s(r["ttft_p50_before_s"]),
                fmt_s(r["ttft_p50_after_s"]),
                "-" if r["tokens_per_s_before"] is None else f"{r['tokens_per_s_before']:.0f}",
                "-" if r["tokens_per_s_after"] is None else f"{r['tokens_per_s_after']:.0f}",
                f"{r['cache_hits']}/{r['calls']}",
                ", ".join(f"{k} {v}" for k, v in sorted(r["routes_after"].items()))
                + (f" ({r['escalations']} escalated)" if r["escalations"] else ""),
                f"{r['correct_before']}/{r['answers']}",
                f"{r['correct_after']}/{r['answers']}",
                f"{r['same_answers']}/{r['answers']}",
            ]
        )
    table = html_table(headers, body, numeric=set(range(1, 13)) - {10}, cls="measured")
    items = "".join(f"<li>{n}</li>" for n in notes)
    section = (
        '<h2 id="measured">Measured: baseline vs every lever on</h2>'
        + table
        + f'<ul class="muted">{items}</ul>'
    )
    if estimates:
        section += (
            '<h2 id="estimate-vs-applied">Profiler estimate vs applied</h2>'
            + html_table(_ESTIMATE_HEADERS, estimate_rows(estimates), numeric={1, 2, 3, 4}, cls="estimates")
            + '<p class="muted">Each estimate is the lever alone on the baseline trace; the levers were '
            "applied together, so a lever's applied saving is attributed from the calls it changed "
            "and includes the other levers' effect. Only the totals measure the same quantity.</p>"
        )
    return section


def notes(
    *,
    strong_price_as: str,
    weak_price_as: str,
    quick: bool,
    calls: int,
    prefix_reuse_before: float | None,
    prefix_reuse_after: float | None,
) -> list[str]:
    """What the reader needs to read the numbers right: pricing, the levers on, what "same" means."""
    from tokenlean.demo_data import SUPPORT_MAX_TOKENS

    out = [
        f"Both endpoints run SmolLM2-135M locally; the strong one is priced as {strong_price_as}, the weak one as "
        f"{weak_price_as} (list prices), so costs show what this traffic would cost on hosted models.",
        "Levers on: cache-aware layout (fitted per traffic kind), compaction (agent: earlier copies of "
        "repeated observations dropped; RAG: query-aware selection at ratio 0.5), semantic cache "
        "(exact + guarded semantic tier), routing (support: cascade weak→strong on mean logprob; RAG → weak).",
        "'correct' grades every answer of both runs with one grader against the reference bundled with "
        "its step (tokenlean.demo_data): the facts the documents or the support FAQ give, or the next "
        "commands the agent's state allows; counts are baseline → all levers. A cache hit is graded "
        "like any answer. 'worded as baseline' / 'same text' only counts answers identical to the "
        "baseline's (whitespace and case ignored): a 135M model rewords its answer at any change of "
        "its prompt, so a low count there is not a count of changed or wrong answers.",
        "TTFT of a cascaded call is its whole latency (the cheap answer is judged before it is shown); "
        "token counts are tiktoken counts where the streamed response carried no usage, in both runs.",
        f"temperature 0; max_tokens 24 (support: {SUPPORT_MAX_TOKENS}, so answers finish and can be cached); "
        f"{'quick' if quick else 'full'} workload of {calls} calls.",
    ]
    if prefix_reuse_before is not None and prefix_reuse_after is not None:
        out.append(
            f"Prompt tokens served from the llama.cpp KV cache (prefix reuse, read from the server logs): "
            f"baseline {prefix_reuse_before:.0%}, all levers {prefix_reuse_after:.0%}."
        )
    return out
