"""Fixtures: a temporary user home for the whole run, and the app's (a window on tiny checkpoints)."""

import os

import pytest

from tests.synthetic import write_checkpoint, write_video


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
