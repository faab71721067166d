"""The capture service: reads a frame source on its own thread at the source's pace and
puts the newest frame in a `LatestSlot`."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.services.mailbox import LatestSlot
from app.services.metrics import RollingStats
from app.sources import FrameSource, SourceError

log = logging.getLogger("rtformer.app")


class _Pacer:
    """Plays file frames at their native rate: frame timestamps against the wall clock.
    `reset` restarts the clock at the next frame (after a pause or a seek); `loop` makes
    the first frame after a jump back to the start due one frame period after the last.
    """

    def __init__(self) -> None:
        self._origin: tuple[float, float | None] | None = None  # (wall clock, timestamp) of one frame
        self._last_due: float | None = None

    def reset(self) -> None:
        self._origin = None

    def loop(self, period: float) -> None:
        # A reset here let a one-image source (a loop per frame) run as fast as it could
        # be read: 220 "captured" frames a second instead of 5, beside inference.
        self._origin = None if self._last_due is None else (self._last_due + period, None)

    def delay(self, timestamp: float) -> float:
        """Seconds to wait before showing the frame stamped `timestamp`."""
        now = time.monotonic()
        if self._origin is None or self._origin[1] is None:
            clock = now if self._origin is None else self._origin[0]
            self._origin = (clock, timestamp)
        clock, stamp = self._origin
        self._last_due = clock + (timestamp - stamp)
        return max(0.0, self._last_due - now)


@dataclass(eq=False)
class _CaptureRun:
    """One source being read: its own stop event, slot generation and thread."""

    source: FrameSource
    generation: int
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


def _close_quietly(source: FrameSource) -> None:
    try:
        source.close()
    except Exception:  # releasing must not hide the error that ended the run
        log.exception("closing %s failed", source.name)


class CaptureService:
    """Reads the source on its own thread. Live sources as fast as they come; files
    paced by their timestamps (native rate), with pause, step, seek and loop.

    Every `start` begins a new run with its own stop event and slot generation. The
    previous run is told to stop and given RELEASE_WAIT to release its source; a run
    stuck in a read (a stalled stream waits up to its 10-s timeout) finishes on its own,
    closes its source, and can no longer deliver a frame. So the GUI never blocks for
    long and two sources never feed the slot. A live source that fails mid-stream (an
    unplugged camera) is reported through `on_lost` and reopened with backoff.
    """

    RELEASE_WAIT = 0.5  # seconds the GUI waits for the old source to be released
    RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)  # then every 5 s until it is back or stopped

    def __init__(
        self,
        slot: LatestSlot,
        stats: RollingStats,
        on_error: Callable[[str], None],
        on_position: Callable[[float], None] | None = None,
        on_lost: Callable[[str], None] | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.slot, self.stats, self.on_error = slot, stats, on_error
        self.on_position = on_position or (lambda seconds: None)
        self.on_lost = on_lost or on_error
        self.on_status = on_status or (lambda message: None)
        self.loop = True
        self._current: _CaptureRun | None = None
        self._runs: list[_CaptureRun] = []  # every run whose thread may still be alive
        self._resume = threading.Event()
        self._resume.set()
        self._step = threading.Event()
        self._seek_to: float | None = None

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    @property
    def live_threads(self) -> int:
        """Capture threads still running (the current one and any old one finishing)."""
        self._forget_finished_runs()
        return len(self._runs)

    def _forget_finished_runs(self) -> None:
        self._runs = [run for run in self._runs if run.thread.is_alive()]

    def start(self, source: FrameSource) -> None:
        """Stop the current source (releasing it), then open and run `source`.
        Opening happens on the capture thread, so a slow device never blocks the GUI."""
        self.stop()
        self._seek_to = None
        run = _CaptureRun(source, self.slot.open_generation())
        run.thread = threading.Thread(target=self._run, args=(run,), name="capture", daemon=True)
        self._current = run
        self._forget_finished_runs()
        self._runs.append(run)
        run.thread.start()

    def stop(self, wait: float | None = None) -> None:
        """Stop the current run; its frames are refused from now on. Waits at most
        `wait` seconds (default RELEASE_WAIT) for its thread to release the source."""
        run, self._current = self._current, None
        self.slot.open_generation()
        if run is not None:
            run.stop.set()
            run.thread.join(self.RELEASE_WAIT if wait is None else wait)

    def shutdown(self, timeout: float = 5.0) -> None:
        """At quit: stop, and give every capture thread still alive `timeout` in all to end."""
        self.stop(wait=0)
        deadline = time.monotonic() + timeout
        for run in self._runs:
            run.stop.set()
            run.thread.join(max(0.0, deadline - time.monotonic()))

    def set_paused(self, paused: bool) -> None:
        (self._resume.clear if paused else self._resume.set)()

    def step(self) -> None:
        """Deliver one more frame while paused."""
        self._step.set()

    def seek(self, seconds: float) -> None:
        self._seek_to = seconds

    def _run(self, run: _CaptureRun) -> None:
        source = run.source
        try:
            source.open()
            self._loop(run)
        except SourceError as error:
            if not run.stop.is_set():
                self.on_error(str(error))
        except Exception as error:  # a fault must reach the user, not kill the thread silently
            log.exception("capture from %s failed", source.name)
            if not run.stop.is_set():
                self.on_error(f"capture from {source.name} failed: {error}")
        finally:
            _close_quietly(source)

    def _loop(self, run: _CaptureRun) -> None:
        source, pacer = run.source, _Pacer()
        while not run.stop.is_set():
            if self.paused and not self._step.is_set():
                pacer.reset()  # resuming restarts the clock: no burst of "late" frames
                self._resume.wait(0.05)
                if self._seek_to is None:
                    continue
            if self._seek_to is not None and source.seekable:
                source.seek(self._seek_to)
                self._seek_to = None
                pacer.reset()
            started = time.perf_counter()
            try:
                frame = source.read()
            except SourceError as error:
                if not source.live or run.stop.is_set():
                    raise
                if not self._reconnect(run, error):
                    return
                pacer.reset()
                continue
            if frame is None:
                if self.loop and source.seekable:
                    source.seek(0.0)
                    pacer.loop(1.0 / source.fps)
                    continue
                return
            self.stats.add("capture", (time.perf_counter() - started) * 1e3)
            if not source.live and not self._step.is_set():
                run.stop.wait(pacer.delay(frame.timestamp))
            self._step.clear()
            frame.captured = time.monotonic()
            if run.stop.is_set() or not self.slot.put(frame, run.generation):
                return
            self.on_position(frame.timestamp)

    def _reconnect(self, run: _CaptureRun, error: SourceError) -> bool:
        """A live source failed: say so, then reopen it with backoff. False if stopped first."""
        source = run.source
        self.on_lost(f"{source.name} was lost ({error}); trying to reconnect")
        for attempt in itertools.count():
            _close_quietly(source)
            delay = self.RECONNECT_DELAYS[min(attempt, len(self.RECONNECT_DELAYS) - 1)]
            if run.stop.wait(delay):
                return False
            try:
                source.open()
            except SourceError as reopen_error:
                log.info("reconnecting %s: %s", source.name, reopen_error)
                continue
            self.on_status(f"{source.name} reconnected")
            return True
        return False
