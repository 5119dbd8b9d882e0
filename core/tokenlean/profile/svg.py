"""Tiny inline-SVG charts for the HTML report.

The report must open offline, from a file, years later: no CDN script, no JavaScript chart
library, no fonts to fetch. Three chart shapes cover what the profiler shows (a line chart per
task, grouped bars, a histogram), so they are drawn here directly as SVG text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

__all__ = ["PALETTE", "bar_chart", "histogram", "line_chart"]

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)

_W, _H = 720, 300
_M = {"l": 64, "r": 16, "t": 24, "b": 48}


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for step in (1, 2, 2.5, 5, 10):
        if v <= step * exp:
            return step * exp
    return 10 * exp


def _fmt(v: float) -> str:
    if abs(v) >= 1_000_000:
        return f"{v / 1_000_000:.1f}M"
    if abs(v) >= 10_000:
        return f"{v / 1000:.0f}k"
    if abs(v) >= 1000:
        return f"{v / 1000:.1f}k"
    if abs(v) >= 10 or v == 0:
        return f"{v:.0f}"
    if abs(v) >= 0.01:
        return f"{v:.2f}"
    return f"{v:.2g}"


def _frame(title: str, y_label: str, ymax: float, x_label: str, kind: str) -> list[str]:
    pw = _W - _M["l"] - _M["r"]
    ph = _H - _M["t"] - _M["b"]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {escape(kind)}" viewBox="0 0 {_W} {_H}" '
        f'width="{_W}" height="{_H}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#fff"/>',
    ]
    for i in range(5):
        v = ymax * i / 4
        y = _M["t"] + ph - ph * i / 4
        out.append(f'<line x1="{_M["l"]}" x2="{_M["l"] + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(
            f'<text x="{_M["l"] - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#555">{_fmt(v)}</text>'
        )
    out.append(
        f'<line x1="{_M["l"]}" x2="{_M["l"]}" y1="{_M["t"]}" y2="{_M["t"] + ph}" stroke="#888"/>'
        f'<line x1="{_M["l"]}" x2="{_M["l"] + pw}" y1="{_M["t"] + ph}" y2="{_M["t"] + ph}" stroke="#888"/>'
    )
    out.append(
        f'<text x="14" y="{_M["t"] + ph / 2:.0f}" font-size="12" fill="#333" text-anchor="middle" '
        f'transform="rotate(-90 14 {_M["t"] + ph / 2:.0f})">{escape(y_label)}</text>'
    )
    out.append(
        f'<text x="{_M["l"] + pw / 2:.0f}" y="{_H - 8}" font-size="12" fill="#333" text-anchor="middle">{escape(x_label)}</text>'
    )
    return out


def _legend(names: Sequence[str], x0: float) -> list[str]:
    """Legend entries along the top; entries that would overflow the chart are summarised."""
    out = []
    x = x0
    for i, name in enumerate(names):
        color = PALETTE[i % len(PALETTE)]
        label = name if len(name) <= 22 else name[:20] + "…"
        width = 24 + 6.5 * len(label)
        if x + width > _W - _M["r"]:
            out.append(f'<text x="{x:.0f}" y="15" font-size="11" fill="#777">+{len(names) - i} more</text>')
            break
        out.append(f'<rect x="{x:.0f}" y="6" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{x + 14:.0f}" y="15" font-size="11" fill="#333">{escape(label)}</text>')
        x += width
    return out


def line_chart(
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    y_label: str,
    x_label: str = "turn",
    max_series: int = 10,
) -> str:
    """One polyline per series (x = position in the series); the longest ``max_series`` shown."""
    items = sorted(series.items(), key=lambda kv: -len(kv[1]))[:max_series]
    ymax = _nice_max(max((max(v) for _, v in items if v), default=1.0))
    xmax = max((len(v) for _, v in items), default=1)
    pw = _W - _M["l"] - _M["r"]
    ph = _H - _M["t"] - _M["b"]
    out = _frame(title, y_label, ymax, x_label, "line")
    for i in range(min(xmax, 10)):
        xv = round(i * (xmax - 1) / max(1, min(xmax, 10) - 1)) if xmax > 1 else 0
        x = _M["l"] + (pw * xv / max(1, xmax - 1))
        out.append(
            f'<text x="{x:.1f}" y="{_M["t"] + ph + 16}" font-size="11" text-anchor="middle" fill="#555">{xv + 1}</text>'
        )
    for n, (name, values) in enumerate(items):
        color = PALETTE[n % len(PALETTE)]
        pts = " ".join(
            f"{_M['l'] + pw * i / max(1, xmax - 1):.1f},{_M['t'] + ph - ph * v / ymax:.1f}"
            for i, v in enumerate(values)
        )
        out.append(
            f'<polyline class="series" data-name="{escape(name)}" fill="none" stroke="{color}" '
            f'stroke-width="2" points="{pts}"/>'
        )
    out += _legend([k for k, _ in items], _M["l"])
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(
    groups: Mapping[str, Mapping[str, float]],
    *,
    title: str,
    y_label: str,
    x_label: str = "",
    max_groups: int = 12,
) -> str:
    """Grouped bars: ``groups[group][bar] = value``; bars keep the order of the first group."""
    items = list(groups.items())[:max_groups]
    bar_names: list[str] = []
    for _, bars in items:
        for b in bars:
            if b not in bar_names:
                bar_names.append(b)
    ymax = _nice_max(max((v for _, bars in items for v in bars.values()), default=1.0))
    pw = _W - _M["l"] - _M["r"]
    ph = _H - _M["t"] - _M["b"]
    out = _frame(title, y_label, ymax, x_label, "bars")
    gw = pw / max(1, len(items))
    bw = max(2.0, (gw * 0.8) / max(1, len(bar_names)))
    for gi, (gname, bars) in enumerate(items):
        gx = _M["l"] + gi * gw + gw * 0.1
        for bi, bname in enumerate(bar_names):
            v = bars.get(bname)
            if v is None:
                continue
            h = ph * v / ymax
            out.append(
                f'<rect class="bar" x="{gx + bi * bw:.1f}" y="{_M["t"] + ph - h:.1f}" width="{bw - 1:.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[bi % len(PALETTE)]}"><title>{escape(gname)} · '
                f"{escape(bname)}: {_fmt(v)}</title></rect>"
            )
        label = gname if len(gname) <= 14 else gname[:12] + "…"
        out.append(
            f'<text x="{gx + gw * 0.4:.1f}" y="{_M["t"] + ph + 16}" font-size="10" text-anchor="middle" '
            f'fill="#555">{escape(label)}</text>'
        )
    out += _legend(bar_names, _M["l"])
    out.append("</svg>")
    return "\n".join(out)


def histogram(values: Sequence[float], *, title: str, x_label: str, bins: int = 20) -> str:
    """A histogram of ``values`` (count per bin), with the median marked."""
    pw = _W - _M["l"] - _M["r"]
    ph = _H - _M["t"] - _M["b"]
    vals = sorted(v for v in values if v is not None and math.isfinite(v))
    if not vals:
        out = _frame(title, "calls", 1.0, x_label, "hist")
        out.append(
            f'<text x="{_W / 2:.0f}" y="{_H / 2:.0f}" font-size="13" text-anchor="middle" fill="#777">'
            "no timings in this trace</text></svg>"
        )
        return "\n".join(out)
    lo, hi = vals[0], vals[-1]
    if hi <= lo:
        hi = lo + 1e-9
    counts = [0] * bins
    for v in vals:
        counts[min(bins - 1, int((v - lo) / (hi - lo) * bins))] += 1
    ymax = _nice_max(max(counts))
    out = _frame(title, "calls", ymax, x_label, "hist")
    bw = pw / bins
    for i, c in enumerate(counts):
        h = ph * c / ymax
        out.append(
            f'<rect class="bar" x="{_M["l"] + i * bw + 0.5:.1f}" y="{_M["t"] + ph - h:.1f}" width="{bw - 1:.1f}" '
            f'height="{h:.1f}" fill="{PALETTE[0]}"><title>{_fmt(lo + i * (hi - lo) / bins)}–'
            f"{_fmt(lo + (i + 1) * (hi - lo) / bins)}: {c}</title></rect>"
        )
    for frac in (0.0, 0.5, 1.0):
        x = _M["l"] + pw * frac
        out.append(
            f'<text x="{x:.1f}" y="{_M["t"] + ph + 16}" font-size="11" text-anchor="middle" fill="#555">'
            f"{_fmt(lo + (hi - lo) * frac)}</text>"
        )
    med = vals[len(vals) // 2]
    mx = _M["l"] + pw * (med - lo) / (hi - lo)
    out.append(
        f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{_M["t"]}" y2="{_M["t"] + ph}" stroke="#e15759" stroke-dasharray="4 3"/>'
    )
    out.append(
        f'<text x="{mx + 4:.1f}" y="{_M["t"] + 12}" font-size="11" fill="#e15759">median {_fmt(med)}</text>'
    )
    out.append("</svg>")
    return "\n".join(out)
