"""Video encode/decode, and `rtformer segment` on generated videos and images."""

from fractions import Fraction

import cv2
import numpy as np
import pytest

from engine.commands.cli import main
from engine.media import DecodeReport, VideoError, VideoWriter, probe, read_frames
from tests.synthetic import synthetic_frame, write_checkpoint, write_video


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("weights") / "slim.safetensors", input_size=(96, 128))


def test_writer_and_reader_round_trip(tmp_path):
    path = write_video(tmp_path / "clip.mp4", frames=30, fps=15)
    info = probe(path)
    assert (info.width, info.height, info.fps) == (128, 96, Fraction(15))
    assert info.duration == pytest.approx(2.0, abs=1e-3)
    frames = list(read_frames(path))
    assert len(frames) == 30
    assert [round(t * 15) for _, t in frames] == list(range(30))
    assert np.abs(frames[0][0].astype(int) - synthetic_frame(96, 128, seed=0)).mean() < 12


def test_writer_follows_given_timestamps(tmp_path):
    with VideoWriter(tmp_path / "clock.mp4", fps=30) as writer:
        for second in (0.0, 0.5, 1.0, 2.0):  # irregular, as a live recording
            writer.write(synthetic_frame(), second)
    stamps = [t for _, t in read_frames(tmp_path / "clock.mp4")]
    assert stamps == pytest.approx([0.0, 0.5, 1.0, 2.0], abs=1e-3)


def test_unreadable_video_is_reported(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"definitely not a video" * 100)
    with pytest.raises(VideoError, match=r"cannot open bad\.mp4 as a video") as raised:
        probe(bad)
    # FFmpeg's own words, not PyAV's wrapping ("[Errno 1094995529] ...: '/the/path'")
    assert str(raised.value) == "cannot open bad.mp4 as a video: Invalid data found when processing input"
    with pytest.raises(VideoError):
        list(read_frames(bad))


def test_segment_writes_every_frame_with_the_input_timing(tmp_path, checkpoint, capsys):
    source = write_video(tmp_path / "in.mp4", frames=24, fps=12)
    output = tmp_path / "out.mp4"
    code = main(
        ["segment", str(source), "-o", str(output), "--checkpoint", str(checkpoint), "--view", "side-by-side"]
    )
    assert code == 0, capsys.readouterr().err
    original, result = probe(source), probe(output)
    assert result.fps == original.fps == 12
    assert result.duration == pytest.approx(original.duration, abs=1e-3)
    frames = list(read_frames(output))
    assert len(frames) == 24
    assert frames[0][0].shape == (96, 256, 3)  # frame and overlay side by side
    assert "24 frame(s)" in capsys.readouterr().out


def test_segment_at_a_smaller_input_scale_writes_full_size_frames_and_says_the_size(
    tmp_path, checkpoint, capsys
):
    source = write_video(tmp_path / "in.mp4", frames=6, fps=12, size=(96, 128))
    output = tmp_path / "out.mp4"
    arguments = ["segment", str(source), "-o", str(output), "--checkpoint", str(checkpoint)]
    assert main([*arguments, "--backend", "torch", "--input-scale", "0.75"]) == 0
    assert "at most 72x96 (75% of 96x128)" in capsys.readouterr().err
    frames = list(read_frames(output))
    assert len(frames) == 6 and frames[0][0].shape == (96, 128, 3)
    assert main([*arguments, "--input-scale", "0"]) == 1
    assert "input scale 0 is outside 0.1-2.0" in capsys.readouterr().err


