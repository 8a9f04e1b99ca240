"""Server-side SVG charts, each with its data as a table and as CSV: no script, no CDN.

A `Chart` holds the figures (`columns`, `rows`) and draws itself: horizontal bars, grouped by
series, with a value label on each bar (so the chart reads without colour) and highlighted
categories (unfilled demand) drawn in a second colour and named in the legend.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

PALETTE = ("#1d70b8", "#00703c", "#4c2c92", "#f47738", "#5694ca", "#912b88")
"""GOV.UK colours (blue, green, purple, orange, light blue, bright purple)."""
HIGHLIGHT = "#d4351c"
"""GOV.UK red: what needs attention (unfilled, a gap)."""
TEXT = "#0b0c0c"

BAR_HEIGHT = 18
GAP = 6
GROUP_GAP = 14
LABEL_WIDTH = 170
PLOT_WIDTH = 420
VALUE_ROOM = 90
TOP = 8


def plain(value: Any) -> str:
    return "" if value is None else str(value)


def pounds(pence: int | float | None) -> str:
    if pence is None:
        return ""
    return f"{'-' if pence < 0 else ''}£{abs(pence) / 100:,.0f}"


@dataclass
class Series:
    name: str
    values: Sequence[float | None]
    colour: str | None = None


@dataclass
class Chart:
    """One figure: an id (for its CSV URL), a title, what it shows, and its data."""

    id: str
    title: str
    description: str
    columns: list[str]
    rows: list[list[Any]]
    labels: list[str] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    highlighted: set[str] = field(default_factory=set)
    highlight_name: str = ""
    value_format: Callable[[Any], str] = plain
    note: str = ""

    @property
    def empty(self) -> bool:
        return not self.rows

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([_csv_safe(v) for v in row])
        return out.getvalue()

    def svg(self) -> Markup:
        return bar_svg(self)


def _csv_safe(value: Any) -> Any:
    """A cell a spreadsheet would run as a formula is quoted as text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(value):
        return "'" + value
    return "" if value is None else value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _scale(chart: Chart) -> float:
    values = [v for s in chart.series for v in s.values if v is not None and v > 0]
    top = max(values, default=0)
    return PLOT_WIDTH / top if top > 0 else 0.0


def bar_svg(chart: Chart) -> Markup:
    """Horizontal grouped bars: one group per label, one bar per series."""
    scale = _scale(chart)
    n_series = max(1, len(chart.series))
    group_height = n_series * BAR_HEIGHT + (n_series - 1) * GAP
    legend_rows = len(chart.series) + (1 if chart.highlighted else 0)
    legend_height = legend_rows * 20 + 8 if legend_rows > 1 or chart.highlighted else 0
    height = TOP + len(chart.labels) * (group_height + GROUP_GAP) + legend_height + 8
    width = LABEL_WIDTH + PLOT_WIDTH + VALUE_ROOM
    title_id, desc_id = f"{chart.id}-title", f"{chart.id}-desc"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="pm-chart" viewBox="0 0 {width} {height}" '
             f'width="100%" role="img" aria-labelledby="{title_id} {desc_id}" font-family="Arial, sans-serif" '
             f'font-size="13">',
             f'<title id="{title_id}">{escape(chart.title)}</title>',
             f'<desc id="{desc_id}">{escape(chart.description)} The same figures are in the table below.</desc>']
    y = TOP
    for i, label in enumerate(chart.labels):
        hot = label in chart.highlighted
        weight = ' font-weight="bold"' if hot else ""
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{y + group_height / 2 + 4:.1f}" text-anchor="end" '
                     f'fill="{TEXT}"{weight}>{escape(label)}</text>')
        for j, series in enumerate(chart.series):
            value = series.values[i] if i < len(series.values) else None
            colour = HIGHLIGHT if hot and j == 0 else (series.colour or PALETTE[j % len(PALETTE)])
            bar_y = y + j * (BAR_HEIGHT + GAP)
            # a negative figure (cost avoidance can be) draws no bar; its label says the value
            length = 0.0 if value is None or value <= 0 else max(value * scale, 1.0)
            parts.append(f'<rect x="{LABEL_WIDTH}" y="{bar_y}" width="{length:.1f}" height="{BAR_HEIGHT}" '
                         f'fill="{colour}"><title>{escape(label)}, {escape(series.name)}: '
                         f'{escape(chart.value_format(value) if value is not None else "no figure")}</title></rect>')
            text = chart.value_format(value) if value is not None else "n/a"
            parts.append(f'<text x="{LABEL_WIDTH + length + 4:.1f}" y="{bar_y + BAR_HEIGHT - 4}" '
                         f'fill="{TEXT}">{escape(text)}</text>')
        y += group_height + GROUP_GAP
    parts.append(f'<line x1="{LABEL_WIDTH}" y1="{TOP - 4}" x2="{LABEL_WIDTH}" y2="{y - GROUP_GAP + 4}" '
                 f'stroke="{TEXT}" stroke-width="1"/>')
    if legend_height:
        y += 4
        entries = [(s.name, s.colour or PALETTE[j % len(PALETTE)]) for j, s in enumerate(chart.series)]
        if chart.highlighted:
            entries.append((chart.highlight_name or "highlighted", HIGHLIGHT))
        for name, colour in entries:
            parts.append(f'<rect x="{LABEL_WIDTH}" y="{y}" width="14" height="14" fill="{colour}"/>'
                         f'<text x="{LABEL_WIDTH + 20}" y="{y + 12}" fill="{TEXT}">{escape(name)}</text>')
            y += 20
    parts.append("</svg>")
    return Markup("".join(parts))
