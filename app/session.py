"""The session: what the app is doing, behind the window.

`Session` owns the services (capture, inference, recording), the source that plays,
the model that runs and the one asked for, the view settings, recordings, snapshots
and the settings that remember them. It runs on the GUI thread: the services report
into its `Mailbox`, and `drain` (called from the window's timer) handles each report
and tells the window what changed through the `SessionView` methods. The window
builds widgets, wires them to these methods and paints; it keeps no state of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import cv2
from PySide6.QtCore import QSettings

from app.services import (
    STAGES,
    AreasExport,
    CaptureService,
    InferenceService,
    LatestSlot,
    LoadedModel,
    Mailbox,
    ModelRequest,
    RecorderService,
    Result,
    RollingStats,
    draw,
)
from app.sources import CameraSource, FakeCamera, FrameSource, VideoFileSource, source_for
from engine.media import VideoError
from engine.resources import demo_video, recordings_dir
from engine.runtime import (
    BACKEND_CHOICES,
    INPUT_SCALES,
    AreasCsv,
    BackendChoice,
    Segmenter,
    StallReport,
    default_backend,
    why_unavailable,
)

log = logging.getLogger("rtformer.app")
MAX_RECENT = 8
# The input size hint: a model that keeps up with less than this share of the source's frames
# for this many readout ticks in a row (half a second each) is told about Model > Input size.
# Dips while seeking, pausing or swapping models last a tick or two.
KEEPS_UP = 0.8
SLOW_TICKS = 6
# File > Export areas keeps each segmented frame's shares: 5 hours at 20 FPS, about 70 MB.
MAX_AREA_FRAMES = 360_000


class SessionView(Protocol):
    """What the session tells the window; always called on the GUI thread."""

    def show_error(self, message: str) -> None: ...

    def show_status(self, message: str, milliseconds: int = 5000) -> None: ...

    def show_result(self, result: Result) -> None: ...

    def show_position(self, seconds: float, duration: float) -> None: ...

    def source_started(self, source: FrameSource) -> None: ...

    def model_changed(self) -> None: ...

    def compare_changed(self, on: bool) -> None: ...

    def recording_changed(self, recording: bool) -> None: ...

    def areas_progress(self, frames: int, total: int) -> None: ...

    def export_ended(self) -> None: ...


def read_setting(settings: QSettings, key: str, default, convert=None):
    """A stored setting converted with `convert` (default: the default's type); the default
    when it is missing or damaged (a hand-edited or corrupt settings file must not stop the app)."""
    value = settings.value(key, default)
    try:
        return (convert or type(default))(value)
    except (TypeError, ValueError):
        log.warning("ignoring the damaged setting %s=%r", key, value)
        return default


def read_flag(value) -> bool:
    """A stored yes/no: QSettings gives a bool back, or from an INI file "true"/"false"."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false", "1", "0"):
        return str(value).lower() in ("true", "1")
    raise ValueError(f"not a yes/no: {value!r}")


def variant_name(variant: str) -> str:
    """What the menus and readouts call a shipped variant: "slim" -> "RTFormer-Slim"."""
    return f"RTFormer-{variant.capitalize()}"


def segmenter_factory(checkpoint: Path, choice: BackendChoice, scale: float) -> Callable[[], Segmenter]:
    """What builds a Segmenter of `checkpoint` on `choice` at input `scale`, on a service's thread."""
    return lambda: Segmenter(checkpoint, choice.backend, choice.device, choice.precision, input_scale=scale)


def unused_path(folder: Path, pattern: str, suffix: str) -> Path:
    """folder/<time.strftime(pattern)><suffix>, with -2, -3, ... when that name is taken
    (two recordings or snapshots in the same second must not overwrite each other)."""
    stem = time.strftime(pattern)
    path, number = folder / f"{stem}{suffix}", 2
    while path.exists():
        path, number = folder / f"{stem}-{number}{suffix}", number + 1
    return path


