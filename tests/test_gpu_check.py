"""tools/gpu_check.py, the one prepared call for a lent GPU, dry-run on the CPU: a lent
machine gives this project about 15 minutes a session, rarely, so a fault in the script
must show here, not there."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.model.checkpoint import load_checkpoint
from engine.training.data import camvid
from tests.synthetic import import_tool, make_camvid, write_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    return import_tool("gpu_check")


def run_tool(*args: str, timeout: float) -> subprocess.CompletedProcess:
    command = [sys.executable, "tools/gpu_check.py", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_pack_writes_jpeg_camvid_that_the_dataset_reads_with_the_labels_unchanged(tmp_path):
    source = make_camvid(tmp_path / "CamVid", counts={"train": 3, "val": 2, "test": 1})
    result = run_tool("pack", str(source), str(tmp_path / "packed"), timeout=120)
    assert result.returncode == 0, result.stderr

    for split, count in (("train", 3), ("val", 2)):
        packed, original = camvid(tmp_path / "packed", split), camvid(source, split)
        assert len(packed) == len(original) == count
        for ours, theirs in zip(packed.samples, original.samples, strict=True):
            assert ours.image.suffix == ".jpg"
            assert np.array_equal(cv2.imread(str(ours.label), 0), cv2.imread(str(theirs.label), 0))
    assert not (tmp_path / "packed" / "test").exists()  # the test split stays behind


def test_the_distill_recipe_follows_the_shipped_recipes_distrust_rules(gpu_check, tmp_path):
    from engine.training.config import read_config_file

    for variant in gpu_check.VARIANTS:
        fields = gpu_check.recipe_fields(variant, "distill", str(tmp_path))
        shipped = read_config_file(ROOT / "configs" / "distill-drive-distrust.toml")
        assert fields["teacher_targets"] == "online"
        assert fields["teacher"] == str(tmp_path / gpu_check.DISTILL_TEACHER)
        assert fields["unlabelled"] == [str(tmp_path / "unlabelled")]
        assert fields["distill_dark_distrust"] == shipped["distill_dark_distrust"] == ["Car"]
        for name, weight in shipped["distill_class_weights"].items():
            assert fields["distill_class_weights"][name] == weight
        assert fields["batch_size"] == 16 and fields["crop_size"] == [360, 480]
    with pytest.raises(ValueError, match="camvid or distill"):
        gpu_check.recipe_fields("slim", "imagenet", "")


def test_weights_travel_in_parts_and_join_back_as_float32(gpu_check, tmp_path, monkeypatch):
    weights = write_checkpoint(tmp_path / "trained.safetensors")
    monkeypatch.setattr(gpu_check, "PART_BYTES", 4096)  # several parts from a tiny model
    parts = gpu_check.half_precision_parts(weights, tmp_path, "slim")
    assert len(parts) > 2
    assert all((tmp_path / name).stat().st_size <= 4096 for name in parts)

    gpu_check.join(tmp_path, "slim", tmp_path / "joined.safetensors")
    original, info = load_checkpoint(weights)
    joined, joined_info = load_checkpoint(tmp_path / "joined.safetensors")
    assert joined_info.config == info.config
    for name, tensor in joined.state_dict().items():
        assert tensor.dtype == original.state_dict()[name].dtype
        torch.testing.assert_close(tensor, original.state_dict()[name].half().to(tensor.dtype))


def test_a_dry_run_on_the_cpu_trains_and_hands_back_the_weights_and_logs(tmp_path):
    """The whole call as the device would run it (training only), at the smallest budget it
    allows: about 75 s of it are the margins kept for a GPU machine's start and hand-back."""
    data = tmp_path / "packed"
    assert run_tool("pack", str(make_camvid(tmp_path / "CamVid")), str(data), timeout=120).returncode == 0
    out = tmp_path / "out"
    result = run_tool(
        "--data", str(data), "--out", str(out), "--device", "cpu", "--no-checks",
        "--variants", "slim", "--batch-size", "2", "--seconds", "100", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads((out / "gpu_report.json").read_text())
    assert report["training"]["slim"]["returncode"] == 0
    assert report["training"]["slim_settings"] == {"batch_size": 2}
    joined = tmp_path / "slim.safetensors"
    assert run_tool("join", str(out), "slim", str(joined), timeout=120).returncode == 0
    _, info = load_checkpoint(joined)
    assert info.config.name == "slim" and info.config.num_classes == 11
    assert info.metrics["step"] >= 1  # it trained
    assert info.extra["train_config"]["device"] == "cpu"
    with tarfile.open(out / "logs.tar.gz") as archive:
        console = archive.extractfile("slim-gpu-train-slim.txt").read().decode()
    assert "Traceback" not in console
