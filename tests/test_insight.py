"""What the model sees, in the real window (pytest-qt): the confidence view, the pixel
inspector, the Compare view, the class timeline and the areas export (of the frames seen,
and of every frame of a file); and
`rtformer segment --view confidence` and `--areas` on the command line."""

import csv
import gc
import os
import threading
import weakref

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QPushButton

from app.inspector import Spot, describe, model_pixel
from app.services.compare import HEADER_PIXELS, Panel, compose_pair
from engine.commands.cli import main
from engine.media import read_frames
from engine.runtime import render
from tests.synthetic import TIMEOUT, wait_for_results, write_video


def next_result(qtbot, window, accept=lambda result: True):
    """The first result from now on that `accept` takes."""
    seen = []
    window.session.frame_listeners.append(lambda result: seen.append(result) if accept(result) else None)
    qtbot.waitUntil(lambda: bool(seen), timeout=TIMEOUT)
    return seen[0]


def test_the_confidence_view_draws_a_heat_map_with_its_scale(qtbot, window, video, weights):
    window.start(str(video), str(weights["slim"]))
    wait_for_results(qtbot, window, 2)
    window.view_box.setCurrentText("confidence")
    result = next_result(qtbot, window, lambda r: r.confidence is not None)
    assert (
        result.confidence.dtype == np.float32 and 0 <= result.confidence.min() <= result.confidence.max() <= 1
    )
    overlay = render("overlay", result.frame.image, result.labels, result.lut)
    assert result.picture.shape == overlay.shape and not np.array_equal(result.picture, overlay)


