"""Steady masks (engine.runtime.stabilize) and the flicker metric (engine.training.flicker),
on synthetic scenes whose motion and evidence are known."""

import numpy as np
import pytest

from engine.runtime.stabilize import NO_PAST, MaskStabilizer, StabilizerConfig, hold_unless_clear
from engine.training.flicker import FlickerMeter

HEIGHT, WIDTH, CLASSES = 96, 128, 3


def texture(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A smooth random BGR texture that optical flow can follow."""
    import cv2

    noise = np.random.default_rng(seed).integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


def panned(scene: np.ndarray, shift: int) -> np.ndarray:
    """The part of a wide `scene` that a camera panning right by `shift` pixels sees."""
    return np.ascontiguousarray(scene[:, shift : shift + WIDTH])


def logits_for(labels: np.ndarray, margin: float, rng=None, noise: float = 0.0) -> np.ndarray:
    """(C, H, W) logits whose argmax is `labels`, winning by `margin` (plus noise)."""
    logits = np.zeros((CLASSES, *labels.shape), np.float32)
    np.put_along_axis(logits, labels[None].astype(np.intp), margin, 0)
    if rng is not None:
        logits += rng.normal(0, noise, logits.shape).astype(np.float32)
    return logits


def argmax(logits: np.ndarray) -> np.ndarray:
    return logits.argmax(0).astype(np.uint8)


def test_undecided_pixels_keep_their_class_while_clear_ones_change():
    config = StabilizerConfig(margin=0.75, memory=0.5)
    carried = np.array([[0, 0, 1, NO_PAST]], np.uint8)
    logits = np.array([[[1.0, 2.0, 0.0, 0.0]], [[1.5, 0.0, 3.0, 1.0]], [[0.0, 0.0, 0.0, 0.0]]], np.float32)
    labels = argmax(logits)  # [1, 0, 1, 1]
    no_doubt = np.zeros((1, 4), np.float32)
    steady, doubt = hold_unless_clear(logits, labels, carried, no_doubt, config)
    # pixel 0: class 1 wins by 0.5 < 0.75: keeps 0, with 0.5 of doubt; pixels 1 and 2: the
    # held class is the best; pixel 3: no past, its own label
    assert steady.tolist() == [[0, 0, 1, 1]] and doubt.tolist() == [[0.5, 0, 0, 0]]
    steady, doubt = hold_unless_clear(logits, labels, carried, np.full((1, 4), 0.6, np.float32), config)
    assert steady.tolist() == [[1, 0, 1, 1]] and doubt.tolist() == [[0, 0, 0, 0]]  # 0.3 + 0.5: changes
    stricter = StabilizerConfig(margin=0.4)
    assert hold_unless_clear(logits, labels, carried, no_doubt, stricter)[0].tolist() == [[1, 0, 1, 1]]
    assert labels.tolist() == [[1, 0, 1, 1]] and not no_doubt.any()  # inputs unchanged


def test_weak_evidence_that_lasts_wins_after_a_few_frames_and_evidence_that_comes_and_goes_does_not():
    frame = texture(13)
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    lasting, flickering = MaskStabilizer(), MaskStabilizer()
    for stabilizer in (lasting, flickering):
        stabilizer(frame, logits_for(labels, 5.0), labels)
    weak = logits_for(np.ones_like(labels), 0.45)  # class 1, by 0.45 < margin
    changed_at = None
    for step in range(1, 7):
        if changed_at is None and np.all(lasting(frame, weak, argmax(weak)) == 1):
            changed_at = step
        shown = weak if step % 2 else logits_for(labels, 0.45)  # class 1 every other frame
        assert np.all(flickering(frame, shown, argmax(shown)) == 0)
    assert changed_at == 3  # doubt 0.45, then 0.225 + 0.45 = 0.675, then 0.7875 >= 0.75


def test_a_flickering_still_scene_becomes_steady():
    rng = np.random.default_rng(0)
    frame = texture(1)
    truth = np.zeros((HEIGHT, WIDTH), np.uint8)
    truth[:, WIDTH // 2 :] = 1
    stabilizer = MaskStabilizer()
    first = previous = None
    flips = 0
    for _ in range(10):
        # the right half is undecided between classes 1 and 2: a coin toss each frame
        logits = logits_for(truth, 4.0)
        logits[2, :, WIDTH // 2 :] = 4.0 + rng.uniform(-0.3, 0.3, (HEIGHT, WIDTH - WIDTH // 2))
        labels = argmax(logits)
        steady = stabilizer(frame, logits, labels)
        first = steady if first is None else first
        flips += 0 if previous is None else int(np.count_nonzero(labels != previous))
        previous = labels
        assert np.array_equal(steady, first)  # nothing changes on a still, undecided scene
    assert flips > 1000  # while each frame's own labels flipped a lot
    assert stabilizer.cuts == 0


def test_clear_changes_pass_at_once_no_trail_behind_a_moving_object():
    background = texture(2)
    stabilizer = MaskStabilizer()
    for step in range(8):
        frame = background.copy()
        labels = np.zeros((HEIGHT, WIDTH), np.uint8)
        left = 10 + 8 * step  # an object moving right 8 px a frame, clearly seen
        frame[30:60, left : left + 24] = texture(3, 30, 24)
        labels[30:60, left : left + 24] = 1
        steady = stabilizer(frame, logits_for(labels, 5.0), labels)
        assert np.array_equal(steady, labels), f"frame {step}: steady labels lag the object"


def test_undecided_labels_follow_the_camera():
    """A camera panning right: every pixel's evidence is weak except on the first frame,
    so the labels are carried; they must move with the picture, not stay where they were."""
    scene = texture(4, HEIGHT, WIDTH + 64)
    truth = np.zeros((HEIGHT, WIDTH + 64), np.uint8)
    truth[:, 70:] = 1  # in scene coordinates
    rng = np.random.default_rng(5)
    stabilizer = MaskStabilizer()
    for step in range(0, 9):
        shift = 4 * step
        seen = panned(truth, shift)
        # first frame: clear; later: a coin toss between the two classes everywhere
        logits = logits_for(seen, 5.0) if step == 0 else logits_for(seen, 0.0, rng, 0.1)
        steady = stabilizer(panned(scene, shift), logits, argmax(logits))
    # Only what the first frame saw has a past (the right 32 columns came in since).
    inside = steady[8:-8, 8 : WIDTH - 40]
    assert np.mean(inside == seen[8:-8, 8 : WIDTH - 40]) > 0.97  # the border moved 32 px with the picture
    assert np.mean(inside == panned(truth, 0)[8:-8, 8 : WIDTH - 40]) < 0.8  # not where it started


def test_a_cut_or_a_reset_starts_afresh_and_a_new_size_too():
    stabilizer = MaskStabilizer()
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    stabilizer(texture(6), logits_for(labels, 5.0), labels)
    undecided = logits_for(np.ones_like(labels), 0.3)  # class 1 by a hair
    held = stabilizer(texture(6), undecided, argmax(undecided))
    assert np.all(held == 0)  # same scene: the past holds
    cut = stabilizer(texture(7), undecided, argmax(undecided))
    assert np.all(cut == 1) and stabilizer.cuts == 1  # another scene: its own labels
    stabilizer(texture(7), logits_for(labels, 5.0), labels)
    stabilizer.reset()
    assert np.all(stabilizer(texture(7), undecided, argmax(undecided)) == 1)
    small = np.ones((64, 96), np.uint8)
    smaller = logits_for(small, 0.3)
    assert np.array_equal(stabilizer(texture(7, 64, 96), smaller, small), small)


def test_the_margin_is_configurable():
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    frame = texture(8)
    strict = MaskStabilizer(StabilizerConfig(margin=0.2))
    loose = MaskStabilizer(StabilizerConfig(margin=1.0))
    undecided = logits_for(np.ones_like(labels), 0.5)
    for stabilizer in (strict, loose):
        stabilizer(frame, logits_for(labels, 5.0), labels)
    assert np.all(strict(frame, undecided, argmax(undecided)) == 1)
    assert np.all(loose(frame, undecided, argmax(undecided)) == 0)
    assert loose.last_ms > 0


# ---------------------------------------------------------------- the metric


def test_flicker_follows_the_motion_and_counts_real_changes_per_class():
    scene = texture(9, HEIGHT, WIDTH + 64)
    truth = np.zeros((HEIGHT, WIDTH + 64), np.uint8)
    truth[:, 80:] = 1
    moving, blinking = FlickerMeter(CLASSES, width=WIDTH), FlickerMeter(CLASSES, width=WIDTH)
    for step in range(6):
        frame, labels = panned(scene, 4 * step), panned(truth, 4 * step)
        moving.add(frame, labels)  # labels that move with the picture: no flicker
        flashing = labels.copy()
        if step % 2:
            flashing[40:56, 10:42] = 2  # a blob that flashes on and off
        blinking.add(frame, flashing, reference=labels)
    names = ["a", "b", "c"]
    still, flashing_report = moving.report(names), blinking.report(names)
    assert still.pairs == 5 and still.flicker < 0.5 and still.counted > 60
    blob_share = 16 * 32 / (HEIGHT * WIDTH) * 100
    assert flashing_report.flicker == pytest.approx(blob_share * 100 / flashing_report.counted, rel=0.25)
    assert flashing_report.class_flicker["c"] == pytest.approx(100.0)  # never the same twice
    assert flashing_report.class_flicker["b"] < 1.0  # the blob sits on class a
    assert flashing_report.agreement == pytest.approx(100 - blob_share * 3 / 6, rel=0.02)
    assert flashing_report.judged_frames == 6


# ---------------------------------------------------------------- where users meet it


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests.synthetic import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("weights") / "slim.safetensors", input_size=(96, 128))


def write_panning_video(path, frames: int = 12):
    """A camera panning over a texture, with sensor noise: what flickers in real footage."""
    from engine.media import VideoWriter

    scene = texture(10, HEIGHT, WIDTH + 4 * frames)
    rng = np.random.default_rng(11)
    with VideoWriter(path, fps=10) as writer:
        for step in range(frames):
            noisy = panned(scene, 4 * step).astype(np.int16) + rng.integers(-12, 13, (HEIGHT, WIDTH, 3))
            writer.write(np.clip(noisy, 0, 255).astype(np.uint8))
    return path


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_every_backend_gives_logits_and_their_labels_from_one_run(checkpoint, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    from engine.runtime.segmenter import Segmenter

    segmenter = Segmenter(checkpoint, backend=backend, device="cpu", precision="fp32")
    frame = texture(12)
    logits, labels = segmenter.infer_both(frame)
    assert logits.shape == (11, *labels.shape) and logits.dtype == np.float32 and labels.dtype == np.uint8
    assert np.mean(logits.argmax(0) == labels) > 0.999
    assert np.array_equal(labels, segmenter.predict_model_labels(frame))
    assert segmenter.preprocessor.resized.shape == (*labels.shape, 3)
    stabilizer = MaskStabilizer()
    assert np.array_equal(segmenter.predict_model_labels(frame, stabilizer), labels)  # no past yet
    assert segmenter.timings.postprocess == stabilizer.last_ms > 0


def test_segment_writes_one_label_map_per_frame_steady_unless_told_and_flicker_measures_them(
    tmp_path, checkpoint, capsys
):
    import json

    import cv2

    from engine.commands.cli import main

    video = write_panning_video(tmp_path / "pan.mp4")
    folders = {}
    for name, extra in (("steady", []), ("own", ["--no-stabilize"])):
        folders[name] = tmp_path / name
        arguments = [
            "segment",
            str(video),
            "-o",
            str(folders[name]),
            "--labels",
            "--checkpoint",
            str(checkpoint),
        ]
        assert main([*arguments, "--backend", "torch", *extra]) == 0, capsys.readouterr().err
        names = sorted(path.name for path in folders[name].iterdir())
        assert names == [f"frame_{index:06d}.png" for index in range(12)]
        labels = cv2.imread(str(folders[name] / "frame_000005.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (HEIGHT, WIDTH) and labels.dtype == np.uint8 and labels.max() < 11
    first = [cv2.imread(str(folders[name] / "frame_000000.png"), cv2.IMREAD_UNCHANGED) for name in folders]
    assert np.array_equal(*first)  # the first frame has no past: the same labels
    flicker = {}
    for name, folder in folders.items():
        assert (
            main(["flicker", str(video), "--labels", str(folder), "-o", str(tmp_path / f"{name}.json")]) == 0
        )
        flicker[name] = json.loads((tmp_path / f"{name}.json").read_text())["flicker"]
    assert flicker["own"] > 1.0  # noise makes an untrained model's labels flicker
    assert flicker["steady"] < flicker["own"] * 0.8


def test_the_flicker_command_measures_both_from_one_run(tmp_path, checkpoint, capsys):
    import json

    from engine.commands.cli import main

    video = write_panning_video(tmp_path / "pan.mp4", frames=8)
    output = tmp_path / "flicker.json"
    arguments = [
        "flicker",
        str(video),
        "--checkpoint",
        str(checkpoint),
        "--backend",
        "torch",
        "-o",
        str(output),
    ]
    assert main(arguments) == 0, capsys.readouterr().err
    result = json.loads(output.read_text())
    assert result["per_frame"]["pairs"] == result["steady"]["pairs"] == 7
    assert result["reduction"] == pytest.approx(
        (1 - result["steady"]["flicker"] / result["per_frame"]["flicker"]) * 100
    )
    assert result["stabilizer_ms"]["median"] > 0
    assert "less flicker" in capsys.readouterr().out
    one_frame = write_panning_video(tmp_path / "one.mp4", frames=1)
    assert main(["flicker", str(one_frame), "--checkpoint", str(checkpoint), "--backend", "torch"]) == 1
    assert "fewer than two frames" in capsys.readouterr().err
