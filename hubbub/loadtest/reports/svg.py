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


@dataclass(frozen=True)
class _Frame:
    """The plot area of one chart and its scales: data to pixel coordinates."""

    left: int
    top: int
    plot_w: int
    plot_h: int
    x_min: float
    x_max: float
    x_span: float
    y_top: float
    y_step: float

    def px(self, x: float) -> float:
        return self.left + (x - self.x_min) / self.x_span * self.plot_w

    def py(self, y: float) -> float:
        return self.top + self.plot_h - y / self.y_top * self.plot_h


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
    xs = [x for s in series for x, y in s.points]
    ys = [y for s in series for _, y in s.points if y is not None]
    x_max = max(xs) if xs else 1.0
    x_min = min(0.0, min(xs)) if xs else 0.0
    y_max = max(ys) if ys else 1.0
    y_max = y_max * 1.08 if y_max > 0 else 1.0
    y_step = nice_step(y_max)
    frame = _Frame(
        left,
        top,
        width - left - right,
        height - top - bottom,
        x_min,
        x_max,
        (x_max - x_min) or 1.0,
        math.ceil(y_max / y_step) * y_step,
        y_step,
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="18" class="t">{escape(title)}</text>',
        *_axes(frame, y_label),
        *_events(frame, events),
        *_lines(frame, series),
        "</svg>",
    ]
    return "".join(out)


def _axes(f: _Frame, y_label: str) -> list[str]:
    """Grid lines and labels of both axes, the plot's frame, the y axis title."""
    out = []
    tick = 0.0
    while tick <= f.y_top + 1e-9:
        y = f.py(tick)
        out.append(
            f'<line x1="{f.left}" x2="{f.left + f.plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>'
            f'<text x="{f.left - 6}" y="{y + 4:.1f}" class="yl">{_fmt(tick)}</text>'
        )
        tick += f.y_step
    x_step = nice_step(f.x_span, 8)
    tick = math.ceil(f.x_min / x_step) * x_step
    bottom = f.top + f.plot_h
    while tick <= f.x_max + 1e-9:
        x = f.px(tick)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" class="a"/>'
            f'<text x="{x:.1f}" y="{bottom + 16}" class="xl">{_fmt(tick)}s</text>'
        )
        tick += x_step
    out.append(f'<rect x="{f.left}" y="{f.top}" width="{f.plot_w}" height="{f.plot_h}" class="f"/>')
    if y_label:
        out.append(
            f'<text transform="translate(14 {f.top + f.plot_h / 2}) rotate(-90)" class="yt">'
            f"{escape(y_label)}</text>"
        )
    return out


def _events(f: _Frame, events: list[tuple[float, str]]) -> list[str]:
    """A vertical marker per event (spawned, disruption, stop)."""
    out = []
    for t, label in events:
        x = f.px(t)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{f.top}" y2="{f.top + f.plot_h}" class="e">'
            f"<title>{escape(label)} at {t:g}s</title></line>"
            f'<text x="{x + 3:.1f}" y="{f.top + 10}" class="el">{escape(label[:24])}</text>'
        )
    return out


def _lines(f: _Frame, series: list[Series]) -> list[str]:
    """Each series as polylines (a dot for a lone point), with its legend entry."""
    out = []
    legend_x = f.left + f.plot_w
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        for run in _runs(s.points):
            if len(run) == 1:
                x, y = run[0]
                out.append(f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="2" fill="{color}"/>')
                continue
            coords = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in run)
            out.append(
                f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.6">'
                f"<title>{escape(s.name)}</title></polyline>"
            )
        legend_x -= 12 + 7 * len(s.name) + 14
        out.append(
            f'<rect x="{legend_x}" y="8" width="12" height="4" fill="{color}"/>'
            f'<text x="{legend_x + 16}" y="14" class="lg">{escape(s.name)}</text>'
        )
    return out


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