def test_segment_stops_at_damage_and_still_writes_a_valid_file(tmp_path, checkpoint, capsys):
    source = write_video(tmp_path / "whole.mp4", frames=60, fps=15)
    data = source.read_bytes()
    damaged = tmp_path / "damaged.mp4"
    # A copy cut off after two thirds, then garbage: the index is intact (faststart), the data not.
    damaged.write_bytes(data[: len(data) * 2 // 3] + bytes(range(256)) * 20)
    output = tmp_path / "out.mp4"
    code = main(["segment", str(damaged), "-o", str(output), "--checkpoint", str(checkpoint)])
    assert code == 0
    assert "is damaged; segmented the" in capsys.readouterr().err
    decoded = DecodeReport()
    frames = list(read_frames(output, decoded))
    assert 0 < len(frames) < 60 and not decoded.damaged
    written = probe(output)
    assert written.fps == 15


def test_segment_images_and_folders(tmp_path, checkpoint):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"f{index}.jpg"), synthetic_frame(100, 140, seed=index))
    assert (
        main(
            [
                "segment",
                str(folder),
                "-o",
                str(tmp_path / "masks"),
                "--checkpoint",
                str(checkpoint),
                "--view",
                "mask",
            ]
        )
        == 0
    )
    masks = sorted((tmp_path / "masks").glob("*.png"))
    assert [m.name for m in masks] == ["f0.png", "f1.png", "f2.png"]
    assert cv2.imread(str(masks[0])).shape == (100, 140, 3)
    assert (
        main(
            [
                "segment",
                str(folder / "f1.jpg"),
                "-o",
                str(tmp_path / "labels.png"),
                "--checkpoint",
                str(checkpoint),
                "--labels",
            ]
        )
        == 0
    )
    labels = cv2.imread(str(tmp_path / "labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (100, 140) and labels.max() < 11


def test_segment_reports_missing_input_and_checkpoint(tmp_path, checkpoint, capsys):
    assert (
        main(
            [
                "segment",
                str(tmp_path / "none.mp4"),
                "-o",
                str(tmp_path / "o.mp4"),
                "--checkpoint",
                str(checkpoint),
            ]
        )
        == 1
    )
    assert "input not found" in capsys.readouterr().err
    assert (
        main(
            [
                "segment",
                str(tmp_path / "none.mp4"),
                "-o",
                str(tmp_path / "o.mp4"),
                "--checkpoint",
                str(tmp_path / "missing.safetensors"),
            ]
        )
        == 1
    )
    assert "checkpoint not found" in capsys.readouterr().err


def test_frames_in_flight_come_back_in_order_and_none_is_lost():
    """The segment loop hands frames to `parallel` inference threads; whatever order
    they finish in, results come out in the input's order."""
    import queue
    import random
    import time

    import torch

    from engine.commands.segment_files import _segmented_in_order, _VideoPipeline

    class SlowBackend:
        parallel = 3

        def infer_labels(self, batch):
            time.sleep(random.uniform(0, 0.02))  # finish out of order
            return torch.from_numpy(batch[..., 0].copy())

    class Prepared:
        backend = SlowBackend()

        def prepare(self, frame):
            return frame[None]

    pipeline = _VideoPipeline()
    pipeline.decoded = queue.Queue()  # unbounded: every frame is queued before the run
    for index in range(20):
        pipeline.decoded.put((np.full((4, 4, 3), index, np.uint8), index / 10))
    pipeline.decoded.put(None)
    stages = pipeline.stages
    results = list(_segmented_in_order(Prepared(), pipeline))
    assert [int(labels[0, 0, 0]) for _, labels, _ in results] == list(range(20))
    assert [seconds for _, _, seconds in results] == pytest.approx([i / 10 for i in range(20)])
    assert len(stages["inference"]) == 20


def test_segment_with_openvino_streams_writes_what_one_stream_writes(tmp_path, checkpoint):
    pytest.importorskip("openvino")
    from engine.commands.segment_files import segment_video
    from engine.runtime.segmenter import Segmenter

    video = write_video(tmp_path / "in.mp4", frames=12, fps=10)
    outputs = {}
    for streams in (1, 2):
        segmenter = Segmenter(checkpoint, backend="openvino", device="cpu", streams=streams)
        assert segmenter.backend.parallel == streams
        report = segment_video(segmenter, video, tmp_path / f"out{streams}.mp4", progress=False)
        assert report.frames == 12
        outputs[streams] = [frame for frame, _ in read_frames(tmp_path / f"out{streams}.mp4")]
    assert len(outputs[1]) == len(outputs[2]) == 12
    for one, two in zip(outputs[1], outputs[2], strict=True):
        assert np.abs(one.astype(int) - two.astype(int)).mean() < 2  # same labels, same order


def test_batches_come_back_in_order_and_the_last_one_is_padded_to_the_same_shape():
    import queue
    import random
    import time

    import torch

    from engine.commands.segment_files import _segmented_in_order, _VideoPipeline

    shapes = []

    class BatchingBackend:
        parallel = 2

        def infer_labels(self, batch):
            shapes.append(batch.shape[0])
            time.sleep(random.uniform(0, 0.02))
            return torch.from_numpy(batch[..., 0].copy())

    class Prepared:
        backend = BatchingBackend()

        def prepare(self, frame):
            return frame[None]

    pipeline = _VideoPipeline()
    pipeline.decoded = queue.Queue()  # unbounded: every frame is queued before the run
    for index in range(7):
        pipeline.decoded.put((np.full((4, 4, 3), index, np.uint8), index / 10))
    pipeline.decoded.put(None)
    stages = pipeline.stages
    results = list(_segmented_in_order(Prepared(), pipeline, batch_size=3))
    assert [int(labels[0, 0, 0]) for _, labels, _ in results] == list(range(7))
    assert all(labels.shape == (1, 4, 4) for _, labels, _ in results)
    assert shapes == [3, 3, 3]  # 3 + 3 + 1 padded to 3: one CUDA graph shape
    assert len(stages["inference"]) == 7


def test_the_batch_size_is_measured_only_where_batches_can_pay(tmp_path, checkpoint):
    import time

    import torch

    from engine.commands.segment_files import measured_batch_size
    from engine.runtime.segmenter import Segmenter

    class LaunchBound:
        batches = True

        def infer_labels(self, batch):
            time.sleep(0.004 + 0.0002 * batch.shape[0])  # a launch costs more than a frame
            return torch.zeros(batch.shape[0], 4, 4, dtype=torch.uint8)

    class Prepared:
        backend = LaunchBound()

        def prepare(self, frame):
            return frame[None]

    frame = np.zeros((4, 4, 3), np.uint8)
    assert measured_batch_size(Prepared(), frame) == 8
    cpu = Segmenter(checkpoint, backend="onnxruntime", device="cpu", precision="fp32")
    assert measured_batch_size(cpu, frame) == 1


def test_segment_in_batches_writes_what_one_frame_at_a_time_writes(tmp_path, checkpoint):
    from engine.commands.segment_files import segment_video
    from engine.runtime.segmenter import Segmenter

    video = write_video(tmp_path / "in.mp4", frames=7, fps=10)
    segmenter = Segmenter(checkpoint, backend="torch", device="cpu")
    outputs = {}
    for batch_size in (1, 3):
        out = tmp_path / f"out{batch_size}.mp4"
        report = segment_video(segmenter, video, out, progress=False, batch_size=batch_size)
        assert report.frames == 7
        outputs[batch_size] = [frame for frame, _ in read_frames(out)]
    assert len(outputs[3]) == 7
    for one, three in zip(outputs[1], outputs[3], strict=True):
        assert np.abs(one.astype(int) - three.astype(int)).mean() < 1
