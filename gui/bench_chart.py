"""``python -m gui.bench_chart BENCH.json BENCH.png``: ``parley bench``'s chart, drawn offscreen.

node/bench/output.py runs this in a process of its own (``QT_QPA_PLATFORM=offscreen``): the
headless core never imports Qt. Three panels, from the report bench.json holds:

* the ratios Parley / native per workload (whole job, warm, compute), medians with their 95%
  bootstrap intervals on a log scale, and the A/A ratio with its 0.9-1.1 band;
* the phases of each arm (median seconds of the slowest party), stacked;
* how time grows with the problem size (the scaling families), when the run had them.

QImage and QPainter only: no widget, no window, the same pixels on any machine with Qt.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QImage, QPainter, QPen

COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000"]  # Okabe-Ito, as gui/charts.py
RATIOS = (("wall_s", "whole job"), ("warm_s", "warm"), ("compute_s", "compute"))
PHASES = (("start_s", "start"), ("rendezvous_s", "rendezvous"), ("load_s", "load"),
          ("compute_s", "compute"), ("reveal_s", "reveal"), ("return_s", "return"),
          ("approve_s", "approve"), ("setup_s", "jail"))
WIDTH = 1500
ROW = 30
MARGIN = 24
LABEL_W = 130


def _font(px: int, bold: bool = False) -> QFont:
    font = QFont()
    font.setPixelSize(px)
    font.setBold(bold)
    return font


class _Canvas:
    def __init__(self, painter: QPainter) -> None:
        self.p = painter

    def text(self, x: float, y: float, text: str, px: int = 13, bold: bool = False,
             colour: str = "#202020", align: Qt.AlignmentFlag = Qt.AlignmentFlag.AlignLeft,
             width: float = 400) -> None:
        self.p.setFont(_font(px, bold))
        self.p.setPen(QColor(colour))
        left = x - width if align & Qt.AlignmentFlag.AlignRight else (
            x - width / 2 if align & Qt.AlignmentFlag.AlignHCenter else x)
        self.p.drawText(QRectF(left, y - px, width, px * 1.6),
                        int(align | Qt.AlignmentFlag.AlignVCenter), text)

    def line(self, x1: float, y1: float, x2: float, y2: float, colour: str = "#909090",
             width: float = 1.0, dash: bool = False) -> None:
        pen = QPen(QColor(colour), width)
        if dash:
            pen.setStyle(Qt.PenStyle.DashLine)
        self.p.setPen(pen)
        self.p.drawLine(QPointF(x1, y1), QPointF(x2, y2))

    def box(self, x: float, y: float, w: float, h: float, colour: str) -> None:
        self.p.setPen(Qt.PenStyle.NoPen)
        self.p.setBrush(QColor(colour))
        self.p.drawRect(QRectF(x, y, max(w, 0.5), h))


def _nice(value: float, down: bool) -> float:
    """The nearest 1, 2 or 5 times a power of ten below (or above) ``value``."""
    decade = 10 ** math.floor(math.log10(value))
    steps = [decade * m for m in (1, 2, 5, 10)]
    return max(v for v in steps if v <= value * 1.0001) if down else min(
        v for v in steps if v >= value * 0.9999)


def _ratio_panel(c: _Canvas, report: dict[str, Any], x0: float, y0: float, w: float) -> float:
    rows = report["workloads"]
    aa = report.get("aa")
    lo, hi = 0.5, 2.0
    for r in rows:
        for key, _ in RATIOS:
            fig = r["ratios"][key]
            if fig.get("median"):
                lo, hi = min(lo, fig["low"]), max(hi, fig["high"])
    lo, hi = _nice(lo, down=True), _nice(hi, down=False)
    c.text(x0, y0, "Parley / native: median of the pairs, 95% bootstrap interval (log scale)",
           15, True, width=w)
    top = y0 + 34
    plot_x, plot_w = x0 + LABEL_W, w - LABEL_W - 10
    n = len(rows) + (1 if aa else 0)
    bottom = top + n * ROW * 1.3
    scale = lambda v: plot_x + plot_w * (math.log10(v) - math.log10(lo)) / (
        math.log10(hi) - math.log10(lo))
    tick = 10 ** math.floor(math.log10(lo))
    while tick <= hi * 1.0001:
        for m in (1, 2, 5):
            v = tick * m
            if lo <= v <= hi:
                c.line(scale(v), top - 4, scale(v), bottom, "#d8d8d8")
                c.text(scale(v), bottom + 14, f"{v:g}", 11, align=Qt.AlignmentFlag.AlignHCenter,
                       width=60)
        tick *= 10
    c.line(scale(1.0), top - 4, scale(1.0), bottom, "#404040", 1.5)
    y = top
    one = scale(1.0)
    for r in rows:
        c.text(x0, y + ROW * 0.55, f"{r['name']} ({r['parties']}p)", 12, width=LABEL_W - 6)
        for i, (key, _) in enumerate(RATIOS):
            fig = r["ratios"][key]
            yy = y + 5 + i * 8
            if fig.get("median"):  # from 1 (as fast as native) to the median
                at = scale(fig["median"])
                c.box(min(one, at), yy, abs(at - one), 7, COLOURS[i])
                c.line(scale(fig["low"]), yy + 3.5, scale(fig["high"]), yy + 3.5, "#000000", 1.2)
        y += ROW * 1.3
    if aa:
        a0, a1 = scale(0.9), scale(1.1)
        c.box(a0, y, a1 - a0, ROW, "#e8f3e8" if aa["ok"] else "#f6dede")
        fig = aa["ratios"]["wall_s"]
        c.text(x0, y + ROW * 0.55, f"A/A {aa['workload']}", 12, True, width=LABEL_W - 6)
        if fig.get("median"):
            at = scale(fig["median"])
            c.box(min(one, at), y + 11, abs(at - one), 7, "#707070")
            c.line(scale(fig["low"]), y + 14.5, scale(fig["high"]), y + 14.5, "#000000", 1.2)
        y += ROW * 1.3
    c.text(one - 8, top - 10, "<- Parley faster", 11, align=Qt.AlignmentFlag.AlignRight,
           width=200, colour="#505050")
    c.text(one + 8, top - 10, "Parley slower ->", 11, width=200, colour="#505050")
    lx = plot_x
    for i, (_, label) in enumerate(RATIOS):
        c.box(lx, bottom + 26, 12, 10, COLOURS[i])
        c.text(lx + 16, bottom + 36, label, 12, width=120)
        lx += 130
    c.text(lx + 10, bottom + 36, "(bars: from 1 to the median; black: 95% interval; A/A band "
           "0.9-1.1)", 12, width=520)
    return bottom + 50


def _phase_panel(c: _Canvas, report: dict[str, Any], x0: float, y0: float, w: float) -> float:
    rows = report["workloads"]
    c.text(x0, y0, "Phases: median seconds of the slowest party (N native, P Parley)", 15,
           True, width=w)
    top = y0 + 34
    plot_x, plot_w = x0 + LABEL_W, w - LABEL_W - 80  # room for the total
    longest = max([sum(v or 0.0 for k, v in r[arm]["phases"].items())
                   for r in rows for arm in ("native", "parley")] + [0.1])
    scale = plot_w / longest
    y = top
    for r in rows:
        for arm, tag in (("native", "N"), ("parley", "P")):
            c.text(x0, y + 8, f"{r['name']} {tag}", 12, width=LABEL_W - 6)
            x = plot_x
            phases = r[arm]["phases"]
            for i, (key, _) in enumerate(PHASES):
                seconds = phases.get(key) or 0.0
                if seconds > 0:
                    c.box(x, y, seconds * scale, 13, COLOURS[i % len(COLOURS)])
                    x += seconds * scale
            c.text(x + 4, y + 8, f"{sum(v or 0.0 for v in phases.values()):.2f} s", 11, width=80)
            y += 17
        y += 6
    lx = plot_x
    for i, (_, label) in enumerate(PHASES):
        c.box(lx, y + 6, 12, 10, COLOURS[i % len(COLOURS)])
        c.text(lx + 16, y + 16, label, 12, width=100)
        lx += 110
    return y + 34


def _scaling_panel(c: _Canvas, report: dict[str, Any], x0: float, y0: float, w: float) -> float:
    table = report.get("scaling") or []
    families = [f for f in dict.fromkeys(s["family"] for s in table)
                if sum(s["family"] == f for s in table) > 1]  # a growth needs two sizes
    if not families:
        return y0
    c.text(x0, y0, "Growth with the problem size: median seconds (whole job, compute) and MB "
           "sent, by rows", 15, True, width=w)
    height, gap = 220, 40
    each = (w - gap * (len(families) - 1)) / len(families)
    series = (("native_s", "native whole"), ("parley_s", "Parley whole"),
              ("native_compute_s", "native compute"), ("parley_compute_s", "Parley compute"))
    for f_index, family in enumerate(families):
        points = [s for s in table if s["family"] == family]
        fx = x0 + f_index * (each + gap) + 40
        fw = each - 50
        top, bottom = y0 + 40, y0 + 40 + height
        c.text(fx, top - 8, family, 13, True, width=fw)
        most = max([s[k] or 0.0 for s in points for k, _ in series] + [0.01]) * 1.1
        c.line(fx, bottom, fx + fw, bottom, "#404040")
        c.line(fx, top, fx, bottom, "#404040")
        for frac in (0.25, 0.5, 0.75, 1.0):
            yy = bottom - frac * height
            c.line(fx, yy, fx + fw, yy, "#e0e0e0")
            c.text(fx - 4, yy, f"{most * frac:.2f}", 10, align=Qt.AlignmentFlag.AlignRight,
                   width=40)
        xs = [fx + fw * (i + 0.5) / len(points) for i in range(len(points))]
        for i, s in enumerate(points):
            c.text(xs[i], bottom + 14, f"{s['rows']} rows", 11,
                   align=Qt.AlignmentFlag.AlignHCenter, width=90)
            c.text(xs[i], bottom + 28, f"{s['bytes'] / 1e6:.1f} MB, {s['rounds']} rounds", 10,
                   align=Qt.AlignmentFlag.AlignHCenter, width=160)
        for k_index, (key, _) in enumerate(series):
            ys = [bottom - (s[key] or 0.0) / most * height for s in points]
            for i in range(len(points) - 1):
                c.line(xs[i], ys[i], xs[i + 1], ys[i + 1], COLOURS[k_index], 2.0,
                       dash=k_index >= 2)
            for x, yy in zip(xs, ys):
                c.box(x - 3, yy - 3, 6, 6, COLOURS[k_index])
    ly = y0 + 40 + height + 44
    lx = x0 + 40
    for k_index, (_, label) in enumerate(series):
        c.line(lx, ly, lx + 22, ly, COLOURS[k_index], 2.0, dash=k_index >= 2)
        c.text(lx + 28, ly + 5, label, 12, width=140)
        lx += 170
    return ly + 20


def render(report: dict[str, Any], png: Path) -> None:
    rows = report["workloads"]
    height = (MARGIN * 2 + 60 + 40 + (len(rows) + 2) * ROW * 1.3 + 90
              + len(rows) * 40 + 80 + (340 if len(report.get("scaling") or []) > 1 else 0))
    image = QImage(WIDTH, int(height), QImage.Format.Format_RGB32)  # cropped when drawn
    image.fill(QColor("#ffffff"))
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)
    try:
        c = _Canvas(painter)
        m = report["machine"]
        title = (f"parley bench{' --quick' if report.get('quick') else ''}: {len(rows)} "
                 f"workload(s), {report['pairs']} pair(s), {m['cores']} cores; load average "
                 f"{m['load_before'][0]:.2f} before, {m['load_after'][0]:.2f} after")
        c.text(MARGIN, MARGIN + 10, title, 17, True, width=WIDTH - 2 * MARGIN)
        checks = report["checks"]
        words = [("results agree" if checks["results_agree"] else "RESULTS DIFFER"),
                 ("same rounds and bytes" if checks["fingerprints_equal"]
                  else "rounds/bytes differ (see bench.json)")]
        if report.get("aa"):
            words.append("A/A ok" if report["aa"]["ok"] else "A/A: too noisy")
        c.text(MARGIN, MARGIN + 34, "; ".join(words), 13, width=WIDTH - 2 * MARGIN,
               colour="#202020" if checks["results_agree"] else "#b00000")
        y = _ratio_panel(c, report, MARGIN, MARGIN + 70, WIDTH - 2 * MARGIN)
        y = _phase_panel(c, report, MARGIN, y + 20, WIDTH - 2 * MARGIN)
        y = _scaling_panel(c, report, MARGIN, y + 20, WIDTH - 2 * MARGIN)
    finally:
        painter.end()
    image = image.copy(0, 0, WIDTH, min(image.height(), int(y + MARGIN)))
    if not image.save(str(png), "PNG"):
        raise OSError(f"could not write {png}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m gui.bench_chart BENCH.json BENCH.png", file=sys.stderr)
        return 2
    try:
        report = json.loads(Path(argv[0]).read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {argv[0]}: {exc}", file=sys.stderr)
        return 1
    app = QGuiApplication.instance() or QGuiApplication(["parley-bench-chart"])
    try:
        render(report, Path(argv[1]))
    except (OSError, KeyError, TypeError, ValueError) as exc:
        print(f"cannot draw the chart: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