def test_the_inspector_shows_the_softmax_of_the_logits_under_the_pointer(qtbot, window, video, weights):
    window.start(str(video), str(weights["slim"]))
    wait_for_results(qtbot, window, 2)
    window.inspector_action.trigger()
    result = next_result(qtbot, window, lambda r: r.logits is not None)
    height, width = result.picture.shape[:2]
    spot = model_pixel(result, width * 0.25, height * 0.5, (height, width), "overlay")
    assert spot == Spot(result.labels.shape[0] // 2, result.labels.shape[1] // 4, 0)
    probabilities = torch.softmax(torch.from_numpy(result.logits[:, spot.row, spot.column]).double(), 0)
    names = window.session.inference.segmenter.class_names
    expected = [f"{names[i]} {probabilities[i] * 100:.1f}%" for i in torch.argsort(-probabilities)[:3]]
    assert describe(result, spot, names).startswith(" | ".join(expected))
    window.toggle_pause()  # paused: the inspector still answers
    window.inspect_at(width * 0.25, height * 0.5, (height, width))
    assert window.inspector_label.isVisible() and window.inspector_label.text().startswith(expected[0])


def test_compare_runs_both_models_on_the_same_frame_and_frees_the_second_when_left(
    qtbot, window, video, weights
):
    window.start(str(video), str(weights["slim"]))
    window.set_steady(False)  # each panel is then the model's own labels for that frame
    wait_for_results(qtbot, window, 2)
    window.compare_action.trigger()
    qtbot.waitUntil(window.marks_action.isEnabled, timeout=TIMEOUT)  # the window heard the second model runs
    assert window.compare_action.isChecked() and window.session.inference.partner is not None
    result = next_result(qtbot, window, lambda r: r.partner is not None)
    partner = window.session.inference.partner
    assert result.name == "RTFormer-Slim" and result.partner.name == "RTFormer-Base"
    frame = result.frame.image
    assert np.array_equal(result.partner.labels, partner.segmenter.predict_model_labels(frame))
    body = result.picture[HEADER_PIXELS:]
    half = body.shape[1] // 2
    for panel, (labels, lut) in zip(
        (body[:, :half], body[:, half:]),
        ((result.labels, result.lut), (result.partner.labels, partner.segmenter.lut)),
        strict=True,
    ):
        assert np.array_equal(panel, render("overlay", frame, labels, lut, 0.5, (), panel.shape[:2]))

    window.marks_action.trigger()
    wait_for_results(qtbot, window, 2)  # past the frame in flight when the view changed
    marked = next_result(qtbot, window, lambda r: r.partner is not None)
    mine = Panel(marked.name, marked.labels, marked.lut, None, marked.milliseconds)
    size = window.session.inference.display_size
    expected = compose_pair("overlay", marked.frame.image, (mine, marked.partner), 0.5, (), size, marks=True)
    assert np.array_equal(marked.picture, expected)

    window.model_actions["base"].trigger()  # Base on the left now: Slim comes to the right
    qtbot.waitUntil(
        lambda: (
            window.session.model_name == "RTFormer-Base"
            and window.session.inference.partner.request.name == "RTFormer-Slim"
        ),
        timeout=TIMEOUT,
    )
    partner = window.session.inference.partner
    gone = weakref.ref(partner.segmenter)
    del partner, result, marked, mine
    window.compare_action.trigger()
    alone = next_result(qtbot, window, lambda r: r.partner is None)
    assert alone.picture.shape[:2] == alone.frame.image.shape[:2] and not window.compare_action.isChecked()
    del alone
    window.session.result = None
    qtbot.waitUntil(lambda: (gc.collect(), gone() is None)[1], timeout=TIMEOUT)


def test_marks_change_exactly_the_pixels_where_the_two_models_disagree():
    frame = np.full((40, 60, 3), 100, np.uint8)
    left, right = np.zeros((20, 30), np.uint8), np.zeros((20, 30), np.uint8)
    right[5:10, 10:20] = 3
    lut = np.zeros((256, 3), np.uint8)
    panels = (Panel("A", left, lut, None, 10.0), Panel("B", right, lut, None, 20.0))
    plain = compose_pair("mask", frame, panels, 0.5)
    marked = compose_pair("mask", frame, panels, 0.5, marks=True)
    changed = (plain != marked).any(-1)[HEADER_PIXELS:]
    expected = np.zeros((40, 60), bool)
    expected[10:20, 20:40] = True
    assert np.array_equal(changed, np.hstack([expected, expected]))
    assert plain.shape == (HEADER_PIXELS + 40, 120, 3)


def test_the_timeline_follows_the_shares_and_the_legend_hides_classes(qtbot, window, video, weights):
    window.start(str(video), str(weights["slim"]))
    window.timeline_dock.show()
    wait_for_results(qtbot, window, 6)
    qtbot.waitUntil(lambda: len(window.timeline.points) >= 2, timeout=TIMEOUT)
    window.timeline.redraw()
    series = window.timeline.series
    assert len(series) == 11 and series[0].count() == len(window.timeline.points)
    window.legend.item(3).setCheckState(Qt.CheckState.Unchecked)
    assert not series[3].isVisible() and series[2].isVisible()


def test_the_timeline_opens_with_the_last_minute_already_seen(qtbot, window, video, weights):
    from app.timeline import STEP_SECONDS

    window.start(str(video), str(weights["slim"]))
    wait_for_results(qtbot, window, 12)
    window.toggle_pause()  # no new frame: what the timeline shows comes from before it opened
    qtbot.wait(200)
    kept = window.session.recent_areas(60.0)
    steps = sorted({seconds - seconds % STEP_SECONDS for seconds, _ in kept})
    assert len(steps) >= 2
    window.timeline_dock.show()
    qtbot.waitUntil(lambda: len(window.timeline.points) >= len(steps), timeout=TIMEOUT)
    assert [start for start, _ in window.timeline.points][: len(steps)] == pytest.approx(steps)
    assert window.timeline.series[0].count() >= len(steps)  # drawn at once


def test_the_timeline_keeps_a_quarter_second_mean_and_the_last_minute(qtbot):
    from app.timeline import STEP_SECONDS, WINDOW_SECONDS, ClassTimeline

    timeline = ClassTimeline()
    qtbot.addWidget(timeline)
    timeline.set_classes(["a", "b"], [(255, 0, 0), (0, 0, 255)])
    for seconds, shares in ((0.0, [1.0, 0.0]), (0.1, [0.0, 1.0]), (0.2, [0.5, 0.5]), (0.3, [0.2, 0.8])):
        timeline.add(seconds, np.array(shares))
    assert [start for start, _ in timeline.points] == [0.0, STEP_SECONDS]
    np.testing.assert_allclose(timeline.points[0][1], [0.5, 0.5])
    timeline.add(WINDOW_SECONDS + 1.0, np.array([1.0, 0.0]))
    assert [start for start, _ in timeline.points] == [WINDOW_SECONDS + 1.0]  # older than a minute: gone
    timeline.redraw()
    assert timeline.series[1].at(0).y() == 0.0
    timeline.add(5.0, np.array([0.0, 1.0]))  # the clock went back: a seek
    assert len(timeline.points) == 1


def test_export_areas_writes_one_row_per_segmented_frame_summing_to_one(
    qtbot, window, video, weights, tmp_path
):
    window.start(str(video), str(weights["slim"]))
    wait_for_results(qtbot, window, 6)
    rows = window.session.export_areas(tmp_path / "areas.csv")
    table = list(csv.reader((tmp_path / "areas.csv").open()))
    names = window.session.inference.segmenter.class_names
    assert table[0] == ["frame", "time", *names] and len(table) == rows + 1 >= 6
    frames = [int(row[0]) for row in table[1:]]
    assert frames == sorted(frames)
    for row in table[1:]:
        assert sum(map(float, row[2:])) == pytest.approx(1, abs=1e-3)


def hidden_files(folder) -> list[str]:
    return [path.name for path in folder.iterdir() if path.name.startswith(".")]


def status_lines(window, monkeypatch) -> list[str]:
    """What the window's status line is told from now on (a hint may follow any of it)."""
    said: list[str] = []
    monkeypatch.setattr(window, "show_status", lambda message, milliseconds=5000: said.append(message))
    return said


def export_from_the_menu(window, monkeypatch, path) -> None:
    """File > Export areas..., the save dialog answered with `path`."""
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args, **kwargs: (str(path), "CSV (*.csv)"))
    window.export_areas_dialog()


