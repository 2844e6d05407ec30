"""Charts as inline SVG, drawn on the server: no JavaScript, no network, labelled axes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

__all__ = ["Series", "chart", "nice_ceiling"]

_W, _H = 560, 234
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 40, 44
_COLOURS = ("#2563eb", "#16a34a", "#dc2626", "#9333ea")


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[float | None]  # None: no data in that slice (a gap in a line)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^n at or above ``value`` (an axis maximum people can read)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _fmt(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value / 1000:g}k"


def chart(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    *,
    y_label: str,
    x_label: str,
    kind: str = "bars",  # bars | lines
) -> Markup:
    """An SVG chart with a title, a labelled y axis (4 gridlines) and x axis, and a legend."""
    n = max(1, len(x_labels))
    top = max((v for s in series for v in s.values if v is not None), default=0.0)
    y_max = nice_ceiling(top)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    slot = plot_w / n

    def x(i: float) -> float:
        return _LEFT + slot * (i + 0.5)

    def y(v: float) -> float:
        return _TOP + plot_h * (1 - v / y_max)

    out = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<text class="chart-title" x="{_LEFT}" y="16">{escape(title)}</text>',
    ]
    for k in range(5):
        tick = y_max * k / 4
        out.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(tick):.1f}" '
            f'y2="{y(tick):.1f}"/>'
            f'<text class="tick" x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
            f"{_fmt(tick)}</text>"
        )
    every = max(1, math.ceil(n / 6))
    for i, label in enumerate(x_labels):
        if i % every == 0 or i == n - 1:
            out.append(
                f'<text class="tick" x="{x(i):.1f}" y="{_TOP + plot_h + 16}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    out.append(
        f'<text class="axis-label" x="{_LEFT + plot_w / 2:.1f}" y="{_H - 6}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
        f'<text class="axis-label" transform="translate(14 {_TOP + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
        f'<line class="axis" x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{_TOP + plot_h}"/>'
        f'<line class="axis" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{_TOP + plot_h}" '
        f'y2="{_TOP + plot_h}"/>'
    )
    width = slot * 0.8 / max(1, len(series))
    for si, s in enumerate(series):
        colour = _COLOURS[si % len(_COLOURS)]
        if kind == "bars":
            for i, v in enumerate(s.values):
                if v:
                    left = x(i) - slot * 0.4 + width * si
                    out.append(
                        f'<rect x="{left:.1f}" y="{y(v):.1f}" width="{width:.1f}" '
                        f'height="{y(0) - y(v):.1f}" fill="{colour}">'
                        f"<title>{escape(s.label)} {escape(x_labels[i])}: {_fmt(v)}</title></rect>"
                    )
        else:
            runs: list[list[str]] = [[]]
            for i, v in enumerate(s.values):
                if v is None:
                    runs.append([])
                else:
                    runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
            for points in runs:
                if len(points) == 1:
                    cx, cy = points[0].split(",")
                    out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
                elif points:
                    out.append(
                        f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                        f'points="{" ".join(points)}"/>'
                    )
        lx = _W - _RIGHT - 90 * (len(series) - si)
        out.append(
            f'<rect x="{lx}" y="22" width="10" height="10" fill="{colour}"/>'
            f'<text class="legend" x="{lx + 14}" y="31">{escape(s.label)}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))
