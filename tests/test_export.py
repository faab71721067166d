"""ONNX export with dynamic batch, height and width equals PyTorch."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from engine.runtime.export import export_onnx
from tests.synthetic import calibrated_model


@pytest.fixture(scope="module", params=["slim", "base"])
def exported(request, tmp_path_factory):
    model = calibrated_model(request.param, num_classes=11)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx")
    return model, path


def test_graph_is_valid_with_dynamic_axes(exported):
    _, path = exported
    graph = onnx.load(str(path)).graph
    onnx.checker.check_model(str(path))
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]


# 360x480 pools a 12x15 map at 1/32 with uneven bins; 200x264 is not a multiple of 32.
@pytest.mark.parametrize(
    ("batch", "height", "width"), [(1, 360, 480), (1, 512, 1024), (1, 720, 960), (2, 200, 264)]
)
def test_onnx_runtime_matches_torch(exported, batch, height, width):
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.random.RandomState(0).standard_normal((batch, 3, height, width)).astype(np.float32)
    (onnx_logits,) = session.run(None, {"images": images})
    with torch.inference_mode():
        torch_logits = model(torch.from_numpy(images)).numpy()
    assert onnx_logits.shape == (batch, 11, height, width)
    assert np.abs(onnx_logits - torch_logits).max() < 1e-4


def test_deployment_graph_normalises_frames_inside(tmp_path):
    from engine.model.checkpoint import IMAGENET_MEAN, IMAGENET_STD
    from engine.training.data import normalize

    model = calibrated_model("slim", num_classes=11)
    path = export_onnx(model, tmp_path / "frames.onnx", normalisation=(IMAGENET_MEAN, IMAGENET_STD))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frames = np.random.default_rng(1).integers(0, 256, (2, 96, 160, 3), dtype=np.uint8)
    logits, labels = session.run(["logits", "labels"], {"frames": frames})
    images = torch.stack([normalize(frame[..., ::-1]) for frame in frames])  # BGR -> RGB
    with torch.inference_mode():
        expected = model(images).numpy()
    assert np.abs(logits - expected).max() < 1e-4
    assert labels.dtype == np.uint8 and labels.shape == (2, 96, 160)
    assert (labels == expected.argmax(1)).mean() > 0.999  # the graph's argmax, in uint8
