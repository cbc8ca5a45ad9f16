"""Small line charts as inline SVG text: no JavaScript, no downloads.

Enough for a report a person reads: axes with round tick values, one polyline
per series (gaps where a value is missing), a legend, and dashed vertical
lines for events (a node restart, the stop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


@dataclass(frozen=True)
class Series:
    name: str
    points: list[tuple[float, float | None]]
    color: str = ""


def nice_step(span: float, ticks: int = 5) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * power:
            return mult * power
    return 10 * power


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def line_chart(
    title: str,
    series: list[Series],
    *,
    y_label: str = "",
    events: list[tuple[float, str]] = (),  # type: ignore[assignment]
    width: int = 860,
    height: int = 240,
) -> str:
    """One chart as an ``<svg>`` element."""
    left, right, top, bottom = 64, 16, 30, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for s in series for x, y in s.points]
    ys = [y for s in series for _, y in s.points if y is not None]
    x_max = max(xs) if xs else 1.0
    x_min = min(0.0, min(xs)) if xs else 0.0
    y_max = max(ys) if ys else 1.0
    y_max = y_max * 1.08 if y_max > 0 else 1.0
    y_step = nice_step(y_max)
    y_top = math.ceil(y_max / y_step) * y_step
    x_span = (x_max - x_min) or 1.0

    def px(x: float) -> float:
        return left + (x - x_min) / x_span * plot_w

    def py(y: float) -> float:
        return top + plot_h - y / y_top * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="18" class="t">{escape(title)}</text>',
    ]
    tick = 0.0
    while tick <= y_top + 1e-9:
        y = py(tick)
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" class="yl">{_fmt(tick)}</text>'
        )
        tick += y_step
    x_step = nice_step(x_span, 8)
    tick = math.ceil(x_min / x_step) * x_step
    while tick <= x_max + 1e-9:
        x = px(tick)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" '
            f'y2="{top + plot_h + 4}" class="a"/>'
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" class="xl">{_fmt(tick)}s</text>'
        )
        tick += x_step
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="f"/>')
    if y_label:
        out.append(
            f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" class="yt">'
            f"{escape(y_label)}</text>"
        )
    for t, label in events:
        x = px(t)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" class="e">'
            f"<title>{escape(label)} at {t:g}s</title></line>"
            f'<text x="{x + 3:.1f}" y="{top + 10}" class="el">{escape(label[:24])}</text>'
        )
    legend_x = left + plot_w
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        for run in _runs(s.points):
            if len(run) == 1:
                x, y = run[0]
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2" fill="{color}"/>')
                continue
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in run)
            out.append(
                f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.6">'
                f"<title>{escape(s.name)}</title></polyline>"
            )
        legend_x -= 12 + 7 * len(s.name) + 14
        out.append(
            f'<rect x="{legend_x}" y="8" width="12" height="4" fill="{color}"/>'
            f'<text x="{legend_x + 16}" y="14" class="lg">{escape(s.name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _runs(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Consecutive points with values (a missing value breaks the line)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [r for r in runs if r]


STYLE = """
svg .t{font:600 13px sans-serif;fill:#222}
svg .g{stroke:#e4e4e4;stroke-width:1}
svg .a{stroke:#888}
svg .f{fill:none;stroke:#bbb}
svg .yl{font:11px sans-serif;fill:#555;text-anchor:end}
svg .xl{font:11px sans-serif;fill:#555;text-anchor:middle}
svg .yt{font:11px sans-serif;fill:#555;text-anchor:middle}
svg .lg{font:11px sans-serif;fill:#333}
svg .e{stroke:#a0a;stroke-width:1;stroke-dasharray:4 3}
svg .el{font:10px sans-serif;fill:#a0a}
"""
