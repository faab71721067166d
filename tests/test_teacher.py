"""The ESPNetv2 teacher: our module holds the released file's tensors
and loads strictly and safely; the CamVid view merges Cityscapes probabilities."""

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.training.espnetv2 import (
    CITYSCAPES_TO_CAMVID,
    TEACHER_CHANNELS,
    CamVidTeacher,
    ESPNetv2Segmentation,
    load_espnetv2,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A randomly initialised network saved as the released file is: a plain state dict."""
    torch.manual_seed(0)
    network = ESPNetv2Segmentation().eval()
    path = tmp_path_factory.mktemp("teacher") / "espnetv2.pth"
    torch.save(network.state_dict(), path)
    return path, network


def test_the_module_has_the_released_layout():
    state = ESPNetv2Segmentation().state_dict()
    assert len(state) == 526  # tensors in espnetv2_s_2.0_city_1024x512.pth
    learnable = sum(p.numel() for p in ESPNetv2Segmentation().parameters())
    assert learnable == 789_242
    assert state["base_net.level2_0.eesp.proj_1x1.conv.weight"].shape == (24, 8, 1, 1)  # grouped reduction
    assert state["bu_dec_l4.merge_layer.3.weight"].shape == (TEACHER_CHANNELS, 10, 1, 1)


def test_the_file_loads_strictly_and_predicts_the_same(teacher_file):
    path, network = teacher_file
    loaded = load_espnetv2(path)
    image = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(loaded(image), network(image))
        assert loaded(image).shape == (1, TEACHER_CHANNELS, 96, 128)


def test_a_file_with_other_tensors_or_code_is_refused(tmp_path, teacher_file, capsys):
    path, _ = teacher_file
    state = torch.load(path, weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_espnetv2(tmp_path / "extra.pth")

    class RunsCode:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"weights": RunsCode()}))
    with pytest.raises(pickle.UnpicklingError):
        load_espnetv2(tmp_path / "evil.pth")
    assert "must never run" not in capsys.readouterr().out


def test_eval_teacher_command_on_a_tiny_camvid(tmp_path, teacher_file, capsys):
    import cv2
    import numpy as np

    from engine.commands.cli import main

    root = tmp_path / "CamVid"
    for folder in ("test", "testannot"):
        (root / folder).mkdir(parents=True)
    lines = []
    for index in range(2):
        cv2.imwrite(str(root / "test" / f"f{index}.png"), np.full((48, 64, 3), 90 + index, np.uint8))
        cv2.imwrite(str(root / "testannot" / f"f{index}.png"), np.full((48, 64), 3, np.uint8))
        lines.append(f"test/f{index}.png testannot/f{index}.png")
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    path, _ = teacher_file
    assert main(["eval-teacher", str(path), "--data-root", str(root), "-o", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and (tmp_path / "t.json").is_file()


def test_sides_must_be_multiples_of_16():
    with pytest.raises(ValueError, match="multiples of 16"):
        ESPNetv2Segmentation()(torch.randn(1, 3, 90, 128))


class FixedLogits(torch.nn.Module):
    """A stand-in network whose probabilities are known: all mass on one Cityscapes id."""

    def __init__(self, channel: int):
        super().__init__()
        self.channel = channel

    def forward(self, image):
        logits = torch.full((image.shape[0], TEACHER_CHANNELS, *image.shape[2:]), -30.0)
        logits[:, self.channel] = 30.0
        return logits


@pytest.mark.parametrize("cityscapes", range(TEACHER_CHANNELS))
def test_camvid_view_sums_cityscapes_probabilities_per_class(cityscapes):
    teacher = CamVidTeacher(FixedLogits(cityscapes), scale=1.0)
    probabilities = teacher.probabilities(torch.zeros(1, 3, 64, 96))
    assert probabilities.shape == (1, 11, 64, 96)
    if cityscapes < len(CITYSCAPES_TO_CAMVID):
        assert probabilities[0, CITYSCAPES_TO_CAMVID[cityscapes]].min() > 0.999
    else:  # the background channel goes to no CamVid class
        assert probabilities.sum(1).max() < 1e-6


def test_the_teacher_input_is_scaled_to_multiples_of_32():
    seen = []

    class Recorder(FixedLogits):
        def forward(self, image):
            seen.append(tuple(image.shape[2:]))
            return super().forward(image)

    teacher = CamVidTeacher(Recorder(3), scale=2.0)
    assert teacher(torch.zeros(1, 3, 360, 480)).shape == (1, 11, 360, 480)
    assert seen == [(704, 960)]  # the README's 54.0 mIoU setting for CamVid


def test_the_app_and_the_runtime_never_import_a_teacher():
    code = (
        "import sys, app.window, engine.runtime.segmenter, engine.commands.segment_files; "
        "print(any(m in sys.modules for m in ('engine.training.espnetv2', 'engine.training.cgnet', "
        "'engine.training.committee', 'engine.training.edgetpu_deeplab', 'ai_edge_litert')))"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert finished.stdout.strip() == "False", finished.stderr[-1000:]
