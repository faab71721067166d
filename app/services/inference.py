"""The inference service: segments the newest frame on its own thread, loads the next
model beside the running one, and hands each result to the GUI and the recorder."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.services.compare import Panel, compose_pair
from app.services.mailbox import LatestSlot
from app.services.metrics import RollingStats
from app.services.recorder import RecorderService
from app.sources import Frame
from engine.runtime import (
    DEFAULT_MEASURE,
    MaskStabilizer,
    ModelOutputs,
    Segmenter,
    StallReport,
    StallWatchdog,
    class_shares,
    render,
)

log = logging.getLogger("rtformer.app")
# Steady masks start afresh when consecutive frames are further apart than this on the
# source's clock (a seek forward, a camera that paused) or go back in time (a seek back,
# a loop, a new file).
STEADY_GAP_SECONDS = 1.0


@dataclass(frozen=True)
class ViewSettings:
    """How results are drawn. Immutable: the GUI replaces the whole object, so the
    inference thread always sees one consistent view (read once per frame)."""

    view: str = "overlay"  # overlay | mask | side-by-side | confidence
    alpha: float = 0.5
    hidden: frozenset[int] = frozenset()  # classes not drawn
    steady: bool = True  # steady masks: labels carried from frame to frame (engine.runtime.stabilize)
    inspect: bool = False  # keep each frame's logits for the pixel inspector
    marks: bool = False  # the Compare view marks the pixels where the two models disagree


@dataclass
class Result:
    """What the GUI paints, and what the readouts show, for one frame."""

    frame: Frame
    picture: np.ndarray  # BGR, what the view shows
    labels: np.ndarray  # (h, w) at the model's input size
    class_share: np.ndarray  # fraction of pixels per class
    latency_ms: float  # capture to picture
    lut: np.ndarray | None = None  # the model's colours
    logits: np.ndarray | None = None  # (C, h, w), with ViewSettings.inspect
    confidence: np.ndarray | None = None  # in the confidence view (engine.runtime.confidence)
    partner: Panel | None = None  # the second model's, in the Compare view
    name: str = ""  # the model's, for the Compare view's header
    milliseconds: float = 0.0  # the model's inference time


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
    confidence: np.ndarray | None = None,
) -> np.ndarray:
    """The picture for the chosen view settings (engine.runtime.render draws it), at most `size`."""
    return render(view.view, frame, labels, lut, view.alpha, view.hidden, size, confidence)


def draw(view: ViewSettings, result: Result, size: tuple[int, int] | None = None) -> np.ndarray:
    """What the view shows for `result`: one model's picture, or the Compare view's pair."""
    image = result.frame.image
    if result.partner is None:
        return compose(view, image, result.labels, result.lut, size, result.confidence)
    mine = Panel(result.name, result.labels, result.lut, result.confidence, result.milliseconds)
    return compose_pair(view.view, image, (mine, result.partner), view.alpha, view.hidden, size, view.marks)


class Beside:
    """`work()` on a daemon thread of its own; `result()` waits for it (and raises what it
    raised). A daemon: one stuck in a native call never keeps the app from quitting."""

    def __init__(self, work: Callable[[], object]) -> None:
        self._done = threading.Event()
        self._value, self._error = None, None
        threading.Thread(target=self._run, args=(work,), name="partner", daemon=True).start()

    def _run(self, work: Callable[[], object]) -> None:
        try:
            self._value = work()
        except BaseException as error:  # handed to the thread that waits for it
            self._error = error
        finally:
            self._done.set()

    def result(self):
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


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
    without it a stuck backend is a frozen picture and nothing said. A thread
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
        on_partner: Callable[[LoadedModel | None], None] | None = None,
    ) -> None:
        self.slot, self.stats = slot, stats
        self.on_result, self.on_error, self.on_model = on_result, on_error, on_model
        self.on_load_failed = on_load_failed or (lambda request: None)
        self.on_stall = on_stall or (lambda report: None)
        self.on_partner = on_partner or (lambda model: None)
        self.partner: LoadedModel | None = None  # the Compare view's second model
        self._partner_generation = 0  # a load finishing after a newer request or a leave is dropped
        self._partner_stabilizer = MaskStabilizer()
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
                    result = self._process(model, frame)
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

    def _process(self, model: LoadedModel, frame: Frame) -> Result:
        view = self.view  # one consistent view for the whole frame
        segmenter = model.segmenter
        self.last_frame = frame.image
        beside = self._beside(frame, view)  # the Compare view's second model, on its own thread
        outputs = self._outputs(segmenter, frame, view)  # at the model's size: render scales the colours
        timings = segmenter.timings
        for stage in ("preprocess", "inference", "postprocess"):
            self.stats.add(stage, getattr(timings, stage))
        partner = beside.result() if beside is not None else None
        started = time.perf_counter()
        recorder = self.recorder
        shares = class_shares(outputs.labels, len(segmenter.class_names))
        result = Result(
            frame, None, outputs.labels, shares, 0.0, segmenter.lut, outputs.logits, outputs.confidence
        )
        if partner is not None:
            result.partner, result.name = partner, model.request.name
            result.milliseconds = self.stats.percentiles("inference")[0]
        # Drawn at the view's size unless recording, which keeps the source's resolution.
        result.picture = draw(view, result, self.display_size if recorder is None else None)
        self.stats.add("render", (time.perf_counter() - started) * 1e3)
        self.stats.add("inferred")
        if recorder is not None:
            recorder.push(result.picture)
        result.latency_ms = (time.monotonic() - frame.captured) * 1e3
        return result

    def _outputs(self, segmenter: Segmenter, frame: Frame, view: ViewSettings) -> ModelOutputs:
        """The frame's labels at the model's size (steady ones with `view.steady`), and what
        the confidence view and the inspector need."""
        measure = DEFAULT_MEASURE if view.view == "confidence" else None
        stabilizer = self._stabilizer_for(segmenter, frame, view.steady)
        return segmenter.predict_outputs(frame.image, stabilizer, view.inspect, measure)

    def _stabilizer_for(self, segmenter: Segmenter, frame: Frame, steady: bool) -> MaskStabilizer | None:
        """The stabilizer to feed this frame, reset where the past does not lead to it."""
        stabilizer = self.stabilizer  # a thread left behind by a stall keeps its own
        past, self._steady_past = self._steady_past, (segmenter, frame.timestamp) if steady else None
        if not steady:
            return None
        forget = self._forget.is_set()
        self._forget.clear()
        continues = past is not None and past[0] is segmenter
        if forget or not continues or not 0 <= frame.timestamp - past[1] <= STEADY_GAP_SECONDS:
            stabilizer.reset()
            self._partner_stabilizer.reset()
        return stabilizer

    # ------------------------------------------------------------ the Compare view's second model

    def load_partner(self, factory: Callable[[], Segmenter], request: ModelRequest) -> None:
        """Build the Compare view's second model on a loader thread; `on_partner` says when
        it runs beside the first (or None, and `on_error` why, when it failed)."""
        self._loaders = [thread for thread in self._loaders if thread.is_alive()]
        self._partner_generation += 1
        loader = threading.Thread(
            target=self._load_partner,
            args=(factory, request, self._partner_generation),
            name="partner-loader",
            daemon=True,
        )
        self._loaders.append(loader)
        loader.start()

    def _load_partner(self, factory: Callable[[], Segmenter], request: ModelRequest, generation: int) -> None:
        try:
            with self.watchdog.working("model loading"):
                segmenter = factory()
                frame = self.last_frame
                segmenter.predict_model_labels(
                    frame if frame is not None else np.zeros((64, 64, 3), np.uint8)
                )
        except Exception as error:
            log.exception("loading %s failed", request.description)
            self.on_error(f"could not load {request.description} to compare: {error}")
            self.on_partner(None)
            return
        if generation != self._partner_generation:
            return  # the view was left, or another model asked for, meanwhile
        self._partner_stabilizer.reset()
        self.partner = LoadedModel(request, segmenter)
        self.on_partner(self.partner)

    def drop_partner(self) -> None:
        """Leave the Compare view: the second model is let go (its memory with it)."""
        self._partner_generation += 1
        self.partner = None
        self._partner_stabilizer = MaskStabilizer()

    def _beside(self, frame: Frame, view: ViewSettings) -> Beside | None:
        """The second model's panel for `frame`, started on a thread of its own beside the
        first model, or None outside the Compare view. Side by side the pair plays at 19.0
        FPS where one after the other it played at 17.4 (60 FPS source, tools/insight_costs.py):
        one model's steady masks and drawing run while the other infers."""
        if self.partner is None:
            return None
        return Beside(lambda: self._partner_panel(frame, view))

    def _partner_panel(self, frame: Frame, view: ViewSettings) -> Panel | None:
        """The second model on the same frame, in the Compare view; None outside it."""
        partner = self.partner
        if partner is None:
            return None
        segmenter = partner.segmenter
        measure = DEFAULT_MEASURE if view.view == "confidence" else None
        stabilizer = self._partner_stabilizer if view.steady else None
        outputs = segmenter.predict_outputs(frame.image, stabilizer, False, measure)
        self.stats.add("partner inference", segmenter.timings.inference)
        milliseconds = self.stats.percentiles("partner inference")[0]
        return Panel(partner.request.name, outputs.labels, segmenter.lut, outputs.confidence, milliseconds)
