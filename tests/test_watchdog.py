"""No silent stalls: the watchdog's rule, and `segment` with a frozen stage
ending with an error that names the stage, within the limit, its output kept."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import engine.commands.segment_files as segment_files
from engine.media import read_frames
from engine.model.classes import CAMVID
from engine.runtime.segmenter import palette_lut
from engine.runtime.watchdog import NO_STAGE, StallError, StallWatchdog, stall_limit
from tests.synthetic import write_checkpoint, write_video

LIMIT = 1.5  # seconds; a stall must be reported within 1.25 limits, plus the pipeline's wind-down
FROZEN_AFTER = 4  # frames through the frozen stage before it freezes


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_stage_busy_past_the_limit_is_named_with_its_stack():
    clock, reports = Clock(), []
    watchdog = StallWatchdog(reports.append, limit=10, clock=clock)
    with watchdog.working("decode"):
        clock.now = 1
    entered, release = threading.Event(), threading.Event()

    def stuck_in_inference():
        with watchdog.working("inference"):
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=stuck_in_inference, name="inference-0")
    thread.start()
    entered.wait(5)
    clock.now = 10.5  # 9.5 s since decode finished a frame: not yet
    assert watchdog.check() is None
    clock.now = 11.5
    report = watchdog.check()
    release.set()
    thread.join()
    assert report.stage == "inference" and report.busy_seconds == pytest.approx(10.5)
    assert report.stacks.startswith('Thread "inference-0"') and "stuck_in_inference" in report.stacks
    assert watchdog.check() is report and reports == [report]  # said once


def test_stages_all_waiting_is_a_stall_too_and_progress_resets_the_clock():
    clock, reports = Clock(), []
    watchdog = StallWatchdog(reports.append, limit=5, clock=clock)
    clock.now = 4
    with watchdog.working("decode"):  # a frame moved at 4 s
        pass
    clock.now = 8
    assert watchdog.check() is None
    clock.now = 9.5
    assert watchdog.check().stage == NO_STAGE
    assert "no stage is working" in str(StallError(reports[0]))


def test_the_limit_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("RTFORMER_STALL_SECONDS", "42")
    assert stall_limit() == 42 and stall_limit(3) == 3
    monkeypatch.setenv("RTFORMER_STALL_SECONDS", "soon")
    assert stall_limit() == 300


class InstantModel:
    """A Segmenter's surface for the pipeline: labels at once, so only the freeze stalls."""

    lut = palette_lut(CAMVID.palette)

    def __init__(self, infer=None) -> None:
        self.backend = self
        self.parallel = 1
        self._infer = infer

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        return frame[None]

    def infer_labels(self, batch: np.ndarray) -> torch.Tensor:
        if self._infer is not None:
            self._infer()
        return torch.zeros(batch.shape[:3], dtype=torch.uint8)


