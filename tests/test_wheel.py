"""Installed from a wheel: the wheel carries the weights, their model card and
the demo; a fresh environment with only the wheel runs the CLI and opens the window on
the demo, from a folder outside the checkout."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import cv2
import pytest

from engine.resources import CAMVID_DEMO_VIDEO, DEMO_VIDEO, WEIGHT_FILES
from tests.synthetic import synthetic_frame

ROOT = Path(__file__).resolve().parent.parent


def run(command: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of the tracked files: an in-tree build would leave build/ behind.
    source = tmp_path_factory.mktemp("source")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        target = source / name
        if (ROOT / name).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((ROOT / name).read_bytes())
    output = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w"]
    run([*command, str(output)], cwd=source, env=os.environ.copy())
    return next(output.glob("rtformer_studio-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel alone; it sees this environment's
    site-packages (the dependencies) through a .pth line, which adds the folder without
    running its .pth files: the checkout's editable install stays invisible."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent, env=os.environ.copy())
    python = venv / "bin" / "python"
    site = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv, os.environ
        ).stdout.strip()
    )
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet"]
    run([*install, str(wheel)], cwd=venv.parent, env=os.environ.copy())
    return venv


def test_the_wheel_carries_weights_model_card_and_demos(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in WEIGHT_FILES.values():
        assert f"rtformer_weights/{name}" in names
    assert "rtformer_weights/README.md" in names
    assert {f"rtformer_assets/{DEMO_VIDEO}", f"rtformer_assets/{CAMVID_DEMO_VIDEO}"} <= names
    assert (
        sum(name.startswith("rtformer_assets/calibration/") and name.endswith(".jpg") for name in names) == 16
    )
    assert {
        f"rtformer_weights/{name.replace('.safetensors', '.accuracy.json')}" for name in WEIGHT_FILES.values()
    } <= names
    assert not any(name.startswith(("tests/", "tools/", "weights/", "assets/")) for name in names)


def test_the_installed_wheel_runs_outside_the_checkout(installed, tmp_path):
    bin_folder = installed / "bin"
    env = {**os.environ, "RTFORMER_STUDIO_HOME": str(tmp_path / "home"), "QT_QPA_PLATFORM": "offscreen"}
    env.pop("PYTHONPATH", None)
    where = run([str(bin_folder / "python"), "-c", "import engine; print(engine.__file__)"], tmp_path, env)
    assert str(installed) in where.stdout and str(ROOT) not in where.stdout  # the wheel's code, not ours

    models = run([str(bin_folder / "rtformer"), "models"], tmp_path, env)
    assert "slim" in models.stdout.lower() and str(installed) in models.stdout

    cv2.imwrite(str(tmp_path / "street.png"), synthetic_frame(120, 160))
    run([str(bin_folder / "rtformer"), "segment", "street.png", "-o", "street-seg.png"], tmp_path, env)
    assert cv2.imread(str(tmp_path / "street-seg.png")).shape == (120, 160, 3)
    # auto on a CPU timed the backends once: exports, INT8 models (calibrated on the frames in
    # the package) and compiled OpenVINO models all go to the user's cache, never into the package
    cache = tmp_path / "home" / "cache"
    assert list(cache.rglob("*.onnx")) and (cache / "auto-backend.json").is_file()
    assert any(path.name.endswith(".onnx") and "deploy-int8" in path.name for path in cache.rglob("*"))
    assert not list(installed.rglob("*.onnx"))

    screenshot = tmp_path / "window.png"
    command = [str(bin_folder / "rtformer-studio"), "--seconds", "4", "--screenshot", str(screenshot)]
    run(command, tmp_path, env, timeout=120)  # no source: the bundled demo video
    assert cv2.imread(str(screenshot)) is not None
    settings = (tmp_path / "home" / "settings.ini").read_text()
    assert DEMO_VIDEO in settings  # the window opened the demo from the installed package
