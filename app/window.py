"""The main window: it only wires signals and paints; the services do the work."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QColor, QIcon, QImage, QKeySequence, QPainter, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPushButton,
    QSlider,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.services import (
    STAGES,
    CaptureService,
    InferenceService,
    LatestSlot,
    LoadedModel,
    Mailbox,
    ModelRequest,
    RecorderService,
    Result,
    RollingStats,
    compose,
)
from app.sources import CameraSource, FakeCamera, FrameSource, source_for
from engine.cameras import list_cameras
from engine.media import VideoError
from engine.resources import camvid_demo_video, demo_video, recordings_dir, shipped_weights
from engine.runtime import BACKEND_CHOICES, VIEWS, BackendChoice, Segmenter, default_backend, why_unavailable

log = logging.getLogger("rtformer.app")
MAX_RECENT = 8


SHORTCUTS = (
    ("Space", "play / pause"),
    ("Right", "step one frame (while paused)"),
    ("R", "start / stop recording"),
    ("S", "snapshot (PNG)"),
    ("V", "next view: overlay, mask, side by side"),
    ("+ / -", "mask opacity up / down"),
    ("F", "full screen"),
    ("Ctrl+O", "open a file"),
    ("F1", "this help"),
)


def read_setting(settings: QSettings, key: str, default, convert=None):
    """A stored setting converted with `convert` (default: the default's type); the default
    when it is missing or damaged (a hand-edited or corrupt settings file must not stop the app)."""
    value = settings.value(key, default)
    try:
        return (convert or type(default))(value)
    except (TypeError, ValueError):
        log.warning("ignoring the damaged setting %s=%r", key, value)
        return default


def variant_name(variant: str) -> str:
    """What the menus and readouts call a shipped variant: "slim" -> "RTFormer-Slim"."""
    return f"RTFormer-{variant.capitalize()}"


class VideoView(QWidget):
    """Paints the latest picture, scaled to fit; accepts dropped files (`on_dropped`)."""

    def __init__(self, stats: RollingStats) -> None:
        super().__init__()
        self.stats = stats
        self.on_dropped: Callable[[str], None] = lambda location: None
        self.on_resized: Callable[[tuple[int, int]], None] = lambda size: None
        self.image: QImage | None = None
        self.setAcceptDrops(True)
        self.setMinimumSize(480, 270)

    def show_picture(self, picture: np.ndarray) -> None:
        height, width = picture.shape[:2]
        self.image = QImage(
            picture.data, width, height, picture.strides[0], QImage.Format.Format_BGR888
        ).copy()
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(20, 20, 20))
        if self.image is not None:
            scaled = self.image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
            x, y = (self.width() - scaled.width()) // 2, (self.height() - scaled.height()) // 2
            painter.drawImage(self.rect().adjusted(x, y, -x, -y), self.image)
            self.stats.add("display")
        painter.end()

    def resizeEvent(self, event) -> None:
        ratio = self.devicePixelRatioF()  # pictures are drawn in device pixels
        self.on_resized((round(self.height() * ratio), round(self.width() * ratio)))
        super().resizeEvent(event)

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = event.mimeData().urls()
        if urls:
            self.on_dropped(urls[0].toLocalFile() or urls[0].toString())


class MainWindow(QMainWindow):
    """The services report into `mailbox` from their threads; `drain_mailbox`, on a QTimer
    on the GUI thread, hands each item to its handler (see app/services.py's thread rule)."""

    MAILBOX_INTERVAL_MS = 5  # at most 5 ms added to a frame's latency; the GUI thread wakes 200/s

    def __init__(self, settings: QSettings | None = None, weights: dict[str, Path] | None = None) -> None:
        super().__init__()
        self.setWindowTitle("RTFormer Studio")
        self.settings = settings or QSettings("RTFormer Studio", "RTFormer Studio")
        self.weights = dict(weights or shipped_weights())
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
        )
        self.handlers = {
            "error": self.show_error,
            "status": lambda message: self.statusBar().showMessage(message, 5000),
            "source_lost": self.on_source_lost,
            "model": self.on_model,
            "load_failed": self.on_load_failed,
            "position": self.on_position,
            "result": self.on_result,
        }
        self.recorder: RecorderService | None = None
        self.last_recording: Path | None = None
        self.source: FrameSource | None = None
        self.result: Result | None = None
        self.model_name = ""
        self.checkpoint: Path | None = None
        self.requested: ModelRequest | None = None  # the model last asked for
        self.backend_choice = default_backend()  # the active model's backend, once one runs
        self.results_seen = 0
        # Called with each Result once painted. Plain callables, not a Signal: in PySide6 6.12.0
        # every Python-side emit() takes a reference to True it never gave (see app/services.py).
        self.frame_listeners: list[Callable[[Result], None]] = []

        self._build_widgets()
        self._build_menus()
        self._wire()
        self._restore_settings()
        self.inference.start()
        self.mailbox_timer = QTimer(self, interval=self.MAILBOX_INTERVAL_MS, timeout=self.drain_mailbox)
        self.mailbox_timer.start()
        self.readout_timer = QTimer(self, interval=500, timeout=self.update_readouts)
        self.readout_timer.start()

    def drain_mailbox(self) -> None:
        """Deliver what the services posted, on the GUI thread."""
        for kind, value in self.mailbox.drain():
            self.handlers[kind](value)
        if self.recorder is not None and self.recorder.failed:
            self.stop_recording()  # the recorder said why; close the file and show it

    # ------------------------------------------------------------ layout

    def _build_widgets(self) -> None:
        self.view = VideoView(self.stats)
        self.banner = QLabel(wordWrap=True)
        self.banner.setStyleSheet("background:#7a1f1f;color:white;padding:6px;")
        self.banner.hide()
        self.banner.mousePressEvent = lambda event: self.banner.hide()

        self.play_button = QPushButton("Pause")
        self.step_button = QPushButton("Step")
        self.seek_slider = QSlider(Qt.Orientation.Horizontal)
        self.seek_slider.setRange(0, 1000)
        self.loop_box = QCheckBox("Loop", checked=True)
        self.time_label = QLabel("0:00")
        self.record_button = QPushButton("● Record")
        self.snapshot_button = QPushButton("Snapshot")
        transport = QHBoxLayout()
        for widget in (
            self.play_button,
            self.step_button,
            self.seek_slider,
            self.time_label,
            self.loop_box,
            self.record_button,
            self.snapshot_button,
        ):
            transport.addWidget(widget, 1 if widget is self.seek_slider else 0)

        self.view_box = QComboBox()
        self.view_box.addItems(VIEWS)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.legend = QListWidget()
        self.readouts = QLabel()
        self.readouts.setStyleSheet("font-family: monospace;")
        self.readouts.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        side = QVBoxLayout()
        side.addWidget(QLabel("View"))
        side.addWidget(self.view_box)
        side.addWidget(QLabel("Mask opacity"))
        side.addWidget(self.opacity_slider)
        side.addWidget(QLabel("Classes (tick to show; live area share)"))
        side.addWidget(self.legend, 1)
        side.addWidget(self.readouts)
        side_panel = QWidget()
        side_panel.setLayout(side)
        side_panel.setFixedWidth(300)

        main = QVBoxLayout()
        main.addWidget(self.banner)
        main.addWidget(self.view, 1)
        main.addLayout(transport)
        body = QHBoxLayout()
        left = QWidget()
        left.setLayout(main)
        body.addWidget(left, 1)
        body.addWidget(side_panel)
        central = QWidget()
        central.setLayout(body)
        self.setCentralWidget(central)
        self.recording_label = QLabel()
        self.recording_label.setStyleSheet("color:#d00;font-weight:bold;")
        self.model_label = QLabel()
        self.statusBar().addPermanentWidget(self.recording_label)
        self.statusBar().addPermanentWidget(self.model_label)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "&Open file...", self.open_file_dialog, QKeySequence.StandardKey.Open)
        self._action(file_menu, "Open &folder of images...", self.open_folder_dialog)
        self._action(file_menu, "Open stream &URL...", self.open_url_dialog)
        self._action(
            file_menu, "Open the &demo video (a sunny drive)", lambda: self.open_location(str(demo_video()))
        )
        self._action(
            file_menu,
            "Open the &CamVid demo (Cambridge)",
            lambda: self.open_location(str(camvid_demo_video())),
        )
        self.recent_menu = file_menu.addMenu("&Recent")
        self._action(file_menu, "Recordings &folder...", self.choose_output_folder)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        self.camera_menu = bar.addMenu("&Camera")
        self.camera_menu.aboutToShow.connect(self.fill_camera_menu)
        self.fill_camera_menu()

        model_menu = bar.addMenu("&Model")
        model_menu.setToolTipsVisible(True)
        self.model_actions: dict[str, QAction] = {}
        for variant in ("slim", "base"):
            action = self._action(model_menu, variant_name(variant), lambda v=variant: self.choose_model(v))
            action.setCheckable(True)
            if not self.weights[variant].is_file():
                action.setEnabled(False)
                action.setToolTip(f"not shipped yet: {self.weights[variant].name} is missing")
            self.model_actions[variant] = action
        model_menu.addSeparator()
        self._action(model_menu, "Load &checkpoint...", self.load_checkpoint_dialog)

        backend_menu = bar.addMenu("&Backend")
        backend_menu.setToolTipsVisible(True)
        group = QActionGroup(self)
        self.backend_actions: dict[str, QAction] = {}
        for choice in BACKEND_CHOICES:
            reason = why_unavailable(choice)
            action = self._action(backend_menu, choice.label, lambda c=choice: self.choose_backend(c))
            action.setCheckable(True)
            group.addAction(action)
            if reason:
                action.setEnabled(False)
                action.setText(f"{choice.label} (unavailable)")
                action.setToolTip(reason)
            self.backend_actions[choice.label] = action

        view_menu = bar.addMenu("&View")
        self._action(view_menu, "Next view", self.next_view, "V")
        self._action(
            view_menu,
            "Opacity up",
            lambda: self.opacity_slider.setValue(self.opacity_slider.value() + 10),
            "+",
        )
        self._action(
            view_menu,
            "Opacity down",
            lambda: self.opacity_slider.setValue(self.opacity_slider.value() - 10),
            "-",
        )
        self._action(view_menu, "Full screen", self.toggle_full_screen, "F")

        playback = bar.addMenu("&Playback")
        self._action(playback, "Play / pause", self.toggle_pause, "Space")
        self._action(playback, "Step", self.step, "Right")
        self.record_action = self._action(playback, "Record", self.toggle_recording, "R")
        self._action(playback, "Snapshot", self.snapshot, "S")

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "Keyboard shortcuts", self.show_help, "F1")
        self._action(help_menu, "System report (rtformer doctor)...", self.show_system_report)

    def _action(self, menu, text: str, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda checked=False: slot())
        menu.addAction(action)
        return action

    def _wire(self) -> None:
        self.view.on_dropped = self.open_location
        self.view.on_resized = lambda size: setattr(self.inference, "display_size", size)
        self.play_button.clicked.connect(self.toggle_pause)
        self.step_button.clicked.connect(self.step)
        self.seek_slider.sliderReleased.connect(self.seek_to_slider)
        self.loop_box.toggled.connect(lambda on: setattr(self.capture, "loop", on))
        self.record_button.clicked.connect(self.toggle_recording)
        self.snapshot_button.clicked.connect(self.snapshot)
        self.view_box.currentTextChanged.connect(self.set_view)
        self.opacity_slider.valueChanged.connect(lambda value: self.change_view(alpha=value / 100))
        self.legend.itemChanged.connect(self.on_legend_toggled)

    # ------------------------------------------------------------ sources

    def open_location(self, location: str) -> None:
        self.start_source(source_for(location))
        self.remember_recent(location)

    def start_source(self, source: FrameSource) -> None:
        """Switch sources: the recording (if any) is closed first, the old source released."""
        self.stop_recording()
        self.source = source
        self.capture.loop = self.loop_box.isChecked()
        self.capture.set_paused(False)
        self.play_button.setText("Pause")
        self.capture.start(source)
        seekable = source.seekable
        for widget in (self.seek_slider, self.step_button, self.loop_box):
            widget.setEnabled(seekable)
        self.statusBar().showMessage(f"source: {source.name}", 5000)
        if not isinstance(source, (CameraSource, FakeCamera)):
            location = str(getattr(source, "path", ""))
            self.settings.setValue("source", location)

    def open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a video or an image")
        if path:
            self.open_location(path)

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a folder of images")
        if path:
            self.open_location(path)

    def open_url_dialog(self) -> None:
        url, ok = QInputDialog.getText(self, "Open a stream", "URL (rtsp://, http://, ...):")
        if ok and url.strip():
            self.open_location(url.strip())

    def remember_recent(self, location: str) -> None:
        recent = [location] + [r for r in self.recent_files() if r != location]
        self.settings.setValue("recent", recent[:MAX_RECENT])
        self.fill_recent_menu()

    def recent_files(self) -> list[str]:
        value = self.settings.value("recent", [])
        return [value] if isinstance(value, str) else list(value or [])

    def fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for location in self.recent_files():
            self._action(self.recent_menu, location, lambda loc=location: self.open_location(loc))

    def fill_camera_menu(self) -> None:
        self.camera_menu.clear()
        self.camera_menu.setToolTipsVisible(True)
        for device_id, name, resolutions in list_cameras():
            submenu = self.camera_menu.addMenu(name)
            for width, height in resolutions:
                self._action(
                    submenu,
                    f"{width}x{height}",
                    lambda d=device_id, n=name, r=(width, height): self.start_source(CameraSource(d, n, r)),
                )
        if not self.camera_menu.actions():
            none = self._action(self.camera_menu, "No camera found", lambda: None)
            none.setEnabled(False)
        self.camera_menu.addSeparator()
        self._action(self.camera_menu, "Test pattern (fake camera)", lambda: self.start_source(FakeCamera()))

    # ------------------------------------------------------------ models and backends

    def choose_model(self, variant: str) -> None:
        self.load_model(self.weights[variant], variant_name(variant))

    def load_checkpoint_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a checkpoint", "", "Checkpoints (*.safetensors)")
        if path:
            self.load_model(Path(path), Path(path).name)

    def choose_backend(self, choice: BackendChoice) -> None:
        """Reload the current model on `choice`; the menus follow once it runs (or roll back)."""
        model = self.inference.model
        request = model.request if model is not None else self.requested
        if request is not None:
            self.load_model(request.checkpoint, request.name, choice)

    def load_model(self, checkpoint: Path, name: str, choice: BackendChoice | None = None) -> None:
        """Load in the background; the stream keeps running on the current model. Nothing
        (menus, settings) records the new choice until the new model has run."""
        choice = choice or self.backend_choice
        self.requested = request = ModelRequest(name, Path(checkpoint), choice.label)
        # INT8 is calibrated on the bundled frames (engine.runtime.artifacts.default_calibration):
        # the model card measures that model, and it is built once and cached.
        # The first time on a machine, auto builds INT8 models and times the candidates:
        # 15 s for Slim, 24 s for Base on this project's 2-core machine; then it is remembered.
        first_time = (
            " (timing the backends if this is the first time here)" if choice.backend == "auto" else ""
        )
        self.statusBar().showMessage(f"loading {request.description}{first_time}...")

        def factory() -> Segmenter:
            return Segmenter(checkpoint, choice.backend, choice.device, choice.precision)

        self.inference.load_model(factory, request)

    def on_model(self, model: LoadedModel) -> None:
        """A model runs now (a new one, or the previous one back after a failed switch)."""
        request, segmenter = model.request, model.segmenter
        self.model_name, self.checkpoint = request.name, request.checkpoint
        self.backend_choice = next(c for c in BACKEND_CHOICES if c.label == request.backend)
        self.sync_model_menus()
        self.fill_legend(segmenter)
        self.settings.setValue("checkpoint", str(self.checkpoint))
        self.settings.setValue("backend", self.backend_choice.label)
        self.statusBar().showMessage(f"{self.model_name} ready on {segmenter.description}", 5000)
        self.update_readouts()

    def on_load_failed(self, request: ModelRequest) -> None:
        self.sync_model_menus()  # the menus go back to what still runs

    def sync_model_menus(self) -> None:
        """Tick the model and backend that run now (none while nothing runs)."""
        running = self.inference.model is not None
        for variant, action in self.model_actions.items():
            action.setChecked(running and self.checkpoint == self.weights[variant])
        for label, action in self.backend_actions.items():
            action.setChecked(running and label == self.backend_choice.label)

    def fill_legend(self, segmenter: Segmenter) -> None:
        hidden = self.inference.view.hidden
        self.legend.blockSignals(True)
        self.legend.clear()
        for index, (name, colour) in enumerate(
            zip(segmenter.class_names, segmenter.info.palette, strict=True)
        ):
            swatch = QPixmap(14, 14)
            swatch.fill(QColor(*colour))
            item = QListWidgetItem(QIcon(swatch), name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked if index in hidden else Qt.CheckState.Checked)
            item.setData(Qt.ItemDataRole.UserRole, index)
            self.legend.addItem(item)
        self.legend.blockSignals(False)

    def on_legend_toggled(self, item: QListWidgetItem) -> None:
        index = item.data(Qt.ItemDataRole.UserRole)
        hidden = set(self.inference.view.hidden)
        (hidden.discard if item.checkState() == Qt.CheckState.Checked else hidden.add)(index)
        self.change_view(hidden=frozenset(hidden))

    def change_view(self, **changes) -> None:
        """Replace the view settings as a whole (the inference thread reads them once a frame)."""
        self.inference.view = replace(self.inference.view, **changes)

    # ------------------------------------------------------------ results and readouts

    def on_result(self, result: Result) -> None:
        self.result = result
        self.results_seen += 1
        self.view.show_picture(result.picture)
        for listener in self.frame_listeners:
            listener(result)
        if self.results_seen % 5 == 0:
            self.update_legend_shares(result.class_share)

    def update_legend_shares(self, share: np.ndarray) -> None:
        segmenter = self.inference.segmenter
        if segmenter is None or self.legend.count() != len(share):
            return
        self.legend.blockSignals(True)
        for index in range(self.legend.count()):
            self.legend.item(index).setText(f"{segmenter.class_names[index]}  {share[index] * 100:5.1f}%")
        self.legend.blockSignals(False)

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
        if self.inference.loading:
            lines.append("loading a model...")
        return "\n".join(lines)

    def update_readouts(self) -> None:
        self.readouts.setText(self.readout_text())
        segmenter = self.inference.segmenter
        if segmenter is not None:
            self.model_label.setText(f"{self.model_name} | {segmenter.description}")
        if self.recorder is not None:
            elapsed = int(self.recorder.elapsed)
            self.recording_label.setText(f"● REC {elapsed // 60:02d}:{elapsed % 60:02d}")

    def on_position(self, seconds: float) -> None:
        duration = self.source.duration if self.source is not None else 0
        self.time_label.setText(f"{int(seconds) // 60}:{int(seconds) % 60:02d}")
        if duration and not self.seek_slider.isSliderDown():
            self.seek_slider.setValue(int(seconds / duration * 1000))

    def on_source_lost(self, message: str) -> None:
        """A live source went away mid-stream: close the recording cleanly, say so; the
        capture service is already trying to reconnect."""
        self.stop_recording()
        self.show_error(message)

    def show_error(self, message: str) -> None:
        log.warning("%s", message)
        self.banner.setText(f"⚠ {message}  (click to dismiss)")
        self.banner.show()
        self.statusBar().showMessage(message, 10000)

    # ------------------------------------------------------------ controls

    def toggle_pause(self) -> None:
        paused = not self.capture.paused
        self.capture.set_paused(paused)
        self.play_button.setText("Play" if paused else "Pause")

    def step(self) -> None:
        if not self.capture.paused:
            self.toggle_pause()
        self.capture.step()

    def seek_to_slider(self) -> None:
        if self.source is not None and self.source.duration:
            self.capture.seek(self.seek_slider.value() / 1000 * self.source.duration)

    def set_view(self, view: str) -> None:
        self.change_view(view=view)
        self.settings.setValue("view", view)

    def next_view(self) -> None:
        self.view_box.setCurrentIndex((self.view_box.currentIndex() + 1) % self.view_box.count())

    def toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    def output_folder(self) -> Path:
        """Where recordings and snapshots go (created on first use)."""
        default = recordings_dir()
        folder = Path(read_setting(self.settings, "output_folder", str(default)))
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def choose_output_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Recordings and snapshots go to", str(self.output_folder())
        )
        if folder:
            self.settings.setValue("output_folder", folder)
            self.statusBar().showMessage(f"recordings and snapshots go to {folder}", 5000)

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
            self.show_error(f"cannot record: {error}")
            return
        self.inference.recorder = self.recorder
        if self.recorder.codec not in ("libx264", "h264"):
            self.show_error(f"H.264 is not available here: recording with {self.recorder.codec} instead")
        self.record_button.setText("■ Stop")
        self.recording_label.setText("● REC 00:00")

    def stop_recording(self) -> None:
        """Close the recording (if any) and say where it is, or that nothing was recorded."""
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return
        self.inference.recorder = None
        path = recorder.stop()
        self.record_button.setText("● Record")
        self.recording_label.setText("")
        self.last_recording = path
        if path is None:
            self.statusBar().showMessage("nothing was recorded: no frame arrived before the stop", 10000)
        else:
            self.statusBar().showMessage(f"recorded {recorder.frames} frames to {path}", 10000)

    def snapshot(self) -> Path | None:
        if self.result is None:
            self.show_error("nothing to snapshot yet")
            return None
        try:
            path = unused_path(self.output_folder(), "rtformer-%Y%m%d-%H%M%S", ".png")
        except OSError as error:
            self.show_error(f"cannot save the snapshot: {error}")
            return None
        segmenter = self.inference.segmenter
        picture = self.result.picture
        if segmenter is not None:  # at the source's resolution: the view may show it smaller
            result = self.result
            picture = compose(self.inference.view, result.frame.image, result.labels, segmenter.lut)
        if not cv2.imwrite(str(path), picture):
            self.show_error(f"cannot write the snapshot {path}")
            return None
        self.statusBar().showMessage(f"saved {path}", 5000)
        return path

    def show_help(self) -> None:
        dialog = QDialog(self)
        dialog.setWindowTitle("Keyboard shortcuts")
        text = QTextBrowser()
        rows = "".join(f"<tr><td><b>{key}</b></td><td>{what}</td></tr>" for key, what in SHORTCUTS)
        text.setHtml(f"<table cellpadding=4>{rows}</table>")
        layout = QVBoxLayout(dialog)
        layout.addWidget(text)
        dialog.resize(420, 360)
        self.help_dialog = dialog
        dialog.show()

    def show_system_report(self) -> None:
        from app.report_dialog import SystemReportDialog

        self.setCursor(Qt.CursorShape.WaitCursor)  # a few seconds: it encodes a test clip
        try:
            self.report_dialog = SystemReportDialog(self)
        finally:
            self.unsetCursor()
        self.report_dialog.show()

    # ------------------------------------------------------------ settings and shutdown

    def _restore_settings(self) -> None:
        """Apply the stored settings; a damaged value is ignored (and logged), never fatal."""
        geometry = self.settings.value("geometry")
        if isinstance(geometry, QByteArray) and not self.restoreGeometry(geometry):
            log.warning("ignoring the damaged setting geometry")
        view = self.settings.value("view", "overlay")
        if view in VIEWS:
            self.view_box.setCurrentText(view)
        self.opacity_slider.setValue(min(100, max(0, read_setting(self.settings, "opacity", 50))))
        label = self.settings.value("backend", self.backend_choice.label)
        self.backend_choice = next(
            (c for c in BACKEND_CHOICES if c.label == label and not why_unavailable(c)), self.backend_choice
        )
        self.fill_recent_menu()

    def start(self, source: str | None = None, checkpoint: str | None = None) -> None:
        """Open the given (or last, or demo) source and load the given (or last, or Slim) model."""
        checkpoint_path = Path(
            checkpoint or read_setting(self.settings, "checkpoint", str(self.weights["slim"]))
        )
        if not checkpoint_path.is_file():
            checkpoint_path = self.weights["slim"]
        name = next(
            (variant_name(v) for v, p in self.weights.items() if p == checkpoint_path),
            checkpoint_path.name,
        )
        self.load_model(checkpoint_path, name)
        location = source or read_setting(self.settings, "source", "") or str(demo_video())
        if not source and not Path(location).exists() and "://" not in location:
            location = str(demo_video())
        self.open_location(location)

    def closeEvent(self, event) -> None:
        self.stop_recording()  # close the file cleanly: nothing recorded is lost
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("opacity", self.opacity_slider.value())
        self.settings.sync()
        self.readout_timer.stop()
        self.mailbox_timer.stop()
        # Bounded waits: every service thread ends before the interpreter finalizes, or
        # the window still closes (a stalled stream is left to its own read timeout).
        self.capture.shutdown(timeout=5)
        self.inference.stop(timeout=10)
        self.mailbox.drain()
        super().closeEvent(event)


def unused_path(folder: Path, pattern: str, suffix: str) -> Path:
    """folder/<time.strftime(pattern)><suffix>, with -2, -3, ... when that name is taken
    (two recordings or snapshots in the same second must not overwrite each other)."""
    stem = time.strftime(pattern)
    path, number = folder / f"{stem}{suffix}", 2
    while path.exists():
        path, number = folder / f"{stem}-{number}{suffix}", number + 1
    return path
