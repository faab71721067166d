"""The Segmenter: stages, backends, fallbacks, INT8 and bad inputs."""

import logging
import shutil

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.model.checkpoint import CheckpointError, load_checkpoint
from engine.resources import user_cache_dir
from engine.runtime.artifacts import FP32_KIND, artifact_path, calibration_key, int8_kind, int8_weight_bits
from engine.runtime.segmenter import (
    BackendError,
    Preprocessor,
    Segmenter,
    colorize,
    labels_at,
    labels_from_logits,
    model_input_size,
    overlay,
    palette_lut,
    render,
    scaled_input_size,
)
from engine.training.data import normalize
from tests.synthetic import synthetic_frame, write_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("weights") / "slim.safetensors")


def test_input_size_keeps_the_aspect_ratio_in_multiples_of_8():
    assert model_input_size((720, 1280), (360, 480)) == (272, 480)
    assert model_input_size((360, 480), (360, 480)) == (360, 480)  # the size CamVid was trained at
    assert model_input_size((100, 130), None) == (96, 128)
    assert model_input_size((20, 20), None) == (64, 64)


def test_a_smaller_input_scale_feeds_the_model_fewer_pixels_and_still_labels_the_whole_frame(
    checkpoint, tmp_path
):
    assert scaled_input_size((360, 480), 0.8) == (288, 384)
    assert scaled_input_size((360, 480), 2 / 3) == (240, 320)
    with pytest.raises(ValueError, match="outside"):
        scaled_input_size((360, 480), 0.0)
    frame = synthetic_frame(128, 160)
    full, smaller = Segmenter(checkpoint, "torch"), Segmenter(checkpoint, "torch", input_scale=0.75)
    assert full.predict(frame).shape == smaller.predict(frame).shape == (128, 160)
    assert full.preprocessor.size == (128, 160) and smaller.preprocessor.size == (96, 120)
    assert tuple(smaller.infer_labels(synthetic_frame(256, 320)).shape[-2:]) == (
        96,
        120,
    )  # fitted into the box
    frame_sized = write_checkpoint(tmp_path / "any-size.safetensors", input_size=None)
    with pytest.raises(ValueError, match="no input size of its own"):
        Segmenter(frame_sized, "torch", input_scale=0.8)


def test_preprocess_normalises_like_training_and_reuses_buffers():
    frame = synthetic_frame(96, 128)
    preprocessor = Preprocessor(None, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    blob = preprocessor(frame)
    expected = normalize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).numpy()
    np.testing.assert_allclose(blob[0], expected, atol=1e-5)
    assert preprocessor(synthetic_frame(96, 128, seed=1)) is blob  # same buffer


def test_colorize_and_overlay():
    palette = [(255, 0, 0), (0, 255, 0)]  # RGB
    labels = np.array([[0, 1], [1, 0]], np.uint8)
    mask = colorize(labels, palette)
    assert mask[0, 0].tolist() == [0, 0, 255] and mask[0, 1].tolist() == [0, 255, 0]  # BGR
    frame = np.full((2, 2, 3), 100, np.uint8)
    assert (overlay(frame, labels, palette, 0.0) == frame).all()
    assert (overlay(frame, labels, palette, 1.0) == mask).all()
    assert render("side-by-side", frame, labels, palette).shape == (2, 4, 3)
    # Labels at the model's size are scaled to the frame with nearest neighbour.
    big = np.zeros((4, 4, 3), np.uint8)
    assert (
        overlay(big, labels, palette, 1.0) == colorize(np.kron(labels, np.ones((2, 2), np.uint8)), palette)
    ).all()
    assert (palette_lut(palette)[2:] == 0).all()


