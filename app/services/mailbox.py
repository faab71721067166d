"""How services hand over work without Qt: `LatestSlot` (one frame, the newest wins) and
`Mailbox` (calls queued for the GUI thread, drained by a timer there)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from app.services.metrics import RollingStats
from app.sources import Frame


class Mailbox:
    """What services tell the GUI, posted from any thread and drained on the GUI thread.

    Events (errors, a model ready, a source lost) are kept in order, every one; for
    `latest` kinds (results, the playback position) only the newest value is kept, so
    a slow GUI skips stale pictures instead of queueing them. Only Python objects and a
    lock are involved: no Qt signal is emitted (see the module docstring for why).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: deque[tuple[str, object]] = deque()
        self._latest: dict[str, object] = {}

    def post(self, kind: str, value: object = None) -> None:
        with self._lock:
            self._events.append((kind, value))

    def set_latest(self, kind: str, value: object) -> None:
        with self._lock:
            self._latest[kind] = value

    def sender(self, kind: str, latest: bool = False) -> Callable[[object], None]:
        """A one-argument callable for a service: posts (or sets the latest) `kind`."""
        return (
            (lambda value: self.set_latest(kind, value)) if latest else (lambda value: self.post(kind, value))
        )

    def drain(self) -> list[tuple[str, object]]:
        """Everything posted since the last drain: the events in order, then the latest values."""
        with self._lock:
            items = list(self._events) + list(self._latest.items())
            self._events.clear()
            self._latest.clear()
        return items


class LatestSlot:
    """A slot of size one: `put` replaces an unread frame (counted as dropped).

    Each capture run has a generation; `open_generation` starts a new one and only its
    frames are taken, so a previous source's thread that is still finishing a read can
    never slip a stale frame in after a switch."""

    def __init__(self, stats: RollingStats) -> None:
        self._frame: Frame | None = None
        self._condition = threading.Condition()
        self.stats = stats
        self.generation = 0

    def open_generation(self) -> int:
        """Clear the slot and accept frames of a new generation only; returns it."""
        with self._condition:
            self.generation += 1
            self._frame = None
            return self.generation

    def put(self, frame: Frame, generation: int | None = None) -> bool:
        """Offer a frame; False (and nothing stored) when `generation` is no longer current."""
        with self._condition:
            if generation is not None and generation != self.generation:
                return False
            if self._frame is not None:
                self.stats.drop("capture")
            self._frame = frame
            self._condition.notify()
            return True

    def get(self, timeout: float) -> Frame | None:
        with self._condition:
            if self._frame is None:
                self._condition.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def clear(self) -> None:
        with self._condition:
            self._frame = None
