"""The generalization probe: agreement with a reference on unlabelled frames."""

import json

import cv2
import numpy as np
import pytest
import torch

from engine.commands.cli import main
from engine.model.classes import CAMVID
from engine.training.espnetv2 import CamVidTeacher, ESPNetv2Segmentation
from engine.training.probe import list_frames, probe, report_from_confusion
from tests.synthetic import synthetic_frame, write_checkpoint

NAMES = CAMVID.names
SKY, BUILDING, ROAD, TREE, CAR = (NAMES.index(n) for n in ("Sky", "Building", "Road", "Tree", "Car"))


def test_report_figures_from_a_known_confusion():
    confusion = np.zeros((11, 11), np.int64)
    confusion[SKY, SKY] = 20  # reference Sky: 20 called Sky, 80 called Building
    confusion[SKY, BUILDING] = 80
    confusion[ROAD, ROAD] = 100
    confusion[TREE, TREE] = 50
    confusion[CAR, CAR] = 50
    report = report_from_confusion(confusion, NAMES, 1, "ours", "teacher")
    assert report.pixel_agreement == pytest.approx(220 / 300 * 100)
    assert report.sky_called_sky == pytest.approx(20.0)
    assert report.class_iou["Sky"] == pytest.approx(20.0)
    assert report.class_iou["Building"] == pytest.approx(0.0)
    assert report.key_class_iou == pytest.approx((20 + 100 + 100 + 100) / 4)


def test_probe_compares_every_frame_and_skips_pixels_without_a_reference(tmp_path):
    for index in range(3):
        cv2.imwrite(str(tmp_path / f"frame_{index}.png"), synthetic_frame(40, 60, seed=index))
    (tmp_path / "notes.txt").write_text("not an image")
    frames = list_frames(tmp_path)
    assert [f.name for f in frames] == ["frame_0.png", "frame_1.png", "frame_2.png"]

    def reference(frame):
        labels = np.full(frame.shape[:2], SKY, np.uint8)
        labels[20:] = ROAD
        labels[:, :10] = 255  # no answer there
        return labels

    def ours(frame):  # right about the road, calls the sky Building
        labels = np.full(frame.shape[:2], BUILDING, np.uint8)
        labels[20:] = ROAD
        return labels

    seen = []
    report = probe(
        ours, reference, frames, NAMES, overlays=lambda *args: seen.append(args[0]), progress=False
    )
    assert report.num_images == 3 and seen == frames
    assert report.pixel_agreement == pytest.approx(50.0)
    assert report.sky_called_sky == 0.0
    assert report.class_iou["Road"] == pytest.approx(100.0)


def test_teacher_labels_leave_its_background_out():
    class Constant(torch.nn.Module):
        def __init__(self, channel: int):
            super().__init__()
            self.channel = channel

        def forward(self, image):
            logits = torch.zeros(image.shape[0], 20, *image.shape[2:])
            logits[:, self.channel] = 5.0
            return logits

    image = torch.zeros(1, 3, 32, 48)
    assert (CamVidTeacher(Constant(10), scale=1.0).labels(image) == SKY).all()  # Cityscapes sky
    assert (CamVidTeacher(Constant(19), scale=1.0).labels(image) == 255).all()  # background


def test_probe_command_writes_json_and_side_by_side_overlays(tmp_path, capsys):
    torch.manual_seed(0)
    teacher = tmp_path / "espnetv2.pth"
    torch.save(ESPNetv2Segmentation().state_dict(), teacher)
    checkpoint = write_checkpoint(tmp_path / "slim.safetensors")
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(2):
        cv2.imwrite(str(frames / f"f{index}.jpg"), synthetic_frame(72, 128, seed=index))
    output = tmp_path / "probe.json"
    main([
        "probe", str(checkpoint), "--frames", str(frames), "--teacher", str(teacher), "--backend",
        "onnxruntime", "-o", str(output), "--overlays", str(tmp_path / "overlays"),
    ])  # fmt: skip
    report = json.loads(output.read_text())
    assert report["num_images"] == 2 and 0 <= report["pixel_agreement"] <= 100
    assert set(report["class_iou"]) == set(NAMES)
    overlay = cv2.imread(str(tmp_path / "overlays" / "f0.png"))
    assert overlay.shape == (72, 256, 3)  # ours beside the reference
    assert "pixels agreeing" in capsys.readouterr().out


def test_probe_command_explains_a_missing_folder(tmp_path, capsys):
    teacher = tmp_path / "espnetv2.pth"
    torch.save(ESPNetv2Segmentation().state_dict(), teacher)
    checkpoint = write_checkpoint(tmp_path / "slim.safetensors")
    assert (
        main(["probe", str(checkpoint), "--frames", str(tmp_path / "nowhere"), "--teacher", str(teacher)])
        == 1
    )
    assert "probe folder not found" in capsys.readouterr().err
