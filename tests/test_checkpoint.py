"""The safetensors checkpoint: round trip, metadata and clear errors."""

import json

import pytest
import torch
from safetensors.torch import save_file

from engine.model.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from engine.model.classes import CAMVID
from engine.model.rtformer import build_model
from tests.synthetic import calibrated_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = calibrated_model("slim", num_classes=CAMVID.num_classes)
    info = CheckpointInfo.for_classes(
        model.config, CAMVID, input_size=(360, 480), metrics={"test_miou": 12.5}, extra={"command": "x"}
    )
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "slim.safetensors", model, info)
    return model, path


def test_round_trip_gives_the_same_logits(saved):
    model, path = saved
    loaded, _ = load_checkpoint(path)
    assert not loaded.training
    images = torch.randn(1, 3, 96, 128)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)


def test_half_storage_halves_the_file_and_loads_as_float32(saved, tmp_path):
    model, path = saved
    info = read_checkpoint_info(path)
    half = save_checkpoint(tmp_path / "half.safetensors", model, info, half=True)
    assert half.stat().st_size < 0.55 * path.stat().st_size
    loaded, loaded_info = load_checkpoint(half)
    assert loaded_info == info
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    images = torch.randn(1, 3, 96, 128)
    with torch.inference_mode():
        full, rounded = model(images), loaded(images)
    assert (full.argmax(1) == rounded.argmax(1)).float().mean() > 0.99
    torch.testing.assert_close(rounded, full, rtol=0.05, atol=0.05)


def test_metadata_describes_the_model(saved):
    _, path = saved
    info = read_checkpoint_info(path)
    assert info.variant == "slim" and info.dataset == "camvid"
    assert info.config == build_model("slim", num_classes=11, drop_path_rate=0.0).config
    assert info.class_names == list(CAMVID.names)
    assert info.palette[4] == [60, 40, 222]
    assert info.input_size == (360, 480)
    assert info.mean == pytest.approx((0.485, 0.456, 0.406))
    assert info.metrics == {"test_miou": 12.5} and info.extra == {"command": "x"}


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_corrupt_file_is_reported(tmp_path, saved):
    _, path = saved
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a checkpoint" * 50)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(garbage)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)


def test_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not an RTFormer Studio checkpoint"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_variant_name_the_tensors(tmp_path):
    base = build_model("base", num_classes=11)
    slim_info = CheckpointInfo.for_classes(build_model("slim", num_classes=11).config, CAMVID)
    path = tmp_path / "mislabelled.safetensors"
    tensors = {k: v for k, v in base.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(tensors, str(path), metadata=slim_info.to_metadata())
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "does not fit RTFormer-slim" in message
    assert "shape of stem.0.weight: checkpoint (64, 3, 3, 3), model (32, 3, 3, 3)" in message
    assert "unexpected: block5.injection" not in message  # base has no layer5 injection
    assert "missing: block5.injection.0.weight" in message


def test_broken_metadata_is_reported(tmp_path, saved):
    model, _ = saved
    metadata = CheckpointInfo.for_classes(model.config, CAMVID).to_metadata()
    metadata["class_names"] = json.dumps(["only one"])
    path = tmp_path / "broken.safetensors"
    tensors = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="11 classes in the config but 1 names"):
        read_checkpoint_info(path)