def test_export_areas_of_a_video_file_covers_every_frame_in_a_pass_of_its_own(
    qtbot, window, video, weights, tmp_path, monkeypatch
):
    window.start(str(video), str(weights["slim"]))
    wait_for_results(qtbot, window, 3)
    target, said = tmp_path / "areas.csv", status_lines(window, monkeypatch)
    export_from_the_menu(window, monkeypatch, target)
    assert window.export_progress is not None and window.export_progress.isVisible()
    qtbot.waitUntil(lambda: window.export_progress is None, timeout=TIMEOUT)
    table = list(csv.reader(target.open()))
    assert table[0] == ["frame", "time", *window.session.inference.segmenter.class_names]
    # every frame of the file, whatever the live view kept up with: 40 at 20 FPS
    assert [int(row[0]) for row in table[1:]] == list(range(40))
    assert [float(row[1]) for row in table[1:]] == pytest.approx([i / 20 for i in range(40)], abs=1e-3)
    for row in table[1:]:
        assert sum(map(float, row[2:])) == pytest.approx(1, abs=1e-3)
    assert any("all 40 frames of clip.mp4" in line for line in said)
    assert hidden_files(tmp_path) == [] and window.session.areas_export is None


def test_a_cancelled_areas_export_writes_nothing_and_a_failed_one_says_why(
    qtbot, window, video, weights, tmp_path, monkeypatch
):
    from app.services import areas_export

    gate, shares = threading.Event(), areas_export.class_shares

    def held_at_the_third_frame(labels, classes):
        if threading.current_thread().name == "areas-export" and not gate.is_set():
            held_at_the_third_frame.calls += 1
            if held_at_the_third_frame.calls == 3:
                gate.wait(TIMEOUT / 1000)
        return shares(labels, classes)

    held_at_the_third_frame.calls = 0
    monkeypatch.setattr(areas_export, "class_shares", held_at_the_third_frame)
    window.start(str(video), str(weights["slim"]))
    wait_for_results(qtbot, window, 3)
    target, said = tmp_path / "areas.csv", status_lines(window, monkeypatch)
    export_from_the_menu(window, monkeypatch, target)
    export = window.session.areas_export
    qtbot.waitUntil(lambda: window.export_progress.value() >= 2, timeout=TIMEOUT)
    qtbot.mouseClick(window.export_progress.findChild(QPushButton), Qt.MouseButton.LeftButton)
    gate.set()
    qtbot.waitUntil(lambda: not export.running, timeout=TIMEOUT)
    assert window.export_progress is None and window.session.areas_export is None
    assert not target.exists() and hidden_files(tmp_path) == []
    assert any("cancelled" in line for line in said) and not any("wrote" in line for line in said)

    original = video.read_bytes()
    export_from_the_menu(window, monkeypatch, video)  # the video itself: refused, untouched
    assert "is the video being read" in window.banner.text() and video.read_bytes() == original
    assert window.export_progress is None and window.session.areas_export is None
    window.banner.hide()  # dismissed

    export_from_the_menu(window, monkeypatch, tmp_path / "no such folder" / "areas.csv")
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=TIMEOUT)
    assert "cannot export the areas of clip.mp4" in window.banner.text()
    assert window.export_progress is None
    wait_for_results(qtbot, window, 2)  # and the app plays on


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=18, fps=12)


def test_segment_writes_the_confidence_view_and_the_areas_of_every_frame(clip, weights, tmp_path, capsys):
    output, areas = tmp_path / "sure.mp4", tmp_path / "areas.csv"
    arguments = ["segment", str(clip), "-o", str(output), "--checkpoint", str(weights["slim"])]
    assert main([*arguments, "--view", "confidence", "--areas", str(areas)]) == 0, capsys.readouterr().err
    assert len(list(read_frames(output))) == 18
    table = list(csv.reader(areas.open()))
    assert table[0][:3] == ["frame", "time", "Sky"] and len(table) == 19
    assert [int(row[0]) for row in table[1:]] == list(range(18))
    assert [float(row[1]) for row in table[1:]] == pytest.approx([i / 12 for i in range(18)], abs=1e-3)
    for row in table[1:]:
        assert sum(map(float, row[2:])) == pytest.approx(1, abs=1e-3)
