"""Shared test helpers, and the fixtures of the app's tests (a window on tiny checkpoints)."""

import os

import pytest
import torch

from engine.rtformer import RTFormer, build_model


def calibrated_model(variant: str = "slim", num_classes: int = 11, seed: int = 0, **overrides) -> RTFormer:
    """A randomly initialised model whose BN statistics come from a few batches,
    so eval-mode activations have the scale of a trained network (logits of
    order 1-10 instead of hundreds) and numeric comparisons are meaningful."""
    torch.manual_seed(seed)
    model = build_model(variant, num_classes=num_classes, drop_path_rate=0.0, **overrides).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, 128, 160))
        # Kaiming init leaves the classifier far louder than a trained one; scale it
        # so logits spread like a trained model's (std of a few units).
        model.head.conv2.weight.mul_(0.1)
    return model.eval()


def write_checkpoint(path, variant: str = "slim", input_size=(128, 160), **overrides):
    """A calibrated random model saved as a CamVid checkpoint (for engine tests)."""
    from engine.checkpoint import CheckpointInfo, save_checkpoint
    from engine.classes import CAMVID

    model = calibrated_model(variant, num_classes=CAMVID.num_classes, **overrides)
    info = CheckpointInfo.for_classes(model.config, CAMVID, input_size=input_size)
    return save_checkpoint(path, model, info)


def synthetic_frame(height: int = 120, width: int = 160, seed: int = 0):
    """A BGR frame with smooth structure (gradients and blocks), not plain noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    frame = (
        frame.astype(np.int32)
        + rng.integers(0, 60, (height // 20 + 1, width // 20 + 1, 3))
        .repeat(20, 0)
        .repeat(20, 1)[:height, :width]
    )
    return np.clip(frame, 0, 255).astype(np.uint8)


@pytest.fixture(autouse=True, scope="session")
def user_home(tmp_path_factory):
    """Caches, settings and crash logs of everything the tests run go to a temporary
    folder, never the user's own (subprocesses inherit it)."""
    home = tmp_path_factory.mktemp("rtformer-home")
    previous = os.environ.get("RTFORMER_STUDIO_HOME")
    os.environ["RTFORMER_STUDIO_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("RTFORMER_STUDIO_HOME", None)
    else:
        os.environ["RTFORMER_STUDIO_HOME"] = previous


# ---------------------------------------------------------------- the app's fixtures

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
TIMEOUT = 30_000  # ms, for qtbot.waitUntil


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Tiny random Slim and Base checkpoints, as the app's shipped weights."""
    folder = tmp_path_factory.mktemp("weights")
    return {
        "slim": write_checkpoint(folder / "slim.safetensors", "slim", input_size=(96, 128)),
        "base": write_checkpoint(folder / "base.safetensors", "base", input_size=(96, 128)),
    }


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from tests.test_video import write_video

    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames=40, fps=20, size=(96, 128))


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("output_folder", str(tmp_path / "out"))
    return settings


@pytest.fixture
def window(qtbot, settings, weights):
    from app.window import MainWindow

    window = MainWindow(settings, weights)
    qtbot.addWidget(window)
    window.show()
    yield window
    window.close()


def wait_for_results(qtbot, window, count: int) -> None:
    target = window.results_seen + count
    qtbot.waitUntil(lambda: window.results_seen >= target, timeout=TIMEOUT)
