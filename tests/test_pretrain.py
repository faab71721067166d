"""Backbone pre-training: the image-folder reader, learning, resume, and loading into the segmenter."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.commands.cli import main
from engine.model.rtformer import build_model
from engine.training.data import DatasetError
from engine.training.pretrain import CLASSIFIER_PREFIX, ImageFolder, PretrainConfig, pretrain
from engine.training.train import load_backbone
from tests.synthetic import TINY_MODEL, write_png

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def make_image_folder(root, per_class=None, seed=0):
    """One folder per class; each class's images are noise around its own colour."""
    per_class = per_class or {"train": 8, "val": 4}
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for name, colour in COLOURS.items():
            for index in range(count):
                image = np.clip(rng.normal(colour, 25, (80, 96, 3)), 0, 255).astype(np.uint8)
                write_png(root / split / name / f"{index}.png", image, rgb=True)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imagenet"))


def tiny(folder, output, **values) -> PretrainConfig:
    return PretrainConfig(
        model_overrides=dict(TINY_MODEL),
        data_root=str(folder),
        output=str(output),
        epochs=6,
        batch_size=6,
        image_size=64,
        lr=4e-3,
        warmup_epochs=1,
        workers=0,
    ).replace(**values)


def test_pretraining_learns_and_the_backbone_loads_into_the_segmenter(folder, tmp_path):
    metrics = pretrain(tiny(folder, tmp_path / "run"))
    assert metrics["epoch"] == 6
    assert metrics["val_top1"] > 100 / 3 + 20  # well above chance on three colour classes

    backbone = load_file(tmp_path / "run" / "backbone.safetensors")
    segmenter = build_model("slim", num_classes=11, **TINY_MODEL)
    copied = load_backbone(segmenter, tmp_path / "run" / "backbone.safetensors")
    expected = [n for n in segmenter.state_dict() if not n.startswith(("head.", "aux_head."))]
    assert sorted(copied) == sorted(expected)  # every backbone tensor, no head
    assert not any(name.startswith(CLASSIFIER_PREFIX) for name in copied)
    assert any(name.startswith(CLASSIFIER_PREFIX) for name in backbone)
    assert torch.equal(segmenter.state_dict()["stem.0.weight"], backbone["stem.0.weight"])


def test_pretraining_resumes_at_the_next_epoch(folder, tmp_path):
    pretrain(tiny(folder, tmp_path, epochs=2))
    pretrain(tiny(folder, tmp_path, epochs=3, resume=True))
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_cli_pretrain_writes_a_backbone(folder, tmp_path, capsys):
    output = tmp_path / "cli"
    code = main(
        [
            "pretrain",
            "--data-root",
            str(folder),
            "--output",
            str(output),
            "--epochs",
            "1",
            "--batch-size",
            "6",
            "--image-size",
            "64",
            "--workers",
            "0",
            "--model-overrides",
            json.dumps(TINY_MODEL),
        ]
    )
    assert code in (0, None)
    assert (output / "backbone.safetensors").is_file()
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epoch"] == 1


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="train folder not found"):
        ImageFolder(tmp_path, "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        ImageFolder(tmp_path, "train")
    (tmp_path / "train" / "cats").mkdir()
    with pytest.raises(DatasetError, match="cats has no images"):
        ImageFolder(tmp_path, "train")
    make_image_folder(tmp_path / "ok", {"train": 1, "val": 1})
    write_png(tmp_path / "ok" / "val" / "zebra" / "0.png", np.zeros((64, 64, 3), np.uint8), rgb=True)
    with pytest.raises(DatasetError, match="not in the training set: zebra"):
        ImageFolder(tmp_path / "ok", "val", ImageFolder(tmp_path / "ok", "train").classes)
    shutil.rmtree(tmp_path / "ok" / "val" / "zebra")
    broken = tmp_path / "ok" / "train" / "red" / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"broken\.png"):
        pretrain(tiny(tmp_path / "ok", tmp_path / "out", batch_size=2, epochs=1))