def test_torch_backend_predicts_labels_at_the_frame_size(checkpoint):
    segmenter = Segmenter(checkpoint, backend="torch", device="cpu")
    assert segmenter.description == "PyTorch CPU fp32"
    frame = synthetic_frame(120, 160)
    labels = segmenter.predict(frame)
    assert labels.shape == (120, 160) and labels.dtype == np.uint8
    assert labels.max() < 11 and len(np.unique(labels)) > 1
    timings = segmenter.timings
    assert timings.preprocess > 0 and timings.inference > 0 and timings.postprocess > 0
    # Exact path: the model's logits at its input size, resized bilinearly, then argmax.
    model, _ = load_checkpoint(checkpoint)
    with torch.inference_mode():
        logits = model(torch.from_numpy(segmenter.preprocessor(frame).copy()))
        expected = F.interpolate(logits, size=(120, 160), mode="bilinear").argmax(1)[0].numpy()
    assert (segmenter.predict(frame, exact=True) == expected).mean() > 0.999


def test_onnxruntime_matches_torch_and_caches_the_export(checkpoint, caplog):
    caplog.set_level(logging.INFO, "rtformer.engine")
    frame = synthetic_frame(128, 160, seed=2)
    onnx = Segmenter(checkpoint, backend="onnxruntime", device="cpu")
    assert onnx.description == "ONNX Runtime CPU fp32"
    cached = artifact_path(checkpoint, FP32_KIND)
    assert cached.is_file() and cached.parent == user_cache_dir() / "onnx"  # never beside the weights
    torch_labels = Segmenter(checkpoint, backend="torch", device="cpu").predict(frame)
    assert (onnx.predict(frame) == torch_labels).mean() > 0.999
    modified = cached.stat().st_mtime_ns
    Segmenter(checkpoint, backend="onnxruntime")
    assert cached.stat().st_mtime_ns == modified  # reused, not exported again


def test_onnxruntime_fast_path_takes_the_graphs_labels(checkpoint):
    segmenter = Segmenter(checkpoint, backend="onnxruntime", device="cpu")
    frame = synthetic_frame(120, 160, seed=5)
    labels = segmenter.infer_labels(frame)  # the graph's uint8 argmax, no logits copied out
    logits = segmenter.infer_logits(frame)
    assert labels.dtype == torch.uint8 and labels.shape == (1, *logits.shape[2:])
    assert torch.equal(labels[0], logits[0].argmax(0).to(torch.uint8))
    assert np.array_equal(labels_at(labels[0].numpy(), (120, 160)), labels_from_logits(logits, (120, 160)))


def test_predict_batch_equals_predict(checkpoint):
    segmenter = Segmenter(checkpoint, backend="torch", device="cpu")
    frames = [synthetic_frame(120, 160, seed=s) for s in range(3)]
    batch = segmenter.predict_batch(frames)
    for frame, labels in zip(frames, batch, strict=True):
        assert (segmenter.predict(frame) == labels).mean() > 0.999


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "torch", "device": "cuda"}, "no CUDA device"),
        ({"backend": "torch", "precision": "fp16", "device": "cpu"}, "fp16 needs CUDA"),
        ({"backend": "torch", "precision": "int8"}, "int8 runs on ONNX Runtime or OpenVINO"),
        ({"backend": "onnxruntime", "precision": "fp16"}, "takes fp32 or INT8, not fp16"),
        ({"backend": "openvino", "precision": "fp16"}, "takes fp32, bf16 or INT8, not fp16"),
        ({"backend": "openvino", "device": "cuda"}, "OpenVINO here runs on the CPU"),
        (
            {"backend": "onnxruntime", "precision": "int8", "calibration": "no/such/folder"},
            "calibration source not found",
        ),
        ({"backend": "tensorflow"}, "unknown backend"),
    ],
)
def test_unavailable_choices_give_clear_errors(checkpoint, options, message):
    if torch.cuda.is_available() and options.get("device") == "cuda":
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendError, match=message):
        Segmenter(checkpoint, **options)


