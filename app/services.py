"""The pipeline's services, each on its own thread: capture, inference (with model
loading beside it), and recording; plus the metrics they share.

Capture -> LatestSlot -> Inference -> (Mailbox -> GUI, Recorder). The slot holds
one frame: a newer frame replaces an unread one and counts as dropped, so latency
never builds up. Errors never kill a thread silently: they reach `on_error`.

The thread rule: no service thread touches a Qt object, and the app never calls a
Signal's `emit()` from Python, on any thread. Services report through plain
callables; the session (app/session.py) hands them a `Mailbox`'s methods, and a QTimer on the GUI
thread drains the mailbox. Qt's own signals (timers, actions, widgets) are fine.

Why: the app died with "Fatal Python error: bool_dealloc: deallocating True or
False" (and, in 30-minute soaks, "none_dealloc: deallocating None"), during
recording and at quit. The cause is not the threads: PySide6 6.12.0 returns `True`
from `SignalInstance.emit()` and `None` from every void method (`update()`,
`setText()`, QPainter calls) without taking a reference, so each such call, on any
thread, takes one reference from the singleton (measured: 100 calls, -100
references; 6.11.3 loses none). On Python 3.11, where they are not immortal, the
count (about 13,000 for True in the running app) reaches zero after as many calls:
two emits a frame (the old signals) killed the app within 6 minutes, and the five
void calls of painting a frame within 25-31 minutes; with fewer, the count reached
zero while the interpreter dropped its own references at exit ("Garbage-collecting").
Python 3.12+ makes them immortal, which hides it. So: pyproject.toml keeps 6.12.0
out, `app.qtcheck` warns at start if the binding leaks, and the app emits no
signal from Python at all, which tests/test_app.py checks.
"""

from __future__ import annotations

import itertools
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
from engine.media import VideoWriter
from engine.runtime import MaskStabilizer, Segmenter, StallReport, StallWatchdog, render

log = logging.getLogger("rtformer.app")
STAGES = ("capture", "preprocess", "inference", "postprocess", "render", "encode")
# Steady masks start afresh when consecutive frames are further apart than this on the
# source's clock (a seek forward, a camera that paused) or go back in time (a seek back,
# a loop, a new file).
STEADY_GAP_SECONDS = 1.0


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


# ---------------------------------------------------------------- capture


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


# ---------------------------------------------------------------- inference


@dataclass(frozen=True)
class ViewSettings:
    """How results are drawn. Immutable: the GUI replaces the whole object, so the
    inference thread always sees one consistent view (read once per frame)."""

    view: str = "overlay"  # overlay | mask | side-by-side
    alpha: float = 0.5
    hidden: frozenset[int] = frozenset()  # classes not drawn
    steady: bool = True  # steady masks: labels carried from frame to frame (engine.runtime.stabilize)


@dataclass
class Result:
    """What the GUI paints, and what the readouts show, for one frame."""

    frame: Frame
    picture: np.ndarray  # BGR, what the view shows
    labels: np.ndarray  # (h, w) at the model's input size
    class_share: np.ndarray  # fraction of pixels per class
    latency_ms: float  # capture to picture


@dataclass(frozen=True)
class ModelRequest:
    """A model as the user chose it: which checkpoint, under which name, on which backend."""

    name: str  # "RTFormer-Slim", or the checkpoint's file name
    checkpoint: Path
    backend: str  # the Backend menu's label
    input_scale: float = 1.0  # the Input size menu's: each side of the model's input size times this

    @property
    def description(self) -> str:
        size = "" if self.input_scale == 1.0 else f" at {self.input_scale:.0%} input size"
        return f"{self.name} on {self.backend}{size}"


@dataclass(frozen=True)
class LoadedModel:
    request: ModelRequest
    segmenter: Segmenter


