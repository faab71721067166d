"""File > Export areas over a whole video file, measured in the real window (offscreen) on
the demo drive with shipped Slim on the default backend, steady masks on:

- the live view's rate for 10 s before the export, then while the export runs;
- how long the export takes for every frame of the file, and its rows.

    .venv/bin/python tools/bench_areas_export.py -o docs/benchmarks/areas-export-amx.json
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from engine.commands.bench import machine_description, write_json
from engine.media import probe
from engine.resources import shipped_weights
from engine.runtime.cpu import cpu_class

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets/demo-udacity-hmb-20fps.mp4"


def run_for(seconds: float) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def live_fps(window, seconds: int, until=lambda: False) -> list[float]:
    """The live view's inferred frames a second, sampled each second, for `seconds` or
    until `until` (checked every 50 ms)."""
    samples, started = [], time.perf_counter()
    while len(samples) < seconds and not until():
        run_for(0.05)
        if time.perf_counter() - started >= len(samples) + 1:
            samples.append(window.session.stats.fps("inferred"))
    return samples


def measure(folder: Path) -> dict:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.window import MainWindow

    _application = QApplication.instance() or QApplication(sys.argv[:1])  # kept alive for the window
    window = MainWindow(QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat))
    window.resize(1280, 760)
    window.show()
    window.start(str(DEMO), str(shipped_weights()["slim"]))
    while window.session.running_variant() != "slim":
        run_for(0.2)
    run_for(3)  # settles
    before = live_fps(window, 10)
    target = folder / "areas.csv"
    started = time.perf_counter()
    window.session.export_file_areas(target)
    during = live_fps(window, 600, until=lambda: window.session.areas_export is None)
    seconds = time.perf_counter() - started
    backend = window.session.inference.segmenter.description
    window.close()
    rows = sum(1 for _ in csv.reader(target.open())) - 1
    return {
        "backend": backend,
        "source_frames": probe(DEMO).frames,
        "rows": rows,
        "export_seconds": seconds,
        "export_fps": rows / seconds,
        "live_fps_before": statistics.median(before),
        "live_fps_during": statistics.median(during[1:] or during),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--output", type=Path)
    arguments = parser.parse_args()
    report = {"machine": {**machine_description(), "class": cpu_class()}}
    report.update(measure(Path(tempfile.mkdtemp(prefix="areas-export-"))))
    print(json.dumps(report, indent=2))
    if arguments.output:
        write_json(report, arguments.output)


if __name__ == "__main__":
    main()
