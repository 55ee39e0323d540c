"""Small bar charts for the Jobs view: labelled bars, grouped bars, a histogram.

pyqtgraph draws them (pure Python on numpy and Qt; QtCharts would need PySide6-Addons). The
charts are for reading, not exploring: no mouse zoom, no context menu, the palette's colours
for background and axes (so they follow a dark theme), and the series colours of Okabe and
Ito's colour-blind-safe palette. Every bar item keeps its series name and values in its
``opts``, so ``series_of(plot)`` reads back what a chart shows (the tests check data, not
pixels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pyqtgraph as pg
from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication, QWidget

__all__ = [
    "SERIES_COLOURS",
    "bar_chart",
    "clear_chart",
    "grouped_bars",
    "histogram",
    "new_plot",
    "series_of",
    "set_title",
]

SERIES_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
                  "#F0E442", "#000000"]
"""Okabe-Ito: distinguishable with every common colour-vision deficiency."""

Format = Callable[[float], str]


def number(value: float) -> str:
    """A bar's label: short, in the unit the axis shows."""
    if value != value:  # NaN: nothing measured
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10 or value == int(value):
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    return f"{value:.2g}" if abs(value) < 0.1 else f"{value:.2f}"


def size_text(value: float) -> str:
    """Bytes in the unit people read (kB, MB)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def new_plot(title: str = "", left: str = "", parent: QWidget | None = None) -> pg.PlotWidget:
    """A plot for bars: palette colours, no mouse interaction, a title and a y-axis label."""
    palette = (parent.palette() if parent is not None else QApplication.palette())
    background = palette.color(QPalette.ColorRole.Base)
    text = palette.color(QPalette.ColorRole.Text)
    plot = pg.PlotWidget(parent=parent, background=background)
    item = plot.getPlotItem()
    item.setMenuEnabled(False)
    item.hideButtons()
    item.setMouseEnabled(x=False, y=False)
    item.getViewBox().setMouseEnabled(False, False)
    for name in ("left", "bottom"):
        axis = item.getAxis(name)
        axis.setPen(pg.mkPen(text))
        axis.setTextPen(pg.mkPen(text))
    if title:
        item.setTitle(title, color=text.name(), size="10pt")
    if left:
        item.setLabel("left", left, color=text.name())
    plot.setMinimumHeight(160)
    plot.setAccessibleName(title or left or "chart")
    return plot


def set_title(plot: pg.PlotWidget, title: str) -> None:
    """The chart's title, in the palette's text colour."""
    plot.getPlotItem().setTitle(title, color=_text_colour(plot).name(), size="10pt")


def clear_chart(plot: pg.PlotWidget, message: str = "") -> None:
    """Remove every bar, label and legend; ``message`` (e.g. "no data yet") in their place."""
    item = plot.getPlotItem()
    item.clear()
    legend = item.legend
    if legend is not None:  # addLegend keeps it across clear(): take it off the view
        legend.clear()
        if legend.scene() is not None:
            legend.scene().removeItem(legend)
        item.legend = None
    item.getAxis("bottom").setTicks(None)
    item.getAxis("left").setLabel(units=None)
    for name in ("left", "bottom"):
        item.showAxis(name, not message)
    if message:
        text = pg.TextItem(message, color=_text_colour(plot), anchor=(0.5, 0.5))
        item.addItem(text)
        text.setPos(0.5, 0.5)
        item.setXRange(0, 1)
        item.setYRange(0, 1)


def bar_chart(plot: pg.PlotWidget, labels: Sequence[str], values: Sequence[float],
              name: str = "", colour: str = SERIES_COLOURS[0], fmt: Format = number,
              units: str | None = None) -> pg.BarGraphItem:
    """One bar per label, its value written above it; with ``units`` (e.g. "B") the axis
    counts in SI multiples of it (kB, MB)."""
    bar = grouped_bars(plot, labels, [(name, list(values))], fmt=fmt, colours=[colour])[0]
    if units:
        plot.getPlotItem().getAxis("left").setLabel(units=units)
    return bar


def grouped_bars(plot: pg.PlotWidget, categories: Sequence[str],
                 series: Sequence[tuple[str, Sequence[float]]], fmt: Format = number,
                 colours: Sequence[str] = SERIES_COLOURS,
                 legend: bool | None = None) -> list[pg.BarGraphItem]:
    """Side by side within each category, one colour per series, with a legend when there
    is more than one series. A NaN value draws no bar (nothing measured there)."""
    clear_chart(plot)
    item = plot.getPlotItem()
    n = max(1, len(series))
    group = 0.8
    width = group / n
    show_legend = (n > 1) if legend is None else legend
    if show_legend:
        item.addLegend(offset=(-10, 10), labelTextColor=_text_colour(plot),
                       brush=pg.mkBrush(_background(plot)))
    bars = []
    top = 0.0
    text_colour = _text_colour(plot)
    for i, (name, values) in enumerate(series):
        xs = [c - group / 2 + width * (i + 0.5) for c in range(len(categories))]
        heights = [float(v) for v in values]
        drawn = [0.0 if math.isnan(h) else h for h in heights]
        colour = colours[i % len(colours)]
        bar = pg.BarGraphItem(x=xs, height=drawn, width=width * 0.92,
                              brush=pg.mkBrush(colour), pen=pg.mkPen(None), name=name,
                              series=name, values=heights, categories=list(categories))
        item.addItem(bar)  # a named item joins the legend by itself
        bars.append(bar)
        for x, h in zip(xs, heights):
            if math.isnan(h):
                continue
            top = max(top, h)
            label = pg.TextItem(fmt(h), color=text_colour, anchor=(0.5, 1.0))
            label.setFont(_small_font())
            item.addItem(label)
            label.setPos(x, h)
    item.getAxis("bottom").setTicks([[(c, str(label)) for c, label in enumerate(categories)]])
    item.setXRange(-0.6, len(categories) - 0.4, padding=0)
    item.setYRange(0, top * (1.35 if show_legend else 1.18) or 1.0, padding=0)
    return bars


def histogram(plot: pg.PlotWidget, edges: Sequence[float], counts: Sequence[float],
              colour: str = SERIES_COLOURS[2]) -> pg.BarGraphItem:
    """Counts between consecutive edges: bars that touch, each as wide as its bin."""
    clear_chart(plot)
    item = plot.getPlotItem()
    edges = [float(e) for e in edges]
    counts = [float(c) for c in counts]
    if len(edges) != len(counts) + 1:  # no usable edges: bins numbered 0..n
        edges = [float(i) for i in range(len(counts) + 1)]
    x0 = edges[:-1]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    bar = pg.BarGraphItem(x0=x0, width=widths, height=counts, brush=pg.mkBrush(colour),
                          pen=pg.mkPen(_background(plot)), name="count", series="count",
                          values=counts, categories=[f"{a:g}–{b:g}" for a, b in
                                                     zip(edges[:-1], edges[1:])])
    item.addItem(bar)
    text_colour = _text_colour(plot)
    for a, w, c in zip(x0, widths, counts):
        label = pg.TextItem(number(c), color=text_colour, anchor=(0.5, 1.0))
        label.setFont(_small_font())
        item.addItem(label)
        label.setPos(a + w / 2, c)
    item.getAxis("bottom").setTicks([[(e, f"{e:g}") for e in edges]])
    if edges:
        span = edges[-1] - edges[0] or 1.0
        item.setXRange(edges[0] - span * 0.03, edges[-1] + span * 0.03, padding=0)
    item.setYRange(0, max(counts, default=0) * 1.18 or 1.0, padding=0)
    return bar


def series_of(plot: pg.PlotWidget) -> dict[str, list[float]]:
    """What the chart shows: each bar series' name and values (NaN where no bar)."""
    out: dict[str, list[float]] = {}
    for item in plot.getPlotItem().items:
        if isinstance(item, pg.BarGraphItem) and "values" in item.opts:
            out[str(item.opts.get("series", ""))] = list(item.opts["values"])
    return out


def _text_colour(plot: pg.PlotWidget) -> QColor:
    return plot.palette().color(QPalette.ColorRole.Text)


def _background(plot: pg.PlotWidget) -> QColor:
    return plot.palette().color(QPalette.ColorRole.Base)


def _small_font() -> QFont:
    font = QFont(QApplication.font())
    font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
    return font
