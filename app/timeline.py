"""The class timeline: each class's share of the frame over the last minute, as a live
chart (Qt Charts, part of PySide6: nothing more to install).

Results arrive at the model's rate; the chart keeps one point per `STEP_SECONDS` (the
mean of the frames in it) and is redrawn at most `REDRAW_HZ` times a second, so its
cost does not grow with the frame rate: 2.3-2.6 ms a frame at 20 FPS with every frame a
point and antialiased lines, measured by tools/insight_costs.py.
Classes are shown and hidden with the legend's ticks (`set_class_visible`).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from PySide6.QtCharts import QChart, QChartView, QLineSeries, QValueAxis
from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPen

WINDOW_SECONDS = 60.0
STEP_SECONDS = 0.25
REDRAW_HZ = 4


class ClassTimeline(QChartView):
    """Shares (0-100%) per class against the source's clock, the last `WINDOW_SECONDS`."""

    def __init__(self) -> None:
        self.chart_ = QChart()
        super().__init__(self.chart_)
        self.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        self.setMinimumHeight(160)
        self.chart_.legend().hide()  # the side panel's legend names the colours
        self.chart_.setMargins(self.chart_.margins() * 0)
        self.time_axis, self.share_axis = QValueAxis(), QValueAxis()
        self.time_axis.setTitleText("seconds")
        self.share_axis.setRange(0, 100)
        self.share_axis.setTitleText("%")
        self.share_axis.setLabelFormat("%d")
        self.chart_.addAxis(self.time_axis, Qt.AlignmentFlag.AlignBottom)
        self.chart_.addAxis(self.share_axis, Qt.AlignmentFlag.AlignLeft)
        self.series: list[QLineSeries] = []
        self.points: deque[tuple[float, np.ndarray]] = deque()  # (step start, mean shares)
        self._step: tuple[float, np.ndarray, int] | None = None  # the step being filled
        self._dirty = False
        self.timer = QTimer(self, interval=1000 // REDRAW_HZ, timeout=self.redraw)
        self.timer.start()

    def set_classes(self, names: list[str], palette, hidden=()) -> None:
        """One line per class in its palette colour (a new model, maybe new classes)."""
        self.chart_.removeAllSeries()
        self.series = []
        for index, (name, colour) in enumerate(zip(names, palette, strict=True)):
            series = QLineSeries(name=name)
            series.setPen(QPen(QColor(*colour), 2))
            self.chart_.addSeries(series)
            series.attachAxis(self.time_axis)
            series.attachAxis(self.share_axis)
            series.setVisible(index not in hidden)
            self.series.append(series)
        self.clear()

    def set_class_visible(self, index: int, visible: bool) -> None:
        if 0 <= index < len(self.series):
            self.series[index].setVisible(visible)

    def clear(self) -> None:
        """Forget the points (a new source, a seek back)."""
        self.points.clear()
        self._step = None
        self._dirty = True

    def add(self, seconds: float, shares: np.ndarray) -> None:
        """One frame's shares (fractions summing to 1) at `seconds` on the source's clock."""
        start = seconds - seconds % STEP_SECONDS
        if self._step is not None and seconds < self._step[0]:
            self.clear()  # the clock went back: a loop or a seek
        if self._step is not None and self._step[0] == start:
            _, total, count = self._step
            self._step = (start, total + shares, count + 1)
        else:
            self._step = (start, np.asarray(shares, np.float64).copy(), 1)
            self.points.append((start, self._step[1]))
        begin, total, count = self._step
        self.points[-1] = (begin, total / count)
        while self.points and self.points[0][0] < seconds - WINDOW_SECONDS:
            self.points.popleft()
        self._dirty = True

    def redraw(self) -> None:
        if not self._dirty or not self.series:
            return
        self._dirty = False
        times = [seconds for seconds, _ in self.points]
        for index, series in enumerate(self.series):
            series.replace([QPointF(t, float(shares[index]) * 100) for t, shares in self.points])
        end = times[-1] if times else 0.0
        self.time_axis.setRange(max(0.0, end - WINDOW_SECONDS), max(end, 1.0))
