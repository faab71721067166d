"""`rtformer-studio`: open the window on a source (default: the bundled demo video)."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rtformer-studio", description="Live semantic segmentation with RTFormer"
    )
    parser.add_argument(
        "source", nargs="?", help="video, image, folder or stream URL (default: the demo video)"
    )
    parser.add_argument("--checkpoint", help="a .safetensors checkpoint (default: the shipped RTFormer-Slim)")
    parser.add_argument("--screenshot", help="save a screenshot of the window after --seconds, then quit")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--install-desktop-entry",
        action="store_true",
        help="add RTFormer Studio to the desktop's application launcher (Linux), then quit",
    )
    args = parser.parse_args(argv)
    if args.install_desktop_entry:
        from app.desktop import install_desktop_entry

        for path in install_desktop_entry():
            print(f"wrote {path}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from app.crashlog import CrashReporter
    from app.qtcheck import qt_reference_leak
    from app.window import MainWindow
    from engine.resources import icon, settings_file, user_data_dir
    from engine.runtime import onnxruntime_conflict

    application = QApplication.instance() or QApplication(sys.argv[:1])
    application.setApplicationName("RTFormer Studio")
    application.setOrganizationName("RTFormer Studio")
    application.setWindowIcon(QIcon(str(icon())))
    application.setDesktopFileName("rtformer-studio")  # Wayland/X11 match the launcher entry
    reporter = CrashReporter(user_data_dir())
    last_session = reporter.start()
    settings = QSettings(str(settings_file()), QSettings.Format.IniFormat)
    window = MainWindow(settings)
    window.resize(1280, 760)
    window.show()
    for warning in (last_session, qt_reference_leak(), onnxruntime_conflict()):
        if warning:
            window.show_error(warning)
    window.start(args.source, args.checkpoint)
    if args.screenshot:

        def grab() -> None:
            window.update_readouts()
            window.grab().save(args.screenshot)
            window.close()

        QTimer.singleShot(int(args.seconds * 1000), grab)
    code = application.exec()
    reporter.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