def test_missing_gpu_provider_falls_back_to_cpu_with_a_message(checkpoint, caplog):
    if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    with caplog.at_level(logging.WARNING, "rtformer.engine"):
        segmenter = (
            Segmenter(checkpoint, backend="onnxruntime", device="cuda") if torch.cuda.is_available() else None
        )
        if segmenter is None:
            from engine.runtime.backends import choose_providers

            assert choose_providers("cuda") == ["CPUExecutionProvider"]
    assert "falling back to CPUExecutionProvider" in caplog.text


def test_damaged_cached_export_is_rebuilt(tmp_path, checkpoint, caplog):
    local = shutil.copy(checkpoint, tmp_path / "copy.safetensors")
    cache = artifact_path(local, FP32_KIND)
    cache.write_bytes(b"this is not an onnx model")
    with caplog.at_level(logging.WARNING, "rtformer.engine"):
        segmenter = Segmenter(local, backend="onnxruntime")
    assert "is damaged" in caplog.text
    assert segmenter.predict(synthetic_frame()).shape == (120, 160)


def test_missing_and_corrupt_checkpoints_are_reported(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Segmenter(tmp_path / "none.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        Segmenter(corrupt)


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((120, 160), np.uint8),
        np.zeros((120, 160, 4), np.uint8),
        np.zeros((120, 160, 3), np.float32),
        np.zeros((4, 4, 3), np.uint8),
        "not an image",
    ],
)
def test_wrong_frames_raise_value_errors(checkpoint, frame):
    segmenter = Segmenter(checkpoint, backend="torch", device="cpu")
    with pytest.raises(ValueError):
        segmenter.predict(frame)


def test_int8_quantization_calibrated_on_given_frames(tmp_path, checkpoint):
    local = shutil.copy(checkpoint, tmp_path / "int8.safetensors")
    frames = tmp_path / "calibration"
    frames.mkdir()
    for seed in range(4):
        cv2.imwrite(str(frames / f"{seed}.png"), synthetic_frame(128, 160, seed=seed))
    int8 = Segmenter(local, backend="onnxruntime", precision="int8", calibration=frames)
    assert int8.description == "ONNX Runtime CPU int8"
    cached = artifact_path(local, int8_kind(int8_weight_bits()), key=calibration_key(frames))
    graph = __import__("onnx").load(str(cached))
    assert any(node.op_type == "QuantizeLinear" for node in graph.graph.node)
    frame = synthetic_frame(128, 160, seed=9)
    agreement = (int8.predict(frame) == Segmenter(local, backend="torch").predict(frame)).mean()
    assert agreement > 0.8
    # The same frames elsewhere are the same calibration: the model is reused, not rebuilt.
    built = cached.stat().st_mtime_ns
    Segmenter(
        local, backend="onnxruntime", precision="int8", calibration=shutil.copytree(frames, tmp_path / "c")
    )
    assert cached.stat().st_mtime_ns == built
    # Other frames are another calibration, in another file.
    cv2.imwrite(str(frames / "extra.png"), synthetic_frame(128, 160, seed=7))
    assert calibration_key(frames) != cached.name.split(".")[-2]


def test_device_side_normalisation_equals_the_cpu_path(checkpoint):
    """On CUDA the CPU only resizes and the GPU normalises; the same code runs on the
    CPU here and must give the same logits as the CPU preprocessing."""
    segmenter = Segmenter(checkpoint, backend="torch", device="cpu")
    frame = synthetic_frame(128, 160, seed=4)
    on_cpu = segmenter.backend.infer_logits(segmenter.preprocessor(frame).copy())
    on_device = segmenter.backend.infer_logits(segmenter.preprocessor.resize(frame)[None].copy())
    torch.testing.assert_close(on_device, on_cpu, atol=1e-4, rtol=1e-4)


def test_channel_argmax_equals_numpy():
    from engine.runtime.segmenter import argmax_channels

    logits = np.random.default_rng(0).standard_normal((11, 37, 53)).astype(np.float32)
    logits[3, :5] = logits[5, :5] = 9.0  # ties: the first class wins, as in np.argmax
    assert (argmax_channels(logits) == logits.argmax(0)).all()
