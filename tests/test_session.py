"""The session (app/session.py) without a window: the controller runs on its own and
tells its view what changed; the window only paints what it is told."""

import time

from app.session import Session, unused_path, variant_name
from app.sources import FakeCamera
from engine.media import read_frames
from tests.synthetic import TIMEOUT


class RecordingView:
    """A SessionView that writes down every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))

    def said(self, name: str) -> list[tuple]:
        return [args for called, args in self.calls if called == name]


def drain_until(session: Session, condition, timeout_s: float = TIMEOUT / 1000) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        session.drain()  # what the window's timer does
        time.sleep(0.005)


def test_a_session_plays_segments_and_records_without_a_window(settings, weights):
    view = RecordingView()
    session = Session(view, settings, weights)
    try:
        session.load_model(weights["base"], variant_name("base"))
        session.start_source(FakeCamera(size=(96, 128), fps=30))
        drain_until(session, lambda: session.results_seen >= 3)
        assert view.said("source_started") and view.said("model_changed")
        assert session.running_variant() == "base" and session.model_name == "RTFormer-Base"
        assert settings.value("checkpoint") == str(weights["base"])
        assert view.said("show_result")[-1][0] is session.result

        session.toggle_recording()
        assert view.said("recording_changed") == [(True,)]
        seen = session.results_seen
        drain_until(session, lambda: session.results_seen >= seen + 5)
        session.toggle_recording()
        assert view.said("recording_changed") == [(True,), (False,)]
        recorded = session.last_recording
        assert recorded is not None and sum(1 for _ in read_frames(recorded)) >= 1
        assert any("recorded" in args[0] for args in view.said("show_status"))

        snapshot = session.snapshot()
        assert snapshot is not None and snapshot.is_file()
    finally:
        session.shutdown()


def test_the_session_tells_its_view_about_errors(settings, weights):
    view = RecordingView()
    session = Session(view, settings, weights)
    try:
        assert session.snapshot() is None
        assert view.said("show_error") == [("nothing to snapshot yet",)]
        session.open_location("/no/such/video.mp4")
        drain_until(session, lambda: len(view.said("show_error")) > 1)
        assert "/no/such/video.mp4" in view.said("show_error")[-1][0]
    finally:
        session.shutdown()


def test_unused_path_never_overwrites(tmp_path):
    first = unused_path(tmp_path, "clip", ".mp4")
    first.write_bytes(b"x")
    second = unused_path(tmp_path, "clip", ".mp4")
    assert second != first and second.name == "clip-2.mp4"


def test_a_frozen_frame_is_reported_the_recording_kept_and_a_new_model_goes_on(
    settings, weights, monkeypatch
):
    import threading

    view = RecordingView()
    session = Session(view, settings, weights)
    release = threading.Event()
    try:
        session.load_model(weights["slim"], variant_name("slim"))
        session.start_source(FakeCamera(size=(96, 128), fps=30))
        drain_until(session, lambda: session.results_seen >= 3)
        session.toggle_recording()
        drain_until(session, lambda: session.results_seen >= 8)
        # A short limit only now: loading a model on a loaded machine may take longer.
        session.inference.watchdog.limit = 1.5
        stuck = session.inference.segmenter

        def frozen_frame(frame, stabilizer=None):
            release.wait(60)
            raise RuntimeError("released")

        monkeypatch.setattr(stuck, "predict_model_labels", frozen_frame)
        drain_until(session, lambda: any("stalled" in args[0] for args in view.said("show_error")))
        message = next(args[0] for args in view.said("show_error") if "stalled" in args[0])
        assert "the inference stage has been on one frame" in message and "Choose a model" in message
        assert view.said("recording_changed")[-1] == (False,)  # closed: what it holds is safe
        assert sum(1 for _ in read_frames(session.last_recording)) >= 1
        assert session.running_variant() is None

        seen = session.results_seen
        session.choose_model("slim")  # a fresh inference thread takes the new model
        drain_until(session, lambda: session.results_seen >= seen + 3)
        assert session.inference.segmenter is not stuck
    finally:
        release.set()
        session.shutdown()


def test_steady_masks_start_afresh_on_a_new_model_a_jump_a_seek_or_when_turned_back_on(settings, weights):
    import numpy as np

    from app.services import STEADY_GAP_SECONDS, InferenceService, LatestSlot, RollingStats, ViewSettings
    from app.sources import Frame
    from engine.runtime import MaskStabilizer, ModelOutputs

    class CountingStabilizer(MaskStabilizer):
        resets = 0

        def reset(self) -> None:
            self.resets += 1
            super().reset()

    class Model:  # records what the service asks of the segmenter
        def __init__(self) -> None:
            self.stabilizers: list = []

        def predict_outputs(self, image, stabilizer=None, keep_logits=False, measure=None):
            self.stabilizers.append(stabilizer)
            return ModelOutputs(np.zeros(image.shape[:2], np.uint8))

    stats = RollingStats()
    service = InferenceService(LatestSlot(stats), stats, lambda r: None, lambda m: None, lambda m: None)
    service.stabilizer = stabilizer = CountingStabilizer()
    image = np.zeros((8, 8, 3), np.uint8)
    one, two = Model(), Model()

    def show(model, seconds: float, steady: bool = True) -> int:
        before = stabilizer.resets
        service._outputs(model, Frame(image, seconds, 0), ViewSettings(steady=steady))
        return stabilizer.resets - before

    assert show(one, 0.0) == 1  # nothing before it
    assert show(one, 0.05) == 0 and show(one, 0.10) == 0  # consecutive frames
    assert one.stabilizers[-1] is stabilizer
    assert show(one, 0.10 + STEADY_GAP_SECONDS + 0.5) == 1  # a jump forward
    assert show(one, 0.2) == 1  # back in time: a seek back, a loop
    assert show(two, 0.25) == 1  # another model
    service.forget_past()  # the session: a new source, a seek
    assert show(two, 0.3) == 1 and show(two, 0.35) == 0
    assert show(two, 0.4, steady=False) == 0 and two.stabilizers[-1] is None  # off: not used
    assert show(two, 0.45) == 1  # back on: no stale past