def compose(
    view: ViewSettings,
    frame: np.ndarray,
    labels: np.ndarray,
    lut: np.ndarray,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """The picture for the chosen view settings (engine.runtime.render draws it), at most `size`."""
    return render(view.view, frame, labels, lut, view.alpha, view.hidden, size)


class InferenceService:
    """Segments the newest frame on its own thread; loads replacement models on
    another, warming them up on the latest real frame before they are swapped in.

    A swapped-in model is on trial until it has segmented one real frame: if it fails
    there, the previous model comes back (`on_model` is called with it) and the error
    says why. A model that fails to load is reported through `on_load_failed`.

    With `view.steady`, labels are steady from frame to frame (engine.runtime.stabilize);
    their past is forgotten on a new model, on a jump in the source's clock, and when the
    session calls `forget_past` (a new source, a seek).

    A watchdog (engine.runtime.watchdog) reports a frame or a model load that has run
    past the stall limit through `on_stall`, with every thread's stack in the log:
    without it a stuck backend is a frozen picture and nothing said (issue 21). A thread
    stuck in a frame is left behind with its model, and a fresh thread waits for the
    next model the user picks.
    """

    def __init__(
        self,
        slot: LatestSlot,
        stats: RollingStats,
        on_result: Callable[[Result], None],
        on_error: Callable[[str], None],
        on_model: Callable[[LoadedModel], None],
        on_load_failed: Callable[[ModelRequest], None] | None = None,
        on_stall: Callable[[StallReport], None] | None = None,
    ) -> None:
        self.slot, self.stats = slot, stats
        self.on_result, self.on_error, self.on_model = on_result, on_error, on_model
        self.on_load_failed = on_load_failed or (lambda request: None)
        self.on_stall = on_stall or (lambda report: None)
        self.watchdog = StallWatchdog(self._stalled, waiting_is_stall=False)
        self.view = ViewSettings()
        # (H, W) in device pixels of the area the picture is shown in; the GUI sets it on resize.
        self.display_size: tuple[int, int] | None = None
        self.model: LoadedModel | None = None
        self.recorder: RecorderService | None = None
        self.last_frame: np.ndarray | None = None  # the latest real frame, for warm-ups
        self._pending: LoadedModel | None = None
        self._on_trial_over: LoadedModel | None = None  # the model to return to if the new one fails
        self._loading = threading.Lock()
        self._loaders: list[threading.Thread] = []
        self._last_error = ("", 0.0)
        self._stop = threading.Event()
        self._generation = 0  # a thread whose generation is past stops without a word
        self._thread = self._inference_thread()
        self.stabilizer = MaskStabilizer()  # the inference thread's; a fresh one after a stall
        self._steady_past: tuple[Segmenter, float] | None = None  # the model and time it holds
        self._forget = threading.Event()

    @property
    def segmenter(self) -> Segmenter | None:
        model = self.model
        return model.segmenter if model is not None else None

    def start(self) -> None:
        self._thread.start()
        self.watchdog.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop inference and wait (bounded) for it and any model loader to finish."""
        self._stop.set()
        self.watchdog.stop()
        deadline = time.monotonic() + timeout
        for thread in (self._thread, *self._loaders):
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def loading(self) -> bool:
        return self._loading.locked()

    def load_model(self, factory: Callable[[], Segmenter], request: ModelRequest) -> None:
        """Build a segmenter with `factory` on a loader thread; the running one keeps
        working until the new one is ready. On failure the old one stays."""
        self._loaders = [thread for thread in self._loaders if thread.is_alive()]
        loader = threading.Thread(
            target=self._load, args=(factory, request), name="model-loader", daemon=True
        )
        self._loaders.append(loader)
        loader.start()

    def _load(self, factory: Callable[[], Segmenter], request: ModelRequest) -> None:
        with self._loading:
            try:
                with self.watchdog.working("model loading"):
                    segmenter = factory()
                    # Warm up on what the model will really see: the latest frame, at its size.
                    frame = self.last_frame
                    if frame is None:
                        frame = np.zeros((*segmenter.input_size, 3), np.uint8)
                    segmenter.predict_model_labels(frame)
            except Exception as error:
                log.exception("loading %s failed", request.description)
                self.on_error(
                    f"could not load {request.description}: {error}. Still using the previous model."
                )
                self.on_load_failed(request)
                return
            self._pending = LoadedModel(request, segmenter)

    def _inference_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, args=(self._generation,), name="inference", daemon=True)

    def _run(self, generation: int = 0) -> None:
        while not self._stop.is_set() and generation == self._generation:
            if self._pending is not None:
                self._on_trial_over, self.model, self._pending = self.model, self._pending, None
                self.on_model(self.model)
            frame = self.slot.get(timeout=0.05)
            model = self.model
            if frame is None or model is None:
                continue
            try:
                with self.watchdog.working("inference"):
                    result = self._process(model.segmenter, frame)
            except Exception as error:
                if generation != self._generation:
                    return  # left behind after a stall: its failure is old news
                log.exception("inference failed")
                self._failed(model, frame, error)
                continue
            if generation != self._generation:
                return  # left behind after a stall: a fresh thread has taken over
            self._on_trial_over = None  # the new model works on real frames
            self.on_result(result)

    def forget_past(self) -> None:
        """The next frame's steady labels start afresh (a new source, a seek)."""
        self._forget.set()

    def _stalled(self, report: StallReport) -> None:
        if report.stage == "inference":  # leave the stuck thread and its model behind
            self._generation += 1
            self.model = self._on_trial_over = None
            self.stabilizer, self._steady_past = MaskStabilizer(), None
            self._thread = self._inference_thread()
            self._thread.start()
            self.watchdog.forget_busy()
        self.on_stall(report)

    def _failed(self, model: LoadedModel, frame: Frame, error: Exception) -> None:
        previous = self._on_trial_over
        if previous is not None and model is self.model:
            self.model, self._on_trial_over = previous, None
            self.on_error(
                f"{model.request.description} failed on a {frame.image.shape} frame: {error}. "
                f"Back to {previous.request.description}."
            )
            self.on_model(previous)
            return
        message = f"inference failed on a {frame.image.shape} frame: {error}"
        last_message, last_time = self._last_error
        if message != last_message or time.monotonic() - last_time > 5:  # not 30 banners a second
            self._last_error = (message, time.monotonic())
            self.on_error(message)

    def _process(self, segmenter: Segmenter, frame: Frame) -> Result:
        view = self.view  # one consistent view for the whole frame
        self.last_frame = frame.image
        labels = self._labels(segmenter, frame, view.steady)  # render scales the colours
        timings = segmenter.timings
        for stage in ("preprocess", "inference", "postprocess"):
            self.stats.add(stage, getattr(timings, stage))
        started = time.perf_counter()
        recorder = self.recorder
        # Drawn at the view's size unless recording, which keeps the source's resolution.
        size = self.display_size if recorder is None else None
        picture = compose(view, frame.image, labels, segmenter.lut, size)
        share = np.bincount(labels.ravel(), minlength=len(segmenter.class_names))[
            : len(segmenter.class_names)
        ]
        self.stats.add("render", (time.perf_counter() - started) * 1e3)
        self.stats.add("inferred")
        if recorder is not None:
            recorder.push(picture)
        return Result(frame, picture, labels, share / labels.size, (time.monotonic() - frame.captured) * 1e3)

    def _labels(self, segmenter: Segmenter, frame: Frame, steady: bool) -> np.ndarray:
        """The frame's labels at the model's size: steady ones when `steady`."""
        stabilizer = self.stabilizer  # a thread left behind by a stall keeps its own
        past, self._steady_past = self._steady_past, (segmenter, frame.timestamp) if steady else None
        if not steady:
            return segmenter.predict_model_labels(frame.image)
        forget = self._forget.is_set()
        self._forget.clear()
        continues = past is not None and past[0] is segmenter
        if forget or not continues or not 0 <= frame.timestamp - past[1] <= STEADY_GAP_SECONDS:
            stabilizer.reset()
        return segmenter.predict_model_labels(frame.image, stabilizer)


# ---------------------------------------------------------------- recording


class RecorderService:
    """Writes pictures to H.264 MP4 on its own thread. Timestamps are wall-clock
    time since recording started, so the file lasts as long as the recording.

    The MP4 is fragmented (engine.media.CRASH_SAFE_MP4): if the app is killed or the
    disk fills up, the file still plays up to its last second. The first picture fixes
    the size; pictures of another size (a view change) are letterboxed into it. Any
    failure sets `failed`, is reported once, and never blocks `stop`.
    """

    def __init__(
        self, path: Path, stats: RollingStats, on_error: Callable[[str], None], max_queue: int = 64
    ) -> None:
        self.path, self.stats, self.on_error = path, stats, on_error
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.started = time.monotonic()
        self.failed = False
        self._stopping = threading.Event()
        self._hold_until = 0.0
        self._writer = VideoWriter(path, fps=30, crash_safe=True)  # opens the file now: errors show at once
        self.codec = self._writer.codec
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def frames(self) -> int:
        return self._writer.frames

    def push(self, picture: np.ndarray) -> None:
        if self.failed or self._stopping.is_set():
            return
        try:
            self._queue.put_nowait((picture, self.elapsed))
        except queue.Full:
            self.stats.drop("encode")

    def stop(self, timeout: float = 30.0) -> Path | None:
        """Write what is queued, hold the last picture until now (so the file lasts
        as long as the recording did), then close the file cleanly. Returns the file,
        or None when no frame was written (then no file is left)."""
        self._hold_until = self.elapsed
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.on_error(f"the recorder did not finish within {timeout:.0f} s; {self.path} may be cut short")
            return self.path
        return self.path if self.frames else None

    def _run(self) -> None:
        last = None
        try:
            while True:
                try:
                    picture, seconds = self._queue.get(timeout=0.05)
                except queue.Empty:
                    if self._stopping.is_set():
                        break
                    continue
                self._write(picture, seconds)
                last = picture
            if last is not None:  # repeat the last picture at the stop time
                self._write(last, self._hold_until)
        except Exception as error:  # any failure: say so once; the file keeps what was written
            self.failed = True
            log.exception("recording %s failed", self.path)
            self.on_error(f"recording stopped: {error}. {self.path.name} keeps what was written.")
        finally:
            self._close()

    def _write(self, picture: np.ndarray, seconds: float) -> None:
        started = time.perf_counter()
        self._writer.write(picture, seconds)
        self.stats.add("encode", (time.perf_counter() - started) * 1e3)

    def _close(self) -> None:
        try:
            self._writer.close()
        except Exception as error:  # a full disk can fail the final flush too
            self.on_error(f"closing the recording failed: {error}")
        if not self._writer.frames:
            self.path.unlink(missing_ok=True)  # nothing recorded: leave no empty file behind
