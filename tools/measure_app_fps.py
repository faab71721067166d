"""Display FPS of the app against the engine's model-only FPS, in one run.

    QT_QPA_PLATFORM=offscreen .venv/bin/python tools/measure_app_fps.py \
        --checkpoint weights/rtformer-slim-camvid.safetensors --seconds 20

First the model alone (the same Segmenter backend, input size and thread count,
timed back to back), then the window fed by a fake camera at a webcam's 30 fps
(latest frame wins), read from the window's own one-second readouts.

`--compare-steady N` instead measures the window N times with steady masks off and N
times on, interleaved, with a camera faster than the pipeline (so the pipeline, not the
camera, sets the pace) and reports the medians and their ratio:

    QT_QPA_PLATFORM=offscreen .venv/bin/python tools/measure_app_fps.py \
        --checkpoint weights/rtformer-slim-camvid.safetensors --backend openvino \
        --precision bf16 --seconds 12 --camera-fps 200 --compare-steady 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, nargs=2, default=(360, 480))
    parser.add_argument("--camera-fps", type=float, default=30.0, help="a webcam's rate")
    parser.add_argument("--backend", default="onnxruntime", choices=("torch", "onnxruntime", "openvino"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"))
    parser.add_argument(
        "--compare-steady", type=int, metavar="N", help="N runs each, steady masks off and on"
    )
    args = parser.parse_args()
    if args.compare_steady:
        print(json.dumps(compare_steady(args), indent=2))
        return
    model_fps = model_only_fps(args)
    report = {"model_only_fps": model_fps, **window_fps(args)}
    report["display_share_of_model_only"] = report["display_fps"] / model_fps
    print(json.dumps(report, indent=2))


def model_only_fps(args: argparse.Namespace) -> float:
    """The Segmenter's backend alone, back to back, for half the time."""
    from engine.runtime import Segmenter

    segmenter = Segmenter(args.checkpoint, backend=args.backend, device="cpu", precision=args.precision)
    blob = segmenter.prepare(np.zeros((*args.size, 3), np.uint8)).copy()
    for _ in range(5):
        segmenter.backend.infer_labels(blob)
    times = []
    deadline = time.monotonic() + args.seconds / 2
    while time.monotonic() < deadline:
        started = time.perf_counter()
        segmenter.backend.infer_labels(blob)
        times.append(time.perf_counter() - started)
    return 1 / statistics.median(times)


def compare_steady(args: argparse.Namespace) -> dict:
    """Display FPS with steady masks off and on, alternating, `args.compare_steady` runs each."""
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.compare_steady):
        for name in ("off", "on"):
            runs[name].append(window_fps(args, steady=name == "on"))
    median = {name: statistics.median(run["display_fps"] for run in done) for name, done in runs.items()}
    postprocess = {
        name: statistics.median(run["stage_p50_ms"].get("postprocess", 0.0) for run in done)
        for name, done in runs.items()
    }
    return {
        "display_fps": median,
        "steady_share_of_off": median["on"] / median["off"],
        "postprocess_p50_ms": postprocess,
        "runs": runs,
    }


def window_fps(args: argparse.Namespace, steady: bool = True) -> dict:
    """The window fed by a fake camera: medians of its one-second readouts once 20 results
    have been shown; steady masks on or off."""
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from app.sources import FakeCamera
    from app.window import MainWindow
    from engine.runtime import BACKEND_CHOICES

    application = QApplication.instance() or QApplication([])
    settings = QSettings(str(Path(tempfile.mkdtemp()) / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings, {"slim": Path(args.checkpoint), "base": Path(args.checkpoint)})
    window.resize(1280, 760)
    window.set_steady(steady)
    window.show()
    session = window.session
    wanted = (args.backend, "cpu", args.precision)
    choice = next(c for c in BACKEND_CHOICES if (c.backend, c.device, c.precision) == wanted)
    session.load_model(Path(args.checkpoint), "RTFormer-Slim", choice)
    session.start_source(FakeCamera(size=tuple(args.size), fps=args.camera_fps))
    samples: list[tuple[float, float, float]] = []
    stage_samples: dict[str, list[float]] = {}

    def sample() -> None:
        if session.inference.segmenter is not None and session.results_seen > 20:
            stats = session.stats
            samples.append((stats.fps("display"), stats.fps("inferred"), stats.fps("capture")))
            for stage in ("preprocess", "inference", "postprocess", "render"):
                stage_samples.setdefault(stage, []).append(stats.percentiles(stage)[0])

    timer = QTimer(interval=1000, timeout=sample)
    timer.start()
    QTimer.singleShot(int(args.seconds * 1000), application.quit)
    application.exec()
    backend = session.model_text()
    window.close()
    display, inferred, captured = (statistics.median(values) for values in zip(*samples, strict=True))
    return {
        "display_fps": display,
        "inference_fps": inferred,
        "capture_fps": captured,
        "backend": backend,
        "steady": steady,
        "input": list(args.size),
        "samples": len(samples),
        "stage_p50_ms": {stage: statistics.median(values) for stage, values in stage_samples.items()},
    }


if __name__ == "__main__":
    main()