def freezer(release: threading.Event, after: int = FROZEN_AFTER):
    """A callable that returns at once `after` times, then blocks until `release`."""
    calls = []

    def frozen_call(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            release.wait(60)

    return frozen_call


@pytest.mark.parametrize("stage", ["decode", "inference", "encode"])
def test_segment_with_a_frozen_stage_ends_with_an_error_naming_it_and_keeps_its_output(
    tmp_path, monkeypatch, caplog, stage
):
    video = write_video(tmp_path / "in.mp4", frames=40, fps=10)
    output = tmp_path / "out.mp4"
    release = threading.Event()
    # A frozen encoder cannot flush what it holds: the file keeps its whole fragments
    # (a second of video each), so it freezes after 2.5 s of video.
    frozen_after = 25 if stage == "encode" else FROZEN_AFTER
    frozen = freezer(release, frozen_after)
    model = InstantModel(frozen if stage == "inference" else None)
    if stage == "decode":
        real_read = segment_files.read_frames

        def read_then_freeze(source, report=None):
            for item in real_read(source, report):
                frozen()
                yield item

        monkeypatch.setattr(segment_files, "read_frames", read_then_freeze)
    if stage == "encode":
        real_render = segment_files.render

        def render_then_freeze(*args):
            frozen()
            return real_render(*args)

        monkeypatch.setattr(segment_files, "render", render_then_freeze)
    started = time.monotonic()
    try:
        with pytest.raises(StallError, match=f"the {stage} stage has been on one frame") as raised:
            segment_files.segment_video(model, video, output, progress=False, stall_seconds=LIMIT)
        took = time.monotonic() - started
        # Counted before the frozen thread is let go: once released it may still write
        # the frame it was frozen on (seen once: 26 frames kept of 25 rendered).
        kept = len(list(read_frames(output)))
    finally:
        release.set()  # let the frozen thread end
    assert took < LIMIT * 1.25 + segment_files.JOIN_AFTER_STALL_SECONDS + 3
    assert raised.value.report.stage == stage
    assert "frozen_call" in raised.value.report.stacks  # where it is stuck
    assert "the threads' stacks" in caplog.text and "frozen_call" in caplog.text
    # The frames before the freeze are in the output, which plays (a frozen encoder
    # cannot close its file: the fragments it wrote still play).
    if stage == "encode":
        assert 10 <= kept <= frozen_after
        assert "keeps the fragments the encoder wrote" in str(raised.value)
    else:
        assert kept == FROZEN_AFTER
        assert f"keeps the {FROZEN_AFTER} frame(s) written before it" in str(raised.value)


def test_a_quiet_segment_run_is_not_a_stall(tmp_path):
    video = write_video(tmp_path / "in.mp4", frames=8, fps=10)
    report = segment_files.segment_video(
        InstantModel(), video, tmp_path / "out.mp4", progress=False, stall_seconds=LIMIT
    )
    assert report.frames == 8 and len(list(read_frames(tmp_path / "out.mp4"))) == 8


def test_the_cli_says_stalled_and_exits_with_an_error(tmp_path, monkeypatch, capsys):
    from engine.commands.cli import main

    video = write_video(tmp_path / "in.mp4", frames=12, fps=10)
    release = threading.Event()
    frozen = freezer(release)
    real_segment_video = segment_files.segment_video

    def with_frozen_model(segmenter, *args, **kwargs):
        return real_segment_video(InstantModel(frozen), *args, **kwargs)

    monkeypatch.setattr(segment_files, "segment_video", with_frozen_model)
    checkpoint = write_checkpoint(tmp_path / "slim.safetensors")
    output = tmp_path / "out.mp4"
    arguments = [
        "--checkpoint",
        str(checkpoint),
        "--backend",
        "torch",
        "--stall-limit",
        str(LIMIT),
        "--no-stabilize",
    ]
    try:
        code = main(["segment", str(video), "-o", str(output), *arguments])
    finally:
        release.set()
    err = capsys.readouterr().err
    assert code == 1
    assert "error: stalled: the inference stage" in err and "Traceback" not in err
    assert f"{output} keeps the {FROZEN_AFTER} frame(s) written before it" in err
    assert len(list(read_frames(output))) == FROZEN_AFTER


GIL_HELD_SCRIPT = """
import ctypes, sys, torch
sys.path.insert(0, '.')
from pathlib import Path
from engine.commands.segment_files import segment_video
from tests.test_watchdog import InstantModel

def frozen_interpreter():  # a native call that blocks holding the GIL, as a deadlocked binding does
    ctypes.PyDLL(None).sleep(60)

segment_video(InstantModel(frozen_interpreter), Path(sys.argv[1]), Path(sys.argv[2]), progress=False,
              stall_seconds=float(sys.argv[3]))
print('finished')
"""


def test_a_frozen_interpreter_still_ends_with_every_stack(tmp_path):
    import subprocess
    import sys

    video = write_video(tmp_path / "in.mp4", frames=6, fps=10)
    started = time.monotonic()
    finished = subprocess.run(
        [sys.executable, "-c", GIL_HELD_SCRIPT, str(video), str(tmp_path / "out.mp4"), str(LIMIT)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=50,  # the native call alone would take 60 s
    )
    assert finished.returncode == 1 and "finished" not in finished.stdout
    assert time.monotonic() - started < 2 * LIMIT + 20
    assert "Timeout" in finished.stderr and "frozen_interpreter" in finished.stderr  # the stuck stack
