"""The main window: widgets, menus and painting, wired to the session (app/session.py),
which does the work. The window keeps no state of its own beyond its widgets."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QColor, QIcon, QImage, QKeySequence, QPainter, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QProgressDialog,
    QPushButton,
    QSlider,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.inspector import describe, model_pixel
from app.services import Result, RollingStats
from app.session import Session, read_flag, read_setting, variant_name
from app.sources import CameraSource, FakeCamera, FrameSource
from app.timeline import WINDOW_SECONDS, ClassTimeline
from engine.cameras import list_cameras
from engine.resources import camvid_demo_video, demo_video, shipped_weights
from engine.runtime import INPUT_SCALES, VIEWS, available, scaled_input_size

log = logging.getLogger("rtformer.app")


SHORTCUTS = (
    ("Space", "play / pause"),
    ("Right", "step one frame (while paused)"),
    ("R", "start / stop recording"),
    ("S", "snapshot (PNG)"),
    ("V", "next view: overlay, mask, side by side"),
    ("+ / -", "mask opacity up / down"),
    ("M", "steady masks on / off (labels carried from frame to frame)"),
    ("I", "pixel inspector: the best three classes under the pointer"),
    ("C", "compare RTFormer-Slim and RTFormer-Base on the same frames"),
    ("D", "mark where the two compared models disagree"),
    ("T", "class timeline: each class's share over the last minute"),
    ("F", "full screen"),
    ("Ctrl+O", "open a file"),
    ("F1", "this help"),
)


class VideoView(QWidget):
    """Paints the latest picture, scaled to fit; accepts dropped files (`on_dropped`)."""

    def __init__(self, stats: RollingStats) -> None:
        super().__init__()
        self.stats = stats
        self.on_dropped: Callable[[str], None] = lambda location: None
        self.on_resized: Callable[[tuple[int, int]], None] = lambda size: None
        # (x, y) in picture pixels under the pointer, and the picture's (H, W).
        self.on_hover: Callable[[float, float, tuple[int, int]], None] = lambda x, y, size: None
        self.image: QImage | None = None
        self.marking = False  # the pixel inspector is on: ring the point it reads
        self.pointer = None  # the last pointer position over the view
        self.setAcceptDrops(True)
        self.setMouseTracking(True)
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
        if self.marking and self.pointer is not None:
            painter.setPen(QColor(255, 255, 255))
            painter.drawEllipse(self.pointer, 6, 6)
            painter.setPen(QColor(0, 0, 0))
            painter.drawEllipse(self.pointer, 7, 7)
        painter.end()

    def mouseMoveEvent(self, event) -> None:
        if self.image is None:
            return
        scaled = self.image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        x0, y0 = (self.width() - scaled.width()) / 2, (self.height() - scaled.height()) / 2
        factor = self.image.width() / max(1, scaled.width())
        position = self.pointer = event.position()
        x, y = (position.x() - x0) * factor, (position.y() - y0) * factor
        if self.marking:
            self.update()
        self.on_hover(x, y, (self.image.height(), self.image.width()))

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


def input_size_text(scale: float, own_size: tuple[int, int] | None = None) -> str:
    """An Input size menu entry: "80%: at most 288x384" once the model's own size is known."""
    name = "&Full" if scale == 1.0 else f"{scale:.0%}"
    if own_size is None:
        return f"{name} (the model's own size)" if scale == 1.0 else f"{name} of each side"
    height, width = scaled_input_size(own_size, scale) if scale != 1.0 else own_size
    return f"{name}: at most {height}x{width}"


