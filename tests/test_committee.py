"""The committee's teachers: CGNet holds the released file's layout
and loads strictly and safely; the TFLite voter's windows and votes; the committee mixes
its members per class and footage and never wakes a silent one."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.training import committee as committee_module
from engine.training.cgnet import CAMVID_MEAN, CGNet, CGNetTeacher, flush_subnormal_weights, load_cgnet
from engine.training.committee import (
    Committee,
    CommitteeSpec,
    class_weights_from_iou,
    load_camvid_teacher,
    teacher_kind,
)
from engine.training.config import read_config_file
from engine.training.data import normalize
from engine.training.edgetpu_deeplab import MissingRuntime, camvid_votes, window_starts
from engine.training.espnetv2 import CITYSCAPES_TO_CAMVID, ESPNetv2Segmentation
from tests.synthetic import calibrated_model, write_checkpoint

SHARED_TFLITE = (
    Path(__file__).resolve().parents[2]
    / "shared/teachers/edgetpu-deeplab-cityscapes/deeplab_mobilenet_edgetpu_slim_cityscapes_quant.tflite"
)


@pytest.fixture(scope="module")
def cgnet_file(tmp_path_factory):
    """A randomly initialised CGNet saved as the released file is: {"epoch", "model"}."""
    torch.manual_seed(0)
    network = CGNet().eval()
    path = tmp_path_factory.mktemp("cgnet") / "cgnet.pth"
    torch.save({"epoch": 800, "model": network.state_dict()}, path)
    return path, network


def test_cgnet_has_the_released_layout():
    network = CGNet()
    state = network.state_dict()
    assert len(state) == 498  # tensors in cgnet_m3n21_camvid.pth (its README)
    assert sum(p.numel() for p in network.parameters()) == 494_258
    assert state["level2_0.conv1x1.conv.weight"].shape == (64, 35, 3, 3)  # 32 + the injected image
    assert state["level3_0.conv1x1.conv.weight"].shape == (128, 131, 3, 3)
    assert "level3.19.F_glo.fc.2.weight" in state and "level3.20.F_glo.fc.2.weight" not in state
    assert state["classifier.0.conv.weight"].shape == (11, 256, 1, 1)


def test_cgnet_loads_strictly_and_predicts_the_same(cgnet_file):
    path, network = cgnet_file
    loaded = load_cgnet(path)
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(loaded(image), network(image), atol=1e-5)
    assert loaded(image).shape == (1, 11, 64, 96)


def test_a_cgnet_file_with_other_tensors_or_code_is_refused(tmp_path, cgnet_file, capsys):
    path, _ = cgnet_file
    state = torch.load(path, weights_only=True)
    state["model"]["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_cgnet(tmp_path / "extra.pth")

    class RunsCode:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"model": RunsCode()}))
    with pytest.raises(pickle.UnpicklingError):
        load_cgnet(tmp_path / "evil.pth")
    assert "must never run" not in capsys.readouterr().out


def test_subnormal_weights_are_flushed_without_changing_the_answer():
    torch.manual_seed(1)
    network = CGNet().eval()
    image = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        before = network(image)
        network.level1_1.conv.weight[0, 0, 0, :2] = torch.tensor([1e-40, -3e-39])
        assert flush_subnormal_weights(network) == 2
        assert network.level1_1.conv.weight[0, 0, 0, 0] == 0
        # the two flushed weights were ~1e-39: the answer cannot tell
        assert torch.allclose(network(image), before, atol=1e-4)
    assert flush_subnormal_weights(network) == 0


def test_cgnet_teacher_sees_the_frame_minus_its_own_mean():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, image):
            seen.append(image)
            return torch.zeros(image.shape[0], 11, *image.shape[2:])

    frame = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)  # RGB
    probabilities = CGNetTeacher(Recorder()).probabilities(normalize(frame)[None])
    expected = torch.from_numpy(frame.astype(np.float32) - np.float32(CAMVID_MEAN)).permute(2, 0, 1)
    assert torch.allclose(seen[0][0], expected, atol=1e-3)
    assert torch.allclose(probabilities.sum(1), torch.ones(1, 8, 12))


def test_window_starts_cover_the_side_with_the_last_flush():
    assert window_starts(513) == [0]
    assert window_starts(540) == [0, 27]
    assert window_starts(720) == [0, 207]
    assert window_starts(960) == [0, 384, 447]
    assert window_starts(300) == [0]  # shorter than a window: padded


class FakeDeepLab:
    """Left half of every window road (Cityscapes 0), right half sky (10)."""

    def __init__(self):
        self.windows = 0

    def window_labels(self, window):
        assert window.shape == (513, 513, 3) and window.dtype == np.uint8
        self.windows += 1
        ids = np.full((513, 513), 10, np.int64)
        ids[:, :256] = 0
        return ids


def test_votes_are_window_shares_in_camvid_classes():
    network = FakeDeepLab()
    votes = camvid_votes(network, np.zeros((360, 480, 3), np.uint8))
    assert votes.shape == (360, 480, 11) and network.windows == 4  # x1.5: 540x720, 2x2 windows
    assert np.allclose(votes.sum(2), 1, atol=1e-4)
    road, sky = CITYSCAPES_TO_CAMVID[0], CITYSCAPES_TO_CAMVID[10]
    assert votes[180, 10, road] > 0.99  # every window covering the left edge says road
    assert votes[180, 470, sky] > 0.99
    middle = votes[180, 240]  # x 360 at x1.5: left half of the second window, right of the first
    assert abs(middle[road] - 0.5) < 0.05 and abs(middle[sky] - 0.5) < 0.05


def test_deeplab_without_its_runtime_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    import builtins

    real_import = builtins.__import__

    def no_litert(name, *args, **kwargs):
        if name.startswith("ai_edge_litert"):
            raise ImportError("no module named ai_edge_litert")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    with pytest.raises(MissingRuntime, match=r"rtformer-studio\[training\]"):
        load_camvid_teacher("model.tflite")
    from engine.commands.cli import main

    # the command says so in one line and returns, no traceback
    assert main(["eval-teacher", "model.tflite", "--data-root", str(tmp_path)]) == 1
    assert "TFLite runtime" in capsys.readouterr().err


def test_the_real_tflite_runtime_runs_the_voter():
    pytest.importorskip("ai_edge_litert", reason="the training extra (ai-edge-litert) is not installed")
    if not SHARED_TFLITE.is_file():
        pytest.skip(f"the EdgeTPU-DeepLab file is not beside the project ({SHARED_TFLITE})")
    teacher = load_camvid_teacher(SHARED_TFLITE)
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:60] = (90, 140, 220)  # a blue sky over grey road
    frame[60:] = (100, 100, 100)
    probabilities = teacher.probabilities(normalize(frame)[None])
    assert probabilities.shape == (1, 11, 120, 160)
    assert torch.allclose(probabilities.sum(1), torch.ones(1, 120, 160), atol=1e-3)


def test_teacher_kind_is_read_from_the_file(tmp_path, cgnet_file):
    path, _ = cgnet_file
    assert teacher_kind(path) == "cgnet"
    torch.save(ESPNetv2Segmentation().state_dict(), tmp_path / "espnetv2.pth")
    assert teacher_kind(tmp_path / "espnetv2.pth") == "espnetv2"
    assert teacher_kind(tmp_path / "any.tflite") == "deeplab"
    assert teacher_kind(tmp_path / "base.safetensors") == "rtformer"


def test_our_own_checkpoint_teaches_its_softmax_and_must_speak_camvid(tmp_path):
    from engine.model.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
    from engine.model.classes import CITYSCAPES

    path = write_checkpoint(tmp_path / "tutor.safetensors")
    teacher = load_camvid_teacher(path)
    image = torch.randn(2, 3, 64, 96)
    model, _ = load_checkpoint(path)
    with torch.no_grad():
        probabilities = teacher.probabilities(image)
        assert probabilities.shape == (2, 11, 64, 96)
        assert torch.allclose(probabilities, model(image).softmax(1), atol=1e-6)
        assert torch.allclose(teacher(image).exp(), probabilities, atol=1e-5)
    cityscapes = calibrated_model(num_classes=CITYSCAPES.num_classes)
    info = CheckpointInfo.for_classes(cityscapes.config, CITYSCAPES, input_size=(64, 96))
    other = save_checkpoint(tmp_path / "cityscapes.safetensors", cityscapes, info)
    with pytest.raises(ValueError, match="not CamVid's classes"):
        load_camvid_teacher(other)


def test_class_weights_sum_to_one_per_class_and_favour_the_better_member():
    weights = class_weights_from_iou({"a": [90, 20, 0], "b": [30, 60, 0]}, power=2.0)
    totals = np.asarray(weights["a"]) + np.asarray(weights["b"])
    assert np.allclose(totals, 1, atol=1e-3)
    assert weights["a"][0] == pytest.approx(0.9, abs=1e-3)  # 81 / (81 + 9)
    assert weights["b"][1] == pytest.approx(0.9, abs=1e-3)
    assert weights["a"][2] == weights["b"][2] == 0.5  # nobody knows the class: equal say
    assert class_weights_from_iou({"a": [90], "b": [30]}, power=0.0) == {"a": [0.5], "b": [0.5]}


class OneClass(torch.nn.Module):
    """A stand-in teacher that puts all its probability on one class."""

    def __init__(self, camvid_class: int):
        super().__init__()
        self.camvid_class = camvid_class

    def probabilities(self, image):
        out = torch.zeros(image.shape[0], 11, *image.shape[2:])
        out[:, self.camvid_class] = 1.0
        return out


def fake_committee(monkeypatch, weights) -> tuple[Committee, list[str]]:
    loaded = []
    answers = {"espnetv2": 0, "cgnet": 1, "deeplab": 5}  # Sky, Building, Tree

    def load(path, kind=None):
        loaded.append(kind)
        return OneClass(answers[kind])

    monkeypatch.setattr(committee_module, "load_camvid_teacher", load)
    spec = CommitteeSpec({"espnetv2": "e.pth", "cgnet": "c.pth", "deeplab": "d.tflite"}, weights)
    return Committee(spec), loaded


def test_the_committee_mixes_members_per_class(monkeypatch):
    weights = {"camvid": {"espnetv2": [0.2] * 11, "cgnet": [0.8] * 11, "deeplab": [0.0] * 11}}
    weights["camvid"]["espnetv2"][0] = 0.9  # believe ESPNetv2 about Sky
    committee, loaded = fake_committee(monkeypatch, weights)
    mixed = committee.probabilities(torch.zeros(1, 3, 4, 6))
    assert torch.allclose(mixed.sum(1), torch.ones(1, 4, 6))
    assert mixed[0, 0, 0, 0] == pytest.approx(0.9 / 1.7) and mixed[0, 1, 0, 0] == pytest.approx(0.8 / 1.7)
    assert sorted(loaded) == ["cgnet", "espnetv2"]  # DeepLab is silent here: never loaded
    assert committee(torch.zeros(1, 3, 4, 6)).exp().allclose(mixed, atol=1e-6)


def test_the_committee_speaks_per_footage(monkeypatch):
    weights = {
        "camvid-trained": {"espnetv2": [1.0] * 11, "cgnet": [0.0] * 11},  # CGNet memorised these
        "other": {"deeplab": [1.0] * 11},
    }
    committee, loaded = fake_committee(monkeypatch, weights)
    image = torch.zeros(1, 3, 2, 2)
    assert committee.probabilities(image, "camvid-trained").argmax(1).eq(0).all()
    assert committee.probabilities(image, "other").argmax(1).eq(5).all()
    assert "cgnet" not in loaded
    with pytest.raises(ValueError, match="no committee member speaks"):
        committee.probabilities(image, "camvid")


def test_a_committee_file_round_trips_and_bad_ones_are_refused(tmp_path):
    spec = CommitteeSpec({"cgnet": "c.pth"}, {"camvid": {"cgnet": [1.0] * 11}}, {"how": "a test"})
    spec.to_file(tmp_path / "committee.json")
    again = CommitteeSpec.from_file(tmp_path / "committee.json")
    assert again == spec
    with pytest.raises(ValueError, match="unknown committee members"):
        CommitteeSpec({"segformer": "s.pth"}, {})
    with pytest.raises(ValueError, match="unknown footage kind"):
        CommitteeSpec({"cgnet": "c.pth"}, {"sunny": {"cgnet": [1.0] * 11}})
    with pytest.raises(ValueError, match="not members"):
        CommitteeSpec({"cgnet": "c.pth"}, {"camvid": {"deeplab": [1.0] * 11}})


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("committee*.json")), ids=lambda p: p.name)
def test_shipped_committees_give_each_class_one_whole_vote_per_footage(path):
    """A class's weights sum to 1 over the members of a footage's table (the committee's
    rule: they choose whom to believe, never how much to believe the class)."""
    spec = CommitteeSpec.from_file(path)
    assert all(isinstance(note, str) for note in spec.notes.values())
    for footage, table in spec.weights.items():
        rows = torch.tensor([table[member] for member in table])
        assert rows.shape == (len(table), 11), (footage, rows.shape)
        assert rows.min() >= 0
        torch.testing.assert_close(rows.sum(dim=0), torch.ones(11, dtype=rows.dtype), atol=1e-3, rtol=0)


def test_every_recipes_committee_is_a_file_in_configs():
    teachers = {read_config_file(recipe).get("teacher", "") for recipe in CONFIGS.glob("*.toml")}
    committees = {teacher for teacher in teachers if teacher.endswith(".json")}
    assert committees and all((CONFIGS.parent / teacher).is_file() for teacher in committees)


def test_eval_teacher_command_evaluates_cgnet(tmp_path, cgnet_file, capsys):
    import cv2

    from engine.commands.cli import main

    root = tmp_path / "CamVid"
    for folder in ("test", "testannot"):
        (root / folder).mkdir(parents=True)
    cv2.imwrite(str(root / "test" / "f0.png"), np.full((48, 64, 3), 90, np.uint8))
    cv2.imwrite(str(root / "testannot" / "f0.png"), np.full((48, 64), 3, np.uint8))
    (root / "test.txt").write_text("test/f0.png testannot/f0.png\n")
    path, _ = cgnet_file
    assert main(["eval-teacher", str(path), "--data-root", str(root), "-o", str(tmp_path / "c.json")]) == 0
    assert "mIoU" in capsys.readouterr().out and (tmp_path / "c.json").is_file()
    assert main(["eval-teacher", "--data-root", str(root)]) != 0  # neither a teacher nor a committee
