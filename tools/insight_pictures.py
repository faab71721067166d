"""The README's pictures of what the model sees, from the app's real window on the demo
drive with the shipped weights (under Xvfb it is the window a user sees):

- docs/confidence.png: View > confidence, the heat map with its scale;
- docs/inspector.png: the pixel inspector on a paused frame, with the class timeline;
- docs/compare.png: Compare Slim | Base with the disagreements marked;
- docs/confidence.gif, docs/compare.gif: three seconds of each view, the video part of
  the window (what a recording holds);
- docs/inspector.gif: the whole window for four seconds of play, the inspector's ring
  swept from the road up into the trees, its readout below the legend, and the class
  timeline growing.

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python tools/insight_pictures.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets/demo-udacity-hmb-20fps.mp4"
SLIM = ROOT / "weights/rtformer-slim-camvid.safetensors"
GIF_SECONDS, GIF_FPS = 3.0, 8
PICTURES = (
    "confidence.png",
    "confidence.gif",
    "inspector.png",
    "inspector.gif",
    "compare.png",
    "compare.gif",
)
# Where the inspector's pointer goes in inspector.gif, as fractions of the view: from the
# road near the car, up the road ahead, into the trees.
SWEEP = ((0.45, 0.85), (0.5, 0.55), (0.58, 0.45), (0.75, 0.3))


def wait(application, seconds: float) -> None:
    """Let the window run (and paint) for `seconds`."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def wait_until(application, condition, limit: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the window did not get there in time")
        wait(application, 0.1)


def record(application, window) -> list:
    """The view's pictures, `GIF_FPS` a second for `GIF_SECONDS`."""
    frames = []
    for _ in range(int(GIF_SECONDS * GIF_FPS)):
        frames.append(window.session.result.picture.copy())
        wait(application, 1 / GIF_FPS)
    return frames


def record_sweep(application, window) -> list:
    """The whole window, `GIF_FPS` a second for four seconds, the pointer moving along `SWEEP`."""
    import numpy as np
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QImage
    from PySide6.QtTest import QTest

    view, frames, count = window.view, [], int(4 * GIF_FPS)
    for index in range(count):
        x, y = point_on(SWEEP, index / (count - 1))
        QTest.mouseMove(view, QPoint(int(view.width() * x), int(view.height() * y)))
        wait(application, 1 / GIF_FPS)
        image = window.grab().toImage().convertToFormat(QImage.Format.Format_BGR888)
        rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
        frames.append(rows[:, : image.width() * 3].reshape(image.height(), image.width(), 3).copy())
    return frames


def point_on(points, fraction: float) -> tuple[float, float]:
    """The point `fraction` of the way along the polyline `points` (by segments)."""
    position = fraction * (len(points) - 1)
    index = min(int(position), len(points) - 2)
    (x0, y0), (x1, y1) = points[index], points[index + 1]
    step = position - index
    return x0 + (x1 - x0) * step, y0 + (y1 - y0) * step


def save_gif(frames, path: Path) -> None:
    from PIL import Image

    images = [Image.fromarray(frame[:, :, ::-1]) for frame in frames]
    images = [image.resize((image.width // 2, image.height // 2)) for image in images]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=1000 // GIF_FPS, loop=0, optimize=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folder", type=Path, default=ROOT / "docs")
    arguments = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QPoint, QSettings
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from app.window import MainWindow

    application = QApplication.instance() or QApplication(sys.argv[:1])
    home = Path(tempfile.mkdtemp(prefix="insight-pictures-"))
    window = MainWindow(QSettings(str(home / "settings.ini"), QSettings.Format.IniFormat))
    window.resize(1280, 760)
    window.show()
    window.start(str(DEMO), str(SLIM))
    folder = arguments.folder
    wait_until(application, lambda: window.session.results_seen > 20)
    wait(application, 6)

    window.view_box.setCurrentText("confidence")
    wait(application, 2)
    window.grab().save(str(folder / "confidence.png"))
    save_gif(record(application, window), folder / "confidence.gif")

    window.view_box.setCurrentText("overlay")
    window.timeline_dock.show()
    window.inspector_action.trigger()
    wait(application, 5)
    window.toggle_pause()
    wait(application, 0.5)
    view = window.view
    QTest.mouseMove(view, QPoint(int(view.width() * 0.62), int(view.height() * 0.62)))
    wait(application, 0.5)
    window.grab().save(str(folder / "inspector.png"))
    window.toggle_pause()
    save_gif(record_sweep(application, window), folder / "inspector.gif")
    window.inspector_action.trigger()
    window.timeline_dock.hide()

    window.compare_action.trigger()
    wait_until(application, lambda: window.session.inference.partner is not None)
    window.marks_action.trigger()
    wait(application, 3)
    window.grab().save(str(folder / "compare.png"))
    save_gif(record(application, window), folder / "compare.gif")
    window.close()
    print("wrote", *(folder / name for name in PICTURES))


if __name__ == "__main__":
    main()
