"""What the app's views of what the model sees cost a frame, measured side by side on the
demo drive with the shipped weights on the default backend:

- confidence view: the measure (from the logits of the same run) plus the heat map,
  against the overlay;
- pixel inspector: keeping a copy of the logits;
- class timeline: adding a frame's shares and its share of the 4-per-second redraw;
- Compare view: the real window's rate with both models against 1 / (Slim's time +
  Base's time), each measured alone in the same window just before.

    .venv/bin/python tools/insight_costs.py -o docs/benchmarks/insight-costs-amx.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from engine.commands.bench import machine_description, write_json
from engine.media import read_frames
from engine.resources import shipped_weights
from engine.runtime import DEFAULT_MEASURE, Segmenter, class_shares, render
from engine.runtime.cpu import cpu_class

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets/demo-udacity-hmb-20fps.mp4"
FRAMES = 120


def median_ms(function, frames) -> float:
    times = []
    for frame in frames:
        started = time.perf_counter()
        function(frame)
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times[10:])


def view_costs(segmenter: Segmenter, frames) -> dict:
    """Milliseconds a frame: each path, alternated so drift hits them alike."""
    lut = segmenter.lut

    def plain(frame):
        labels = segmenter.predict_outputs(frame).labels
        render("overlay", frame, labels, lut)

    def sure(frame):
        outputs = segmenter.predict_outputs(frame, measure=DEFAULT_MEASURE)
        render("confidence", frame, outputs.labels, lut, 0.5, (), None, outputs.confidence)

    def inspected(frame):
        labels = segmenter.predict_outputs(frame, keep_logits=True).labels
        render("overlay", frame, labels, lut)

    rounds = {"overlay": [], "confidence": [], "inspector": []}
    for _ in range(3):
        for name, function in (("overlay", plain), ("confidence", sure), ("inspector", inspected)):
            rounds[name].append(median_ms(function, frames))
    result = {name: statistics.median(values) for name, values in rounds.items()}
    result["confidence_view_adds"] = result["confidence"] - result["overlay"]
    result["inspector_adds"] = result["inspector"] - result["overlay"]
    return {**result, **component_costs(segmenter, frames)}


def component_costs(segmenter: Segmenter, frames) -> dict:
    """The parts alone, ms a frame: what the views add without the noise of whole frames."""
    from engine.runtime.confidence import VIEW_STRIDE, confidence

    pairs = [(frame, segmenter.infer_both(frame)) for frame in frames[:40]]
    warm = []  # as the app computes it: on logits the model has just written
    for frame in frames[:40]:
        logits = segmenter.infer_both(frame)[0]
        started = time.perf_counter()
        confidence(logits, DEFAULT_MEASURE, VIEW_STRIDE)
        warm.append((time.perf_counter() - started) * 1e3)
    measure = statistics.median(warm[5:])
    sure = confidence(pairs[0][1][0], DEFAULT_MEASURE, VIEW_STRIDE)
    heat = median_ms(
        lambda pair: render("confidence", pair[0], pair[1][1], segmenter.lut, 0.5, (), None, sure), pairs
    )
    plain = median_ms(lambda pair: render("overlay", pair[0], pair[1][1], segmenter.lut), pairs)
    copy = median_ms(lambda pair: pair[1][0].copy(), pairs)
    return {
        "confidence_measure_ms": measure,
        "heat_map_minus_overlay_ms": heat - plain,
        "confidence_view_parts_ms": measure + heat - plain,
        "inspector_logits_copy_ms": copy,
    }


def timeline_cost(segmenter: Segmenter, frames) -> float:
    """ms a frame for the timeline at 20 frames a second: add, plus a quarter-second redraw / 5."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app.timeline import ClassTimeline

    application = QApplication.instance() or QApplication(sys.argv[:1])
    timeline = ClassTimeline()
    timeline.set_classes(segmenter.class_names, segmenter.info.palette)
    timeline.resize(900, 200)
    timeline.show()
    shares = [
        class_shares(segmenter.predict_outputs(frame).labels, len(segmenter.class_names)) for frame in frames
    ]
    started = time.perf_counter()
    count = 0
    for second in range(60):  # a full minute of points, 20 a second
        for index in range(20):
            timeline.add(second + index / 20, shares[(second * 20 + index) % len(shares)])
            count += 1
            if index % 5 == 0:
                timeline.redraw()
                timeline.repaint()
        application.processEvents()
    return (time.perf_counter() - started) * 1e3 / count


def compare_rate(frames, fps: int, steady: bool = True, seconds: float = 10.0) -> dict:
    """The real window (offscreen) on the demo's frames at `fps` (the demo's own 20, or 60:
    faster than the pair, so the models set the pace): each model alone, then the Compare
    view, in one run; frames a second and each model's inference time (median)."""
    import tempfile

    from PySide6.QtCore import QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from app.window import MainWindow
    from engine.media import VideoWriter

    folder = Path(tempfile.mkdtemp(prefix="compare-rate-"))
    fast = folder / f"demo-{fps}fps.mp4"
    with VideoWriter(fast, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)
    _application = QApplication.instance() or QApplication(sys.argv[:1])  # kept alive for the window

    def run(duration: float) -> None:
        loop = QEventLoop()
        QTimer.singleShot(int(duration * 1000), loop.quit)
        loop.exec()

    def measure(names: tuple[str, ...]) -> dict:
        run(3)  # settles
        samples: dict[str, list[float]] = {"fps": [], **{name: [] for name in names}}
        for _ in range(int(seconds)):
            run(1)
            samples["fps"].append(stats.fps("inferred"))
            for name in names:
                samples[name].append(stats.percentiles(name)[0])
        return {name: statistics.median(values) for name, values in samples.items()}

    window = MainWindow(QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat))
    window.resize(1280, 760)
    window.show()
    stats = window.session.stats
    result = {}
    for variant in ("slim", "base"):
        window.start(str(fast), str(shipped_weights()[variant]))
        window.set_steady(steady)
        while window.session.running_variant() != variant:
            run(0.2)
        result[f"{variant}_alone"] = measure(("inference",))
    window.model_actions["slim"].trigger()
    while window.session.running_variant() != "slim":
        run(0.2)
    window.compare_action.trigger()
    while window.session.inference.partner is None:
        run(0.2)
    pair = measure(("inference", "partner inference"))
    window.close()
    alone = result["slim_alone"]["inference"] + result["base_alone"]["inference"]
    return {
        **result,
        "compare": pair,
        "one_over_alone_pair_fps": 1000 / alone,
        "ratio_to_alone_times": pair["fps"] * alone / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--output", type=Path)
    arguments = parser.parse_args()
    frames = [frame for frame, _ in read_frames(DEMO)][:FRAMES]
    report = {"machine": {**machine_description(), "class": cpu_class()}, "frames": len(frames)}
    for variant, weights in shipped_weights().items():
        segmenter = Segmenter(weights)
        report[variant] = {"backend": segmenter.description, **view_costs(segmenter, frames)}
        report[variant]["timeline_ms_per_frame"] = timeline_cost(segmenter, frames)
        print(variant, json.dumps(report[variant]), flush=True)
    for name, fps, steady in (("20fps", 20, True), ("60fps", 60, True), ("60fps_steady_off", 60, False)):
        report[f"compare_{name}"] = compare_rate(frames, fps, steady)
        print("compare", name, json.dumps(report[f"compare_{name}"]), flush=True)
    if arguments.output:
        write_json(report, arguments.output)


if __name__ == "__main__":
    main()
