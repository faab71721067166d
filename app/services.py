"""The pipeline's services, each on its own thread: capture, inference (with model
loading beside it), and recording; plus the metrics they share.

Capture -> LatestSlot -> Inference -> (GUI, Recorder). The slot holds one frame:
a newer frame replaces an unread one and counts as dropped, so latency never
builds up. Errors never kill a thread silently: they reach `on_error`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.sources import Frame, FrameSource, SourceError
from engine.segmenter import Segmenter, colorize, overlay
from engine.video import VideoError, VideoWriter

log = logging.getLogger("rtformer.app")
STAGES = ("capture", "preprocess", "inference", "postprocess", "render", "encode")


# ---------------------------------------------------------------- metrics


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


class LatestSlot:
    """A slot of size one: `put` replaces an unread frame (counted as dropped)."""

    def __init__(self, stats: RollingStats) -> None:
        self._frame: Frame | None = None
        self._condition = threading.Condition()
        self.stats = stats

    def put(self, frame: Frame) -> None:
        with self._condition:
            if self._frame is not None:
                self.stats.drop("capture")
            self._frame = frame
            self._condition.notify()

    def get(self, timeout: float) -> Frame | None:
        with self._condition:
            if self._frame is None:
                self._condition.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def clear(self) -> None:
        with self._condition:
            self._frame = None


# ---------------------------------------------------------------- capture


class CaptureService:
    """Reads the source on its own thread. Live sources as fast as they come; files
    paced by their timestamps (native rate), with pause, step, seek and loop."""

    def __init__(
        self,
        slot: LatestSlot,
        stats: RollingStats,
        on_error: Callable[[str], None],
        on_position: Callable[[float], None] | None = None,
    ) -> None:
        self.slot, self.stats, self.on_error = slot, stats, on_error
        self.on_position = on_position or (lambda seconds: None)
        self.source: FrameSource | None = None
        self.loop = True
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._step = threading.Event()
        self._seek_to: float | None = None

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def start(self, source: FrameSource) -> None:
        """Stop the current source (releasing it), then open and run `source`.
        Opening happens on the capture thread, so a slow device never blocks the GUI."""
        self.stop()
        self.source = source
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._resume.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.slot.clear()

    def set_paused(self, paused: bool) -> None:
        (self._resume.clear if paused else self._resume.set)()

    def step(self) -> None:
        """Deliver one more frame while paused."""
        self._step.set()

    def seek(self, seconds: float) -> None:
        self._seek_to = seconds

    def _run(self) -> None:
        source = self.source
        try:
            source.open()
        except SourceError as error:
            self.on_error(str(error))
            return
        try:
            self._loop(source)
        except SourceError as error:
            self.on_error(str(error))
        except Exception as error:  # a fault must reach the user, not kill the thread silently
            log.exception("capture failed")
            self.on_error(f"capture failed: {error}")
        finally:
            source.close()

    def _loop(self, source: FrameSource) -> None:
        clock_start, stamp_start = time.monotonic(), None
        while not self._stop.is_set():
            if self.paused and not self._step.is_set():
                self._resume.wait(0.05)
                if self._seek_to is None:
                    continue
            if self._seek_to is not None and source.seekable:
                source.seek(self._seek_to)
                self._seek_to, stamp_start = None, None
            started = time.perf_counter()
            frame = source.read()
            if frame is None:
                if self.loop and source.seekable:
                    source.seek(0.0)
                    stamp_start = None
                    continue
                return
            self.stats.add("capture", (time.perf_counter() - started) * 1e3)
            if not source.live and not self._step.is_set():
                # Native rate: wait until this frame's time on the wall clock.
                if stamp_start is None:
                    clock_start, stamp_start = time.monotonic(), frame.timestamp
                due = clock_start + (frame.timestamp - stamp_start)
                self._stop.wait(max(0.0, due - time.monotonic()))
            self._step.clear()
            frame.captured = time.monotonic()
            self.slot.put(frame)
            self.on_position(frame.timestamp)


# ---------------------------------------------------------------- inference


@dataclass
class ViewSettings:
    view: str = "overlay"  # overlay | mask | side-by-side
    alpha: float = 0.5
    hidden: set[int] = field(default_factory=set)  # classes not drawn


@dataclass
class Result:
    """What the GUI paints, and what the readouts show, for one frame."""

    frame: Frame
    picture: np.ndarray  # BGR, what the view shows
    labels: np.ndarray
    class_share: np.ndarray  # fraction of pixels per class
    latency_ms: float  # capture to picture


def compose(view: ViewSettings, frame: np.ndarray, labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """The picture for the chosen view; hidden classes show the frame (or black in the mask)."""
    if view.hidden:
        visible = np.ones(256, bool)
        visible[list(view.hidden)] = False
    if view.view == "mask":
        mask = colorize(labels, lut)
        if view.hidden:
            mask[~visible[labels]] = 0
        return mask
    blended = overlay(frame, labels, lut, view.alpha)
    if view.hidden:
        keep = ~visible[labels]
        blended[keep] = frame[keep]
    if view.view == "side-by-side":
        return np.hstack([frame, blended])
    return blended


class InferenceService:
    """Segments the newest frame on its own thread; loads replacement models on
    another, warming them up before they are swapped in."""

    def __init__(
        self,
        slot: LatestSlot,
        stats: RollingStats,
        on_result: Callable[[Result], None],
        on_error: Callable[[str], None],
        on_model: Callable[[Segmenter], None],
    ) -> None:
        self.slot, self.stats = slot, stats
        self.on_result, self.on_error, self.on_model = on_result, on_error, on_model
        self.view = ViewSettings()
        self.segmenter: Segmenter | None = None
        self.recorder: RecorderService | None = None
        self._pending: Segmenter | None = None
        self._generation = 0
        self._loading = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def loading(self) -> bool:
        return self._loading.locked()

    def load_model(self, factory: Callable[[], Segmenter], description: str) -> None:
        """Build a segmenter with `factory` on a loader thread; the running one keeps
        working until the new one is ready. On failure the old one stays."""
        threading.Thread(
            target=self._load, args=(factory, description), name="model-loader", daemon=True
        ).start()

    def _load(self, factory: Callable[[], Segmenter], description: str) -> None:
        with self._loading:
            try:
                segmenter = factory()
                segmenter.predict(np.zeros((360, 480, 3), np.uint8))  # warm-up
            except Exception as error:
                log.exception("loading %s failed", description)
                self.on_error(f"could not load {description}: {error}. Still using the previous model.")
                return
            self._pending = segmenter

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._pending is not None:
                self.segmenter, self._pending = self._pending, None
                self.on_model(self.segmenter)
            frame = self.slot.get(timeout=0.05)
            if frame is None or self.segmenter is None:
                continue
            try:
                self.on_result(self._process(frame))
            except Exception as error:
                log.exception("inference failed")
                self.on_error(f"inference failed on a {frame.image.shape} frame: {error}")

    def _process(self, frame: Frame) -> Result:
        segmenter = self.segmenter
        labels = segmenter.predict(frame.image)
        timings = segmenter.timings
        for stage in ("preprocess", "inference", "postprocess"):
            self.stats.add(stage, getattr(timings, stage))
        started = time.perf_counter()
        picture = compose(self.view, frame.image, labels, segmenter.lut)
        share = np.bincount(labels.ravel(), minlength=len(segmenter.class_names))[
            : len(segmenter.class_names)
        ]
        self.stats.add("render", (time.perf_counter() - started) * 1e3)
        self.stats.add("inferred")
        recorder = self.recorder
        if recorder is not None:
            recorder.push(picture)
        return Result(frame, picture, labels, share / labels.size, (time.monotonic() - frame.captured) * 1e3)


# ---------------------------------------------------------------- recording


class RecorderService:
    """Writes pictures to H.264 MP4 on its own thread. Timestamps are wall-clock
    time since recording started, so the file lasts as long as the recording."""

    def __init__(
        self, path: Path, stats: RollingStats, on_error: Callable[[str], None], max_queue: int = 64
    ) -> None:
        self.path, self.stats, self.on_error = path, stats, on_error
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.started = time.monotonic()
        self.frames = 0
        self.failed = False
        self._writer = VideoWriter(path, fps=30)  # opens the file now: errors show at once
        self.codec = self._writer.codec
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def push(self, picture: np.ndarray) -> None:
        try:
            self._queue.put_nowait((picture, self.elapsed))
        except queue.Full:
            self.stats.drop("encode")

    def stop(self) -> Path:
        """Write what is queued, hold the last picture until now (so the file lasts
        as long as the recording did), then close the file cleanly."""
        self._queue.put(("hold", self.elapsed))
        self._queue.put(None)
        self._thread.join(timeout=30)
        return self.path

    def _run(self) -> None:
        last = None
        try:
            while (item := self._queue.get()) is not None:
                picture, seconds = item
                if isinstance(picture, str):  # "hold": repeat the last picture at the stop time
                    picture = last
                if picture is None or self.failed:
                    continue
                started = time.perf_counter()
                self._writer.write(picture, seconds)
                last = picture
                self.frames += 1
                self.stats.add("encode", (time.perf_counter() - started) * 1e3)
        except (VideoError, OSError) as error:
            self.failed = True
            self.on_error(f"recording stopped: {error}. The file keeps what was written.")
            while self._queue.get() is not None:  # let stop() return
                pass
        finally:
            try:
                self._writer.close()
            except Exception as error:  # a full disk can fail the final flush too
                self.on_error(f"closing the recording failed: {error}")
