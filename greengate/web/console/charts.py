"""Small SVG charts drawn on the server for the console: no script, no CDN, nothing but markup.

Every chart is a `<svg role="img">` with a title for screen readers and a `<title>` on each mark, so
hovering a bar or a point shows its exact value. Colours are presentation attributes, which the
console's Content-Security-Policy (no inline styles) allows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 420, 170
LEFT, RIGHT, TOP, BOTTOM = 46, 8, 12, 26
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
GREEN, RED, BLUE, GRID, INK = "#1a7f4b", "#c0392b", "#2f6fb0", "#dfe6e2", "#5b6a63"


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # None: nothing to show that day
    colour: str


def _frame(label: str, body: list[str], legend: Sequence[tuple[str, str]] = ()) -> Markup:
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' width="100%" preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
        *body,
    ]
    x = LEFT
    for name, colour in legend:
        parts.append(f'<rect x="{x}" y="1" width="9" height="9" fill="{colour}"/>')
        parts.append(f'<text x="{x + 12}" y="9" font-size="10" fill="{INK}">{escape(name)}</text>')
        x += 18 + 6 * len(name)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text and attribute above is escaped


def _axes(labels: Sequence[str], top_label: str) -> list[str]:
    base = TOP + PLOT_H
    out = [
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT + PLOT_W}" y2="{TOP}" stroke="{GRID}"/>',
        f'<line x1="{LEFT}" y1="{base}" x2="{LEFT + PLOT_W}" y2="{base}" stroke="{INK}"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 4}" font-size="10" text-anchor="end" fill="{INK}">'
        f"{escape(top_label)}</text>",
        f'<text x="{LEFT - 4}" y="{base}" font-size="10" text-anchor="end" fill="{INK}">0</text>',
    ]
    n = len(labels)
    for i in sorted({0, n // 2, n - 1}) if n else ():
        x = LEFT + (i + 0.5) * PLOT_W / n
        out.append(
            f'<text x="{x:.1f}" y="{HEIGHT - 8}" font-size="10" text-anchor="middle" fill="{INK}">'
            f"{escape(labels[i])}</text>"
        )
    return out


def bar_chart(
    label: str, labels: Sequence[str], values: Sequence[int], describe: Callable[[int], str]
) -> Markup:
    """One bar per label, scaled to the largest value; `describe` writes a value for people."""
    top = max(values, default=0)
    body = _axes(labels, describe(top) if top else "")
    slot = PLOT_W / max(len(values), 1)
    for i, value in enumerate(values):
        height = PLOT_H * value / top if top else 0
        x = LEFT + i * slot + slot * 0.15
        body.append(
            f'<rect data-day="{escape(labels[i])}" data-value="{value}" x="{x:.1f}" '
            f'y="{TOP + PLOT_H - height:.1f}" width="{slot * 0.7:.1f}" height="{height:.1f}" fill="{GREEN}">'
            f"<title>{escape(labels[i])}: {escape(describe(value))}</title></rect>"
        )
    return _frame(label, body)


def stacked_bar_chart(label: str, labels: Sequence[str], lower: Series, upper: Series) -> Markup:
    """Two counts per label, one on top of the other (e.g. delivered and failed)."""
    totals = [int((a or 0) + (b or 0)) for a, b in zip(lower.values, upper.values, strict=True)]
    top = max(totals, default=0)
    body = _axes(labels, str(top) if top else "")
    slot = PLOT_W / max(len(labels), 1)
    for i, day in enumerate(labels):
        base: float = TOP + PLOT_H
        for series in (lower, upper):
            value = int(series.values[i] or 0)
            height = PLOT_H * value / top if top else 0
            if value:
                body.append(
                    f'<rect data-day="{escape(day)}" data-series="{escape(series.name)}" '
                    f'data-value="{value}" '
                    f'x="{LEFT + i * slot + slot * 0.15:.1f}" y="{base - height:.1f}" '
                    f'width="{slot * 0.7:.1f}" height="{height:.1f}" fill="{series.colour}">'
                    f"<title>{escape(day)}: {value} {escape(series.name)}</title></rect>"
                )
            base -= height
    return _frame(label, body, [(lower.name, lower.colour), (upper.name, upper.colour)])


def percent_line_chart(label: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """Percentages (0-100) per label as lines; a day without a value breaks the line."""
    body = _axes(labels, "100%")
    slot = PLOT_W / max(len(labels), 1)
    for s in series:
        segment: list[str] = []
        segments: list[list[str]] = [segment]
        for i, value in enumerate(s.values):
            if value is None:
                segment = []
                segments.append(segment)
                continue
            x, y = LEFT + (i + 0.5) * slot, TOP + PLOT_H * (1 - value / 100)
            segment.append(f"{x:.1f},{y:.1f}")
            body.append(
                f'<circle data-day="{escape(labels[i])}" data-series="{escape(s.name)}" '
                f'data-value="{value:.0f}" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s.colour}">'
                f"<title>{escape(labels[i])}: {escape(s.name)} {value:.0f}%</title></circle>"
            )
        for points in segments:
            if len(points) > 1:
                body.append(
                    f'<polyline points="{" ".join(points)}" fill="none" '
                    f'stroke="{s.colour}" stroke-width="2"/>'
                )
    return _frame(label, body, [(s.name, s.colour) for s in series])