class Session:
    def __init__(self, view: SessionView, settings: QSettings, weights: dict[str, Path]) -> None:
        self.view, self.settings, self.weights = view, settings, weights
        self.stats = RollingStats()
        self.mailbox = Mailbox()
        self.slot = LatestSlot(self.stats)
        send = self.mailbox.sender
        self.capture = CaptureService(
            self.slot,
            self.stats,
            send("error"),
            send("position", latest=True),
            on_lost=send("source_lost"),
            on_status=send("status"),
        )
        self.inference = InferenceService(
            self.slot,
            self.stats,
            send("result", latest=True),
            send("error"),
            send("model"),
            send("load_failed"),
            send("stalled"),
            send("partner"),
        )
        self.handlers: dict[str, Callable] = {
            "error": view.show_error,
            "status": view.show_status,
            "source_lost": self.on_source_lost,
            "model": self.on_model,
            "load_failed": lambda request: view.model_changed(),  # the menus go back to what runs
            "position": self.on_position,
            "result": self.on_result,
            "stalled": self.on_stalled,
            "partner": self.on_partner,
            "areas_progress": lambda progress: view.areas_progress(*progress),
            "areas_done": self.on_areas_done,
            "areas_failed": self.on_areas_failed,
        }
        self.recorder: RecorderService | None = None
        self.last_recording: Path | None = None
        self.source: FrameSource | None = None
        self.result: Result | None = None
        self.model_name = ""
        self.checkpoint: Path | None = None
        self.requested: ModelRequest | None = None  # the model last asked for
        self.backend_choice = self.restored_backend()  # the active model's backend, once one runs
        self.input_scale = self.restored_input_scale()  # the active model's, once one runs
        self.results_seen = 0
        self.slow_ticks = 0  # readout ticks in a row in which the model fell behind the source
        self.hinted = False  # the input size hint was given for the model that runs
        # Called with each Result once shown. Plain callables, not a Signal: in PySide6 6.12.0
        # every Python-side emit() takes a reference to True it never gave (see app/services.py).
        self.frame_listeners: list[Callable[[Result], None]] = []
        # Each segmented frame's class shares for File > Export areas: index -> (seconds, shares).
        self.areas: dict[int, tuple[float, object]] = {}
        self.areas_export: AreasExport | None = None  # File > Export areas over a whole file
        self.inference.start()

    def drain(self) -> None:
        """Deliver what the services posted, on the GUI thread."""
        for kind, value in self.mailbox.drain():
            self.handlers[kind](value)
        if self.recorder is not None and self.recorder.failed:
            self.stop_recording()  # the recorder said why; close the file and show it

    # ------------------------------------------------------------ sources

    def open_location(self, location: str) -> None:
        """Play a file, folder, stream URL or image; remembered in the recent list."""
        self.start_source(source_for(location))
        self.remember_recent(location)

    def start_source(self, source: FrameSource) -> None:
        """Switch sources: the recording (if any) is closed first, the old source released."""
        self.stop_recording()
        self.source = source
        self.capture.set_paused(False)
        self.inference.forget_past()  # steady masks start afresh on the new source
        self.areas = {}
        self.capture.start(source)
        self.view.source_started(source)
        if not isinstance(source, (CameraSource, FakeCamera)):
            self.settings.setValue("source", str(getattr(source, "path", "")))

    def remember_recent(self, location: str) -> None:
        recent = [location] + [r for r in self.recent_files() if r != location]
        self.settings.setValue("recent", recent[:MAX_RECENT])

    def recent_files(self) -> list[str]:
        value = self.settings.value("recent", [])
        return [value] if isinstance(value, str) else list(value or [])

    def set_looping(self, on: bool) -> None:
        self.capture.loop = on

    def toggle_pause(self) -> bool:
        """Pause or play; returns whether it is paused now."""
        self.capture.set_paused(not self.capture.paused)
        return self.capture.paused

    def step(self) -> None:
        """One frame forward, pausing first."""
        if not self.capture.paused:
            self.capture.set_paused(True)
        self.capture.step()

    def seek_fraction(self, fraction: float) -> None:
        if self.source is not None and self.source.duration:
            self.inference.forget_past()
            self.capture.seek(fraction * self.source.duration)

    def on_position(self, seconds: float) -> None:
        self.view.show_position(seconds, self.source.duration if self.source is not None else 0)

    def on_source_lost(self, message: str) -> None:
        """A live source went away mid-stream: close the recording cleanly, say so; the
        capture service is already trying to reconnect."""
        self.stop_recording()
        self.view.show_error(message)

    # ------------------------------------------------------------ models and backends

    def choose_model(self, variant: str) -> None:
        self.load_model(self.weights[variant], variant_name(variant))

    def choose_backend(self, choice: BackendChoice) -> None:
        """Reload the current model on `choice`; the menus follow once it runs (or roll back)."""
        model = self.inference.model
        request = model.request if model is not None else self.requested
        if request is not None:
            self.load_model(request.checkpoint, request.name, choice)

    def choose_input_scale(self, scale: float) -> None:
        """Reload the current model fitting frames into its input size times `scale`; the
        menus follow once it runs (or roll back)."""
        model = self.inference.model
        request = model.request if model is not None else self.requested
        if request is not None:
            self.load_model(request.checkpoint, request.name, input_scale=scale)

    def load_model(
        self,
        checkpoint: Path,
        name: str,
        choice: BackendChoice | None = None,
        input_scale: float | None = None,
    ) -> None:
        """Load in the background; the stream keeps running on the current model. Nothing
        (menus, settings) records the new choice until the new model has run."""
        choice = choice or self.backend_choice
        scale = self.input_scale if input_scale is None else input_scale
        self.requested = request = ModelRequest(name, Path(checkpoint), choice.label, scale)
        # INT8 is calibrated on the bundled frames (engine.runtime.artifacts.default_calibration):
        # the model card measures that model, and it is built once and cached.
        # The first time on a machine, auto builds INT8 models and times the candidates:
        # 15 s for Slim, 24 s for Base on this project's 2-core machine; then it is remembered.
        first_time = (
            " (timing the backends if this is the first time here)" if choice.backend == "auto" else ""
        )
        self.view.show_status(f"loading {request.description}{first_time}...", 0)

        self.inference.load_model(segmenter_factory(checkpoint, choice, scale), request)

    def on_model(self, model: LoadedModel) -> None:
        """A model runs now (a new one, or the previous one back after a failed switch)."""
        request, segmenter = model.request, model.segmenter
        self.model_name, self.checkpoint = request.name, request.checkpoint
        self.backend_choice = next(c for c in BACKEND_CHOICES if c.label == request.backend)
        self.input_scale = request.input_scale
        self.slow_ticks, self.hinted = 0, False
        self.settings.setValue("checkpoint", str(self.checkpoint))
        self.settings.setValue("backend", self.backend_choice.label)
        self.settings.setValue("input_scale", self.input_scale)
        self.view.model_changed()
        self.view.show_status(f"{self.model_name} ready on {segmenter.description}")
        partner = self.inference.partner
        if partner is not None and partner.request.checkpoint == self.checkpoint:
            self.set_compare(True)  # the same model on both sides: compare with the other one

    def running_variant(self) -> str | None:
        """The shipped variant that runs now, if one does."""
        if self.inference.model is None:
            return None
        return next((v for v, path in self.weights.items() if path == self.checkpoint), None)

    def running_backend(self) -> str | None:
        """The label of the backend that runs now, if a model does."""
        return self.backend_choice.label if self.inference.model is not None else None

    def running_input_scale(self) -> float | None:
        """The input scale of the model that runs now, if one does."""
        return self.input_scale if self.inference.model is not None else None

    def restored_input_scale(self) -> float:
        """The stored input scale when it is one the menu offers, else the model's own size."""
        stored = read_setting(self.settings, "input_scale", 1.0, float)
        return next((scale for scale in INPUT_SCALES if abs(scale - stored) < 1e-6), 1.0)

    def restored_backend(self) -> BackendChoice:
        """The stored backend choice when it is still available here, else the default."""
        default = default_backend()
        label = self.settings.value("backend", default.label)
        stored = next((c for c in BACKEND_CHOICES if c.label == label), None)
        return stored if stored is not None and not why_unavailable(stored) else default

    # ------------------------------------------------------------ the Compare view

    def set_compare(self, on: bool) -> None:
        """Enter the Compare view (the other shipped model beside the running one, on the
        same frames), or leave it and let the second model go."""
        if not on:
            self.inference.drop_partner()
            self.view.compare_changed(False)
            return
        variant = "slim" if self.running_variant() == "base" else "base"
        if self.running_variant() is None:  # a checkpoint of the user's: against shipped Slim
            variant = "slim"
        checkpoint, choice, scale = self.weights[variant], self.backend_choice, self.input_scale
        request = ModelRequest(variant_name(variant), checkpoint, choice.label, scale)
        self.view.show_status(f"loading {request.description} to compare...", 0)

        self.inference.load_partner(segmenter_factory(checkpoint, choice, scale), request)

    def on_partner(self, model: LoadedModel | None) -> None:
        if model is not None and self.inference.partner is not model:
            return  # left (or replaced) before this report was read
        self.view.compare_changed(model is not None)
        if model is not None:
            self.view.show_status(f"comparing with {model.request.name} on {model.segmenter.description}")

    # ------------------------------------------------------------ class areas

    def recent_areas(self, seconds: float) -> list[tuple[float, object]]:
        """(time, shares) of the segmented frames in the last `seconds` on the source's clock up
        to the frame shown, in frame order (what the class timeline shows when opened)."""
        if self.result is None:
            return []
        now = self.result.frame.timestamp
        return [
            self.areas[index] for index in sorted(self.areas) if now - seconds <= self.areas[index][0] <= now
        ]

    def export_areas(self, path: str | Path) -> int:
        """Write each segmented frame's class shares of this source as CSV (frame, time,
        one column per class), in frame order; how many rows."""
        segmenter = self.inference.segmenter
        if segmenter is None or not self.areas:
            raise ValueError("no frame has been segmented yet")
        with AreasCsv(path, segmenter.class_names) as table:
            for index in sorted(self.areas):
                seconds, shares = self.areas[index]
                table.write(index, seconds, shares)
        return len(self.areas)

    def file_to_export(self) -> Path | None:
        """The video file that plays, when its every frame can be exported (not a camera, a
        stream or images: for those, what was segmented)."""
        source = self.source
        return Path(source.path) if type(source) is VideoFileSource else None

    def export_file_areas(self, path: str | Path) -> None:
        """Every frame of the playing video file: its class shares into the CSV `path`, by
        a pass of its own in the background with the running model and its settings
        (`view.areas_progress`, then `view.export_ended` and a status line)."""
        source, checkpoint = self.file_to_export(), self.checkpoint
        if source is None or checkpoint is None or self.inference.model is None:
            raise ValueError("no video file is being segmented")
        if Path(path).resolve() == source.resolve():
            raise ValueError(f"{source.name} is the video being read: choose another name")
        self.cancel_export()
        send, post = self.mailbox.sender, self.mailbox.post
        self.areas_export = AreasExport(
            segmenter_factory(checkpoint, self.backend_choice, self.input_scale),
            source,
            path,
            self.inference.view.steady,
            send("areas_progress", latest=True),
            lambda done: post("areas_done", (export, done)),
            lambda message: post("areas_failed", (export, message)),
        )
        export = self.areas_export
        export.start()

    def cancel_export(self, timeout: float | None = None) -> None:
        """Stop the whole-file export, if one runs; it leaves no file."""
        export, self.areas_export = self.areas_export, None
        if export is not None:
            export.cancel(timeout)

    def on_areas_done(self, report: tuple[AreasExport, tuple[int, Path] | None]) -> None:
        export, done = report
        if export is self.areas_export:
            self.areas_export = None
            self.view.export_ended()
        if done is not None:  # also one that finished as it was cancelled: its file is whole
            rows, path = done
            self.view.show_status(
                f"wrote the class shares of all {rows} frames of {export.source.name} to {path}", 10000
            )

    def on_areas_failed(self, report: tuple[AreasExport, str]) -> None:
        export, message = report
        if export is self.areas_export:
            self.areas_export = None
            self.view.export_ended()
        self.view.show_error(message)

    # ------------------------------------------------------------ view settings and results

    def change_view(self, **changes) -> None:
        """Replace the view settings as a whole (the inference thread reads them once a frame)."""
        self.inference.view = replace(self.inference.view, **changes)

    def show_class(self, index: int, shown: bool) -> None:
        hidden = set(self.inference.view.hidden)
        (hidden.discard if shown else hidden.add)(index)
        self.change_view(hidden=frozenset(hidden))

    def set_display_size(self, size: tuple[int, int]) -> None:
        """Pictures are drawn at most this size (height, width) unless recording."""
        self.inference.display_size = size

    def on_result(self, result: Result) -> None:
        self.result = result
        self.results_seen += 1
        self.areas[result.frame.index] = (result.frame.timestamp, result.class_share)
        if len(self.areas) > MAX_AREA_FRAMES:  # a camera left on for hours: the oldest go
            del self.areas[next(iter(self.areas))]
        self.view.show_result(result)
        for listener in self.frame_listeners:
            listener(result)

    def readout_text(self) -> str:
        stats = self.stats
        segmenter = self.inference.segmenter
        lines = [
            f"capture   {stats.fps('capture'):5.1f} FPS",
            f"inference {stats.fps('inferred'):5.1f} FPS",
            f"display   {stats.fps('display'):5.1f} FPS",
            "latency ms   p50    p95",
        ]
        for stage in STAGES:
            p50, p95 = stats.percentiles(stage)
            lines.append(f"{stage:11} {p50:6.1f} {p95:6.1f}")
        dropped = ", ".join(f"{k} {v}" for k, v in stats.dropped_counts().items()) or "none"
        lines.append(f"dropped: {dropped}")
        if segmenter is not None:
            lines.append(f"model: {self.model_name}")
            lines.append(f"backend: {segmenter.description}")
            if segmenter.preprocessor.size is not None:  # once a frame went through
                height, width = segmenter.preprocessor.size
                lines.append(f"input: {height}x{width} ({segmenter.input_scale:.0%})")
        if self.inference.loading:
            lines.append("loading a model...")
        return "\n".join(lines)

    def input_size_hint(self) -> str | None:
        """Called once a readout tick: once per model, where it has fallen behind the source
        for SLOW_TICKS ticks at more than the smallest input size, what would help."""
        capture, inferred = self.stats.fps("capture"), self.stats.fps("inferred")
        behind = capture >= 5 and inferred < KEEPS_UP * capture and not self.capture.paused
        smaller = [scale for scale in INPUT_SCALES if scale < self.input_scale]
        comparing = self.inference.partner is not None  # the pair is slower by design
        if self.inference.model is None or self.inference.loading or not smaller or self.hinted or comparing:
            return None
        self.slow_ticks = self.slow_ticks + 1 if behind else 0
        if self.slow_ticks < SLOW_TICKS:
            return None
        self.hinted = True
        return (
            f"{self.model_name} keeps up with {inferred:.0f} of the source's {capture:.0f} frames a "
            f"second here: Model > Input size > {smaller[0]:.0%} runs it faster on fewer pixels"
        )

    def model_text(self) -> str:
        """ "RTFormer-Slim | OpenVINO CPU INT8 ..." while a model runs (and "| 80% input" below
        the model's own size), else ""."""
        segmenter = self.inference.segmenter
        if segmenter is None:
            return ""
        scale = "" if segmenter.input_scale == 1.0 else f" | {segmenter.input_scale:.0%} input"
        return f"{self.model_name} | {segmenter.description}{scale}"

    # ------------------------------------------------------------ recordings and snapshots

    def output_folder(self) -> Path:
        """Where recordings and snapshots go (created on first use)."""
        folder = Path(read_setting(self.settings, "output_folder", str(recordings_dir())))
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def set_output_folder(self, folder: str) -> None:
        self.settings.setValue("output_folder", folder)
        self.view.show_status(f"recordings and snapshots go to {folder}")

    def toggle_recording(self) -> None:
        if self.recorder is None:
            self.start_recording()
        else:
            self.stop_recording()

    def start_recording(self) -> None:
        try:
            path = unused_path(self.output_folder(), "rtformer-%Y%m%d-%H%M%S", ".mp4")
            self.recorder = RecorderService(path, self.stats, self.mailbox.sender("error"))
        except (VideoError, OSError) as error:
            self.view.show_error(f"cannot record: {error}")
            return
        self.inference.recorder = self.recorder
        if self.recorder.codec not in ("libx264", "h264"):
            self.view.show_error(f"H.264 is not available here: recording with {self.recorder.codec} instead")
        self.view.recording_changed(True)

    def stop_recording(self) -> None:
        """Close the recording (if any) and say where it is, or that nothing was recorded."""
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return
        self.inference.recorder = None
        path = recorder.stop()
        self.last_recording = path
        self.view.recording_changed(False)
        if path is None:
            self.view.show_status("nothing was recorded: no frame arrived before the stop", 10000)
        else:
            self.view.show_status(f"recorded {recorder.frames} frames to {path}", 10000)

    def on_stalled(self, report: StallReport) -> None:
        """A frame (or a model load) past the stall limit: the recording is closed, so
        what it holds is safe whatever happens next, and the user is told where."""
        self.stop_recording()
        next_step = "Choose a model or backend to go on" if report.stage == "inference" else "Restart the app"
        self.view.show_error(
            f"stalled: {report.summary()}, so the picture froze. The recording, if any, is closed "
            f"and kept; the threads' stacks are in the log. {next_step}."
        )
        self.view.model_changed()

    def recording_seconds(self) -> float | None:
        """How long the open recording has run; None when nothing records."""
        return self.recorder.elapsed if self.recorder is not None else None

    def snapshot(self) -> Path | None:
        """The last result as a PNG at the source's resolution; None (and a message) if it fails."""
        if self.result is None:
            self.view.show_error("nothing to snapshot yet")
            return None
        try:
            path = unused_path(self.output_folder(), "rtformer-%Y%m%d-%H%M%S", ".png")
        except OSError as error:
            self.view.show_error(f"cannot save the snapshot: {error}")
            return None
        picture = draw(self.inference.view, self.result)  # at the source's resolution, as recorded
        if not cv2.imwrite(str(path), picture):
            self.view.show_error(f"cannot write the snapshot {path}")
            return None
        self.view.show_status(f"saved {path}")
        return path

    # ------------------------------------------------------------ start and shutdown

    def start(self, source: str | None = None, checkpoint: str | None = None) -> None:
        """Open the given (or last, or demo) source and load the given (or last, or Slim) model."""
        checkpoint_path = Path(
            checkpoint or read_setting(self.settings, "checkpoint", str(self.weights["slim"]))
        )
        if not checkpoint_path.is_file():
            checkpoint_path = self.weights["slim"]
        # A shipped file given by another path (`--checkpoint weights/...`) is that variant:
        # its name in the readouts, its tick in the Model menu.
        variant = next(
            (v for v, p in self.weights.items() if p.is_file() and p.samefile(checkpoint_path)), None
        )
        if variant is not None:
            self.load_model(self.weights[variant], variant_name(variant))
        else:
            self.load_model(checkpoint_path, checkpoint_path.name)
        location = source or read_setting(self.settings, "source", "") or str(demo_video())
        if not source and not Path(location).exists() and "://" not in location:
            location = str(demo_video())
        self.open_location(location)

    def shutdown(self) -> None:
        """Close the recording cleanly (nothing recorded is lost), then stop the services."""
        self.stop_recording()
        self.cancel_export(timeout=5)  # its hidden file goes with it
        # Bounded waits: every service thread ends before the interpreter finalizes, or
        # the window still closes (a stalled stream is left to its own read timeout).
        self.capture.shutdown(timeout=5)
        self.inference.stop(timeout=10)
        self.mailbox.drain()
