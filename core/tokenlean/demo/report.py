"""How the demo shows what it measured: the console tables and the section of the HTML report."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = ["fmt_s", "html_section", "notes", "rich_tables"]


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}s"


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


def html_section(rows: list[dict[str, Any]], totals: dict[str, Any], notes: list[str]) -> str:
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
                fmt_s(r["ttft_p50_before_s"]),
                fmt_s(r["ttft_p50_after_s"]),
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
        "'same answers' compares each answer with the baseline answer to the same step (whitespace and case "
        "ignored); a cache hit returns the answer cached for an earlier, equivalent question. A 135M model "
        "answers differently to any change of its prompt, so expect few identical answers where the "
        "prompt was re-laid or compacted.",
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
