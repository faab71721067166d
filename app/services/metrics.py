"""The metrics every service shares: per-stage durations and event rates over a moving
one-second window."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

log = logging.getLogger("rtformer.app")
STAGES = ("capture", "preprocess", "inference", "postprocess", "render", "encode")


class RollingStats:
    """Events and durations over a moving one-second window, thread-safe."""

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._events: dict[str, deque] = {}
        self._lock = threading.Lock()
        self.dropped: dict[str, int] = {}

    def add(self, name: str, milliseconds: float = 0.0, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            events = self._events.setdefault(name, deque())
            events.append((now, milliseconds))
            while events and events[0][0] < now - self.window:
                events.popleft()

    def drop(self, name: str) -> None:
        with self._lock:
            self.dropped[name] = self.dropped.get(name, 0) + 1

    def dropped_counts(self) -> dict[str, int]:
        """A copy of the drop counters, taken under the lock (services add to them)."""
        with self._lock:
            return dict(self.dropped)

    def fps(self, name: str, now: float | None = None) -> float:
        """Events per second: (n - 1) intervals over the span they cover."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = [t for t, _ in self._events.get(name, ()) if t >= now - self.window]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    def percentiles(self, name: str, now: float | None = None) -> tuple[float, float]:
        """(p50, p95) of the durations in the window, ms."""
        now = time.monotonic() if now is None else now
        with self._lock:
            values = [ms for t, ms in self._events.get(name, ()) if t >= now - self.window]
        if not values:
            return 0.0, 0.0
        return float(np.percentile(values, 50)), float(np.percentile(values, 95))
