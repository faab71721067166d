"""Model artefacts: cache names, concurrent writers, repair of damaged files only."""

import logging
import shutil
import threading
import time

import cv2
import pytest

import engine.runtime.artifacts as artifacts
from engine.runtime.artifacts import (
    FP32_KIND,
    artifact_path,
    calibration_key,
    int8_kind,
    int8_weight_bits,
    opened_with_repair,
)
from engine.runtime.segmenter import Segmenter
from tests.synthetic import synthetic_frame, write_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("artefacts") / "slim.safetensors")


def test_the_cache_name_follows_weights_graph_version_and_calibration(tmp_path, checkpoint, monkeypatch):
    path = artifact_path(checkpoint, FP32_KIND)
    assert f".g{artifacts.GRAPH_VERSION}." in path.name and path.parent.name == "onnx"
    monkeypatch.setattr(artifacts, "GRAPH_VERSION", artifacts.GRAPH_VERSION + 1)
    assert artifact_path(checkpoint, FP32_KIND) != path  # a new graph never reuses an old cache
    retrained = tmp_path / "slim.safetensors"
    retrained.write_bytes(checkpoint.read_bytes()[:-1] + b"\x01")
    assert artifact_path(retrained, FP32_KIND) != artifact_path(checkpoint, FP32_KIND)
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, seed in ((first, 0), (second, 1)):
        folder.mkdir()
        cv2.imwrite(str(folder / "0.png"), synthetic_frame(seed=seed))
    assert calibration_key(first) != calibration_key(second)
    assert calibration_key(first) != calibration_key(first, count=8)


def test_concurrent_writers_never_see_each_others_half_files(tmp_path):
    target = tmp_path / "model.onnx"
    seen_names = []

    def slow_write(temporary):
        seen_names.append(temporary.name)
        temporary.write_bytes(b"half")
        time.sleep(0.2)
        temporary.write_bytes(b"whole")

    writers = [
        threading.Thread(target=artifacts.write_atomically, args=(target, slow_write)) for _ in range(2)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert len(set(seen_names)) == 2  # unique temporary names
    assert target.read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary left behind


def test_a_runtime_failure_keeps_a_valid_cache(tmp_path, checkpoint):
    local = shutil.copy(checkpoint, tmp_path / "valid.safetensors")
    path = artifacts.fp32_model(local)

    def provider_fails(path):
        raise RuntimeError("CUDA provider: out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        opened_with_repair(local, "fp32", None, provider_fails)
    assert path.is_file() and not artifacts.is_damaged(path)


def test_a_damaged_int8_cache_is_rebuilt(tmp_path, checkpoint, caplog):
    local = shutil.copy(checkpoint, tmp_path / "int8.safetensors")
    frames = tmp_path / "frames"
    frames.mkdir()
    for seed in range(2):
        cv2.imwrite(str(frames / f"{seed}.png"), synthetic_frame(seed=seed))
    cached = artifact_path(local, int8_kind(int8_weight_bits()), key=calibration_key(frames))
    Segmenter(local, backend="onnxruntime", precision="int8", calibration=frames)
    cached.write_bytes(cached.read_bytes()[:1000])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING, "rtformer.engine"):
        segmenter = Segmenter(local, backend="onnxruntime", precision="int8", calibration=frames)
    assert "is damaged" in caplog.text
    assert segmenter.predict(synthetic_frame()).shape == (120, 160)
    assert not artifacts.is_damaged(cached)


def test_int8_models_of_each_weight_width_are_separate_files_with_that_range(
    tmp_path, checkpoint, monkeypatch
):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "0.png"), synthetic_frame(seed=0))
    largest = {}
    for bits in (7, 8):
        monkeypatch.setenv("RTFORMER_INT8_WEIGHT_BITS", str(bits))
        path = artifacts.int8_model(checkpoint, frames)
        assert path.name.endswith(f".deploy-int8w{bits}.{calibration_key(frames)}.onnx")
        weights = [
            numpy_helper.to_array(tensor)
            for tensor in onnx.load(str(path)).graph.initializer
            if tensor.data_type == onnx.TensorProto.INT8 and tensor.dims
        ]
        largest[bits] = max(int(np.abs(w.astype(int)).max()) for w in weights)
    # Per-channel symmetric: each channel's largest weight maps to the top of the range.
    assert largest[7] <= 64 and largest[8] == 127
