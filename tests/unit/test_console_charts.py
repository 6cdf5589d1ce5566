"""The console's server-drawn SVG charts: well-formed, self-contained, scaled to their data."""

from __future__ import annotations

from defusedxml.ElementTree import fromstring
from hypothesis import given
from hypothesis import strategies as st

from greengate.web.console.charts import (
    PLOT_H,
    Series,
    bar_chart,
    percent_line_chart,
    stacked_bar_chart,
)

NS = "{http://www.w3.org/2000/svg}"
LABELS = [f"12-{d:02d}" for d in range(1, 15)]


def bars(svg: str) -> list[tuple[str, float]]:
    root = fromstring(svg)
    return [
        (r.get("data-value") or "", float(r.get("height") or 0))
        for r in root.iter(f"{NS}rect")
        if r.get("data-day")
    ]


@given(st.lists(st.integers(min_value=0, max_value=10**15), min_size=14, max_size=14))
def test_bar_heights_are_proportional_and_the_largest_fills_the_plot(values: list[int]) -> None:
    svg = bar_chart("Volume <RUB>", LABELS, values, lambda v: f"{v} & co")

    drawn = bars(svg)

    assert [int(v) for v, _ in drawn] == values
    top = max(values)
    for value, height in drawn:
        expected = PLOT_H * int(value) / top if top else 0
        assert abs(height - expected) < 0.11


def test_charts_name_themselves_and_fetch_nothing() -> None:
    svg = percent_line_chart(
        "Success", LABELS, [Series("payments", [None, 50.0, 100.0, *[None] * 11], "#000")]
    )
    root = fromstring(svg)
    assert root.get("role") == "img" and root.get("aria-label") == "Success"
    assert root.find(f"{NS}title") is not None
    assert "href" not in svg and "<script" not in svg and "style=" not in svg
    circles = [c.get("data-value") for c in root.iter(f"{NS}circle")]
    assert circles == ["50", "100"]
    assert len(list(root.iter(f"{NS}polyline"))) == 1


def test_stacked_bars_sit_on_each_other() -> None:
    delivered = Series("delivered", [3, 0, *[0] * 12], "#0f0")
    failed = Series("failed", [1, 2, *[0] * 12], "#f00")

    root = fromstring(stacked_bar_chart("Callbacks", LABELS, delivered, failed))

    first_day = [r for r in root.iter(f"{NS}rect") if r.get("data-day") == LABELS[0]]
    lower, upper = first_day
    assert float(upper.get("y") or 0) + float(upper.get("height") or 0) == float(lower.get("y") or 0)
    second_day = [r.get("data-series") for r in root.iter(f"{NS}rect") if r.get("data-day") == LABELS[1]]
    assert second_day == ["failed"]