class MainWindow(QMainWindow):
    """Widgets and menus over a `Session`; implements `app.session.SessionView`. The
    services report into the session's mailbox from their threads; a QTimer on the GUI
    thread drains it (see app/services.py's thread rule)."""

    MAILBOX_INTERVAL_MS = 5  # at most 5 ms added to a frame's latency; the GUI thread wakes 200/s

    def __init__(self, settings: QSettings | None = None, weights: dict[str, Path] | None = None) -> None:
        super().__init__()
        self.setWindowTitle("RTFormer Studio")
        self.settings = settings or QSettings("RTFormer Studio", "RTFormer Studio")
        self.export_progress: QProgressDialog | None = None  # File > Export areas over a whole file
        self.session = Session(self, self.settings, dict(weights or shipped_weights()))
        self._build_widgets()
        self._build_menus()
        self._wire()
        self._restore_settings()
        self.mailbox_timer = QTimer(self, interval=self.MAILBOX_INTERVAL_MS, timeout=self.session.drain)
        self.mailbox_timer.start()
        self.readout_timer = QTimer(self, interval=500, timeout=self.update_readouts)
        self.readout_timer.start()

    def start(self, source: str | None = None, checkpoint: str | None = None) -> None:
        """Open the given (or last, or demo) source and load the given (or last, or Slim) model."""
        self.session.start(source, checkpoint)

    # ------------------------------------------------------------ layout

    def _build_widgets(self) -> None:
        self.view = VideoView(self.session.stats)
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
        self.inspector_label = QLabel(wordWrap=True)
        self.inspector_label.setToolTip("View > Pixel inspector: the best three classes under the pointer")
        self.inspector_label.hide()
        side = QVBoxLayout()
        side.addWidget(QLabel("View"))
        side.addWidget(self.view_box)
        side.addWidget(QLabel("Mask opacity"))
        side.addWidget(self.opacity_slider)
        side.addWidget(QLabel("Classes (tick to show; live area share)"))
        side.addWidget(self.legend, 1)
        side.addWidget(self.inspector_label)
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
        self.timeline = ClassTimeline()
        self.timeline_dock = QDockWidget("Class timeline: share of the frame, last minute", self)
        self.timeline_dock.setObjectName("class-timeline")
        self.timeline_dock.setWidget(self.timeline)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.timeline_dock)
        self.timeline_dock.hide()
        self.hover: tuple[float, float, tuple[int, int]] | None = None

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "&Open file...", self.open_file_dialog, QKeySequence.StandardKey.Open)
        self._action(file_menu, "Open &folder of images...", self.open_folder_dialog)
        self._action(file_menu, "Open stream &URL...", self.open_url_dialog)
        self._action(
            file_menu,
            "Open the &demo video (a sunny drive)",
            lambda: self.session.open_location(str(demo_video())),
        )
        self._action(
            file_menu,
            "Open the &CamVid demo (Cambridge)",
            lambda: self.session.open_location(str(camvid_demo_video())),
        )
        self.recent_menu = file_menu.addMenu("&Recent")
        self._action(file_menu, "Recordings &folder...", self.choose_output_folder)
        self._action(file_menu, "&Export areas...", self.export_areas_dialog)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        self.camera_menu = bar.addMenu("&Camera")
        self.camera_menu.aboutToShow.connect(self.fill_camera_menu)
        self.fill_camera_menu()

        model_menu = bar.addMenu("&Model")
        model_menu.setToolTipsVisible(True)
        self.model_actions: dict[str, QAction] = {}
        for variant in ("slim", "base"):
            action = self._action(
                model_menu, variant_name(variant), lambda v=variant: self.session.choose_model(v)
            )
            action.setCheckable(True)
            if not self.session.weights[variant].is_file():
                action.setEnabled(False)
                action.setToolTip(f"not shipped yet: {self.session.weights[variant].name} is missing")
            self.model_actions[variant] = action
        model_menu.addSeparator()
        self._action(model_menu, "Load &checkpoint...", self.load_checkpoint_dialog)
        self._build_input_size_menu(model_menu.addMenu("&Input size"))

        backend_menu = bar.addMenu("&Backend")
        backend_menu.setToolTipsVisible(True)
        group = QActionGroup(self)
        self.backend_actions: dict[str, QAction] = {}
        for choice, reason in available():
            action = self._action(backend_menu, choice.label, lambda c=choice: self.session.choose_backend(c))
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
        self.steady_action = self._action(view_menu, "Steady masks", self.toggle_steady, "M")
        self.steady_action.setCheckable(True)
        self.steady_action.setToolTip(
            "carry labels from frame to frame: a pixel changes class only on clear evidence "
            "(less flicker on video)"
        )
        self.inspector_action = self._action(view_menu, "Pixel &inspector", self.toggle_inspector, "I")
        self.inspector_action.setCheckable(True)
        self.compare_action = self._action(view_menu, "&Compare Slim | Base", self.toggle_compare, "C")
        self.compare_action.setCheckable(True)
        self.compare_action.setToolTip("both models on the very same frames, each with its own speed")
        self.marks_action = self._action(view_menu, "Mark &disagreements", self.toggle_marks, "D")
        self.marks_action.setCheckable(True)
        self.marks_action.setEnabled(False)
        timeline = self.timeline_dock.toggleViewAction()
        timeline.setText("Class &timeline")
        timeline.setShortcut(QKeySequence("T"))
        view_menu.addAction(timeline)
        self._action(view_menu, "Full screen", self.toggle_full_screen, "F")

        playback = bar.addMenu("&Playback")
        self._action(playback, "Play / pause", self.toggle_pause, "Space")
        self._action(playback, "Step", self.step, "Right")
        self.record_action = self._action(playback, "Record", self.session.toggle_recording, "R")
        self._action(playback, "Snapshot", self.session.snapshot, "S")

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "Keyboard shortcuts", self.show_help, "F1")
        self._action(help_menu, "System report (rtformer doctor)...", self.show_system_report)

    def _build_input_size_menu(self, menu) -> None:
        """The model's own input size, or fewer pixels for CPUs too slow for it."""
        menu.setToolTipsVisible(True)
        group = QActionGroup(self)
        self.input_scale_actions: dict[float, QAction] = {}
        for scale in INPUT_SCALES:
            action = self._action(
                menu, input_size_text(scale), lambda s=scale: self.session.choose_input_scale(s)
            )
            action.setCheckable(True)
            action.setToolTip(
                "frames are fitted into the model's input size times this: fewer pixels run "
                "faster on slow CPUs and miss more small things (BENCHMARKS.md, Smaller inputs)"
            )
            group.addAction(action)
            self.input_scale_actions[scale] = action

    def _action(self, menu, text: str, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda checked=False: slot())
        menu.addAction(action)
        return action

    def _wire(self) -> None:
        session = self.session
        self.view.on_dropped = session.open_location
        self.view.on_resized = session.set_display_size
        self.view.on_hover = self.inspect_at
        self.timeline_dock.visibilityChanged.connect(self.fill_timeline)
        self.play_button.clicked.connect(self.toggle_pause)
        self.step_button.clicked.connect(self.step)
        self.seek_slider.sliderReleased.connect(self.seek_to_slider)
        session.set_looping(self.loop_box.isChecked())
        self.loop_box.toggled.connect(session.set_looping)
        self.record_button.clicked.connect(session.toggle_recording)
        self.snapshot_button.clicked.connect(session.snapshot)
        self.view_box.currentTextChanged.connect(self.set_view)
        self.opacity_slider.valueChanged.connect(lambda value: session.change_view(alpha=value / 100))
        self.legend.itemChanged.connect(self.on_legend_toggled)

    def _restore_settings(self) -> None:
        """Apply the stored settings; a damaged value is ignored (and logged), never fatal."""
        geometry = self.settings.value("geometry")
        if isinstance(geometry, QByteArray) and not self.restoreGeometry(geometry):
            log.warning("ignoring the damaged setting geometry")
        view = self.settings.value("view", "overlay")
        if view in VIEWS:
            self.view_box.setCurrentText(view)
        self.opacity_slider.setValue(min(100, max(0, read_setting(self.settings, "opacity", 50))))
        self.set_steady(read_setting(self.settings, "steady", True, read_flag))
        self.fill_recent_menu()

    # ------------------------------------------------------------ dialogs and menus

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

    def open_location(self, location: str) -> None:
        self.session.open_location(location)
        self.fill_recent_menu()

    def fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for location in self.session.recent_files():
            self._action(self.recent_menu, location, lambda loc=location: self.open_location(loc))

    def fill_camera_menu(self) -> None:
        self.camera_menu.clear()
        self.camera_menu.setToolTipsVisible(True)
        start = self.session.start_source
        for device_id, name, resolutions in list_cameras():
            submenu = self.camera_menu.addMenu(name)
            for width, height in resolutions:
                self._action(
                    submenu,
                    f"{width}x{height}",
                    lambda d=device_id, n=name, r=(width, height): start(CameraSource(d, n, r)),
                )
        if not self.camera_menu.actions():
            none = self._action(self.camera_menu, "No camera found", lambda: None)
            none.setEnabled(False)
        self.camera_menu.addSeparator()
        self._action(self.camera_menu, "Test pattern (fake camera)", lambda: start(FakeCamera()))

    def load_checkpoint_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a checkpoint", "", "Checkpoints (*.safetensors)")
        if path:
            self.session.load_model(Path(path), Path(path).name)

    def choose_output_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Recordings and snapshots go to", str(self.session.output_folder())
        )
        if folder:
            self.session.set_output_folder(folder)

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

    # ------------------------------------------------------------ controls

    def toggle_pause(self) -> None:
        paused = self.session.toggle_pause()
        self.play_button.setText("Play" if paused else "Pause")

    def step(self) -> None:
        self.session.step()
        self.play_button.setText("Play")

    def seek_to_slider(self) -> None:
        self.session.seek_fraction(self.seek_slider.value() / 1000)

    def set_view(self, view: str) -> None:
        self.session.change_view(view=view)
        self.settings.setValue("view", view)

    def toggle_steady(self) -> None:
        self.set_steady(self.steady_action.isChecked())

    def set_steady(self, on: bool) -> None:
        """Steady masks on or off; remembered."""
        self.steady_action.setChecked(on)
        self.session.change_view(steady=on)
        self.settings.setValue("steady", on)

    def next_view(self) -> None:
        self.view_box.setCurrentIndex((self.view_box.currentIndex() + 1) % self.view_box.count())

    def toggle_full_screen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    def on_legend_toggled(self, item: QListWidgetItem) -> None:
        shown = item.checkState() == Qt.CheckState.Checked
        self.session.show_class(item.data(Qt.ItemDataRole.UserRole), shown)
        self.timeline.set_class_visible(item.data(Qt.ItemDataRole.UserRole), shown)

    def toggle_inspector(self) -> None:
        on = self.inspector_action.isChecked()
        self.session.change_view(inspect=on)
        self.inspector_label.setVisible(on)
        self.view.marking = on
        self.update_inspector()

    def toggle_compare(self) -> None:
        self.session.set_compare(self.compare_action.isChecked())

    def toggle_marks(self) -> None:
        self.session.change_view(marks=self.marks_action.isChecked())

    def inspect_at(self, x: float, y: float, size: tuple[int, int]) -> None:
        self.hover = (x, y, size)
        self.update_inspector()

    def update_inspector(self) -> None:
        """What the model thinks under the pointer, on the latest result (live or paused)."""
        result, segmenter = self.session.result, self.session.inference.segmenter
        if not self.inspector_action.isChecked() or self.hover is None or result is None or segmenter is None:
            return
        x, y, size = self.hover
        spot = model_pixel(result, x, y, size, self.session.inference.view.view)
        self.inspector_label.setText("" if spot is None else describe(result, spot, segmenter.class_names))

    def export_areas_dialog(self) -> None:
        """A video file: every frame's shares, by a pass of their own in the background with a
        progress dialog. A camera, a stream or images: the frames segmented so far."""
        path, _ = QFileDialog.getSaveFileName(self, "Export areas", "areas.csv", "CSV (*.csv)")
        if not path:
            return
        whole = self.session.file_to_export()
        try:
            if whole is not None:
                self.session.export_file_areas(path)
            else:
                rows = self.session.export_areas(path)
        except (OSError, ValueError) as error:
            self.show_error(f"cannot export the areas: {error}")
            return
        if whole is None:
            self.show_status(f"wrote the class shares of the {rows} frames segmented so far to {path}")
            return
        self.export_ended()  # a second export replaces the first, and its dialog
        self.export_progress = QProgressDialog(
            f"Segmenting every frame of {whole.name} for its class shares...", "Cancel", 0, 0, self
        )
        self.export_progress.setWindowTitle("Export areas")
        self.export_progress.setAutoReset(False)  # the container's frame count can be short
        self.export_progress.setAutoClose(False)
        self.export_progress.setMinimumDuration(0)
        self.export_progress.canceled.connect(self.cancel_export)
        self.export_progress.show()

    def cancel_export(self) -> None:
        if self.session.areas_export is not None:
            self.session.cancel_export()
            self.show_status("the areas export was cancelled; no file was written")
        self.export_ended()

    # ------------------------------------------------------------ SessionView: what the session says

    def show_error(self, message: str) -> None:
        log.warning("%s", message)
        self.banner.setText(f"⚠ {message}  (click to dismiss)")
        self.banner.show()
        self.statusBar().showMessage(message, 10000)

    def show_status(self, message: str, milliseconds: int = 5000) -> None:
        self.statusBar().showMessage(message, milliseconds)

    def show_result(self, result: Result) -> None:
        self.view.show_picture(result.picture)
        if self.session.results_seen % 5 == 0:
            self.update_legend_shares(result.class_share)
        if self.timeline_dock.isVisible():
            self.timeline.add(result.frame.timestamp, result.class_share)
        self.update_inspector()

    def fill_timeline(self, visible: bool) -> None:
        """Opened, the timeline starts with the last minute the session kept, not empty."""
        if not visible:
            return
        self.timeline.clear()
        for seconds, shares in self.session.recent_areas(WINDOW_SECONDS):
            self.timeline.add(seconds, shares)
        self.timeline.redraw()

    def show_position(self, seconds: float, duration: float) -> None:
        self.time_label.setText(f"{int(seconds) // 60}:{int(seconds) % 60:02d}")
        if duration and not self.seek_slider.isSliderDown():
            self.seek_slider.setValue(int(seconds / duration * 1000))

    def source_started(self, source: FrameSource) -> None:
        self.play_button.setText("Pause")
        for widget in (self.seek_slider, self.step_button, self.loop_box):
            widget.setEnabled(source.seekable)
        self.statusBar().showMessage(f"source: {source.name}", 5000)
        self.timeline.clear()

    def model_changed(self) -> None:
        """Tick the model and backend that run now (none while nothing runs); its legend."""
        variant, backend = self.session.running_variant(), self.session.running_backend()
        for name, action in self.model_actions.items():
            action.setChecked(name == variant)
        for label, action in self.backend_actions.items():
            action.setChecked(label == backend)
        scale = self.session.running_input_scale()
        segmenter = self.session.inference.segmenter
        own_size = segmenter.info.input_size if segmenter is not None else None
        for value, action in self.input_scale_actions.items():
            action.setChecked(value == scale)
            action.setText(input_size_text(value, own_size))
        if segmenter is not None:
            self.fill_legend(segmenter.class_names, segmenter.info.palette)
        self.update_readouts()

    def compare_changed(self, on: bool) -> None:
        self.compare_action.setChecked(on)
        self.marks_action.setEnabled(on)

    def areas_progress(self, frames: int, total: int) -> None:
        if self.export_progress is not None:
            self.export_progress.setMaximum(max(total, frames) if total else 0)
            self.export_progress.setValue(frames)

    def export_ended(self) -> None:
        dialog, self.export_progress = self.export_progress, None
        if dialog is not None:
            dialog.canceled.disconnect(self.cancel_export)  # closing it says "canceled" too
            dialog.close()
            dialog.deleteLater()

    def recording_changed(self, recording: bool) -> None:
        self.record_button.setText("■ Stop" if recording else "● Record")
        self.recording_label.setText("● REC 00:00" if recording else "")

    # ------------------------------------------------------------ painting

    def fill_legend(self, names: list[str], palette) -> None:
        hidden = self.session.inference.view.hidden
        self.legend.blockSignals(True)
        self.legend.clear()
        for index, (name, colour) in enumerate(zip(names, palette, strict=True)):
            swatch = QPixmap(14, 14)
            swatch.fill(QColor(*colour))
            item = QListWidgetItem(QIcon(swatch), name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked if index in hidden else Qt.CheckState.Checked)
            item.setData(Qt.ItemDataRole.UserRole, index)
            self.legend.addItem(item)
        self.legend.blockSignals(False)
        self.timeline.set_classes(names, palette, hidden)

    def update_legend_shares(self, share: np.ndarray) -> None:
        segmenter = self.session.inference.segmenter
        if segmenter is None or self.legend.count() != len(share):
            return
        self.legend.blockSignals(True)
        for index in range(self.legend.count()):
            self.legend.item(index).setText(f"{segmenter.class_names[index]}  {share[index] * 100:5.1f}%")
        self.legend.blockSignals(False)

    def update_readouts(self) -> None:
        self.readouts.setText(self.session.readout_text())
        hint = self.session.input_size_hint()
        if hint:
            self.show_status(hint, 15000)
        model_text = self.session.model_text()
        if model_text:
            self.model_label.setText(model_text)
        seconds = self.session.recording_seconds()
        if seconds is not None:
            self.recording_label.setText(f"● REC {int(seconds) // 60:02d}:{int(seconds) % 60:02d}")

    # ------------------------------------------------------------ shutdown

    def closeEvent(self, event) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("opacity", self.opacity_slider.value())
        self.readout_timer.stop()
        self.mailbox_timer.stop()
        self.session.shutdown()
        self.settings.sync()
        super().closeEvent(event)
