"""The self-contained HTML report: one file, inline CSS and SVG, no script, no network.

It must render identically from a laptop's downloads folder, a CI artifact store or an offline
air-gapped box, so nothing is fetched: fonts are the system's, charts are inline SVG drawn by
``tokenlean.profile.svg``.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape
from typing import TYPE_CHECKING

from tokenlean.profile.svg import bar_chart, histogram, line_chart

if TYPE_CHECKING:
    from tokenlean.profile.report import ProfileReport

__all__ = ["html_table", "render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.na td{color:#999} .best{background:#eef7ee} .muted{color:#777;font-size:12px}
.kpis{display:flex;gap:12px;flex-wrap:wrap} .kpi{border:1px solid #ddd;border-radius:6px;padding:8px 12px}
.kpi b{display:block;font-size:18px} figure{margin:12px 0} figcaption{font-size:12px;color:#555}
"""


def _money(v: Decimal | None) -> str:
    return "-" if v is None else f"${v:.4f}"


def _sources(sources: tuple[str, ...]) -> str:
    """The trace files, short: a long list of files is summarised by count and folder."""
    from pathlib import Path

    if not sources:
        return "-"
    if len(sources) <= 3:
        return ", ".join(sources)
    folders = sorted({str(Path(p).parent) for p in sources})
    where = folders[0] if len(folders) == 1 else f"{len(folders)} folders"
    return f"{len(sources)} files in {where}"


def html_table(
    headers: list[str], rows: list[list[str]], *, numeric: set[int] | None = None, cls: str = ""
) -> str:
    """A plain HTML table; cells are escaped here, so callers pass raw strings."""
    numeric = numeric or set()
    out = [f'<table class="{escape(cls)}"><thead><tr>']
    out += [f"<th>{escape(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for r in rows:
        out.append("<tr>")
        out += [f'<td class="{"num" if i in numeric else ""}">{escape(c)}</td>' for i, c in enumerate(r)]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render_html(
    report: ProfileReport, *, title: str = "tokenlean profile", extra_sections: list[str] | None = None
) -> str:
    """The whole report as one HTML document."""
    s = report.summary
    best = report.best
    kpis = [
        ("calls", f"{s.calls:,}"),
        ("tasks", f"{s.tasks:,}"),
        ("tokens", f"{s.total_tokens:,}"),
        ("output share", f"{(s.output_tokens / s.total_tokens if s.total_tokens else 0):.1%}"),
        ("cost", _money(s.cost)),
        ("TTFT p50", "-" if s.ttft_p50_s is None else f"{s.ttft_p50_s:.2f}s"),
    ]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="muted">Sources: {escape(_sources(s.sources))} · formats: '
        f"{escape(', '.join(sorted(set(s.formats))) or '-')} · calls that name no model priced as "
        f"{escape(report.default_model)}; a model no price source knows is unpriced</p>",
        '<div class="kpis">',
        *[
            f'<div class="kpi"><span class="muted">{escape(k)}</span><b>{escape(v)}</b></div>'
            for k, v in kpis
        ],
        "</div>",
    ]
    if best is not None:
        parts.append(
            f'<p class="best" id="best"><b>Pull first: {escape(best.title)}</b> — saves '
            f"{best.cost_saved_share:.1%} of cost ({best.tokens_saved:,} tokens, {best.latency_saved_s:.1f}s). "
            f"{escape(best.action)}.</p>"
        )
    parts.append("<h2>Ranked levers</h2>")
    rows_html = [
        '<table id="levers"><thead><tr><th>#</th><th>lever</th><th>tokens saved</th><th>cost before</th>'
        "<th>cost after</th><th>saved</th><th>latency saved</th><th>how it was estimated / why not</th></tr></thead><tbody>"
    ]
    for i, e in enumerate(report.estimates, 1):
        cls = "" if e.applicable else "na"
        if best is not None and e is best:
            cls = "best"
        note = e.basis if e.applicable else e.reason
        rows_html.append(
            f'<tr class="{cls}"><td class="num">{i}</td><td><b>{escape(e.title)}</b><br>'
            f'<span class="muted">{escape(e.action)}</span></td>'
            f'<td class="num">{e.tokens_saved:,}</td><td class="num">{_money(e.cost_before)}</td>'
            f'<td class="num">{_money(e.cost_after)}</td><td class="num">{e.cost_saved_share:.1%}</td>'
            f'<td class="num">{e.latency_saved_s:.1f}s</td><td>{escape(note)}</td></tr>'
        )
    rows_html.append("</tbody></table>")
    parts += rows_html

    parts.append("<h2>Tokens per turn</h2>")
    parts.append(
        "<figure>"
        + line_chart(
            {k: [float(v) for v in vals] for k, vals in report.tokens_per_turn.items()},
            title="Prompt + output tokens per turn, by task",
            y_label="tokens",
        )
        + "<figcaption>Each line is one task; a line that climbs is context growth (compaction's target).</figcaption></figure>"
    )
    parts.append("<h2>Cost per task, before and after each lever</h2>")
    tasks = sorted(report.task_cost, key=lambda k: -report.task_cost[k])[:10]
    groups: dict[str, dict[str, float]] = {}
    for t in tasks:
        bars = {"baseline": float(report.task_cost[t])}
        for e in report.estimates:
            if e.applicable and t in e.task_cost_after:
                bars[e.lever] = float(e.task_cost_after[t])
        groups[t] = bars
    parts.append(
        "<figure>"
        + bar_chart(groups, title="Cost per task (USD)", y_label="USD")
        + "<figcaption>The ten most expensive tasks; each bar applies one lever alone.</figcaption></figure>"
    )
    parts.append("<h2>Time to first token</h2>")
    parts.append(
        "<figure>"
        + histogram(report.ttfts, title="TTFT distribution", x_label="seconds to first token")
        + "</figure>"
    )
    if extra_sections:
        parts += extra_sections
    lm = report.latency
    parts.append("<h2>Assumptions</h2><ul>")
    parts.append(
        f"<li>Latency model ({'fitted to this trace' if lm.fitted else 'defaults, the trace has no timings'}): "
        f"TTFT = {lm.overhead_s:.3f}s + {lm.prefill_s_per_token * 1000:.3f} ms per uncached prompt token; "
        f"decode {lm.decode_tokens_per_s:.1f} tokens/s.</li>"
    )
    parts += [f"<li>{escape(a)}</li>" for a in report.assumptions]
    parts.append("</ul>")
    parts.append('<p class="muted">Generated by tokenlean · self-contained: no scripts, no network.</p>')
    parts.append("</body></html>")
    return "\n".join(parts)
