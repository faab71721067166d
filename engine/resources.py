"""Where the project's files are: the one owner of locations.

Shipped files (the checkpoints, their model card, the demo videos) are package
data: the repository keeps them in its top-level `weights/` and `assets/` folders,
which the wheel installs as the packages `rtformer_weights` and `rtformer_assets`
(see pyproject.toml). They are found through the import system, so the same
code works from a checkout (editable install or not) and from an installed wheel.

What the program makes lives in the user's folders (platformdirs), never in the
installed package: caches (ONNX exports, INT8 models), settings, crash logs,
downloaded checkpoints. `$RTFORMER_STUDIO_HOME` moves all of them into one folder
(tests, portable installs).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

APP_NAME = "RTFormer Studio"
HOME_VARIABLE = "RTFORMER_STUDIO_HOME"
CHECKOUT = Path(__file__).resolve().parent.parent  # meaningful only when running from a checkout

WEIGHT_FILES = {"slim": "rtformer-slim-camvid.safetensors", "base": "rtformer-base-camvid.safetensors"}
DEMO_VIDEO = "demo-udacity-hmb-20fps.mp4"  # a real 20 fps drive (Udacity, MIT), held out from training
CAMVID_DEMO_VIDEO = "demo-camvid-seq05vd.mp4"  # CamVid test sequence Seq05VD at 5 fps


def packaged_folder(package: str, checkout_folder: str) -> Path:
    """The folder of package data `package` (installed or editable), else the checkout's folder."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin:
        return Path(spec.origin).parent
    return CHECKOUT / checkout_folder


def weights_folder() -> Path:
    return packaged_folder("rtformer_weights", "weights")


def assets_folder() -> Path:
    return packaged_folder("rtformer_assets", "assets")


def shipped_weights() -> dict[str, Path]:
    """variant -> the shipped checkpoint (which may be missing from a broken install)."""
    folder = weights_folder()
    return {variant: folder / name for variant, name in WEIGHT_FILES.items()}


def model_card() -> Path:
    return weights_folder() / "README.md"


def demo_video() -> Path:
    return assets_folder() / DEMO_VIDEO


def camvid_demo_video() -> Path:
    return assets_folder() / CAMVID_DEMO_VIDEO


def calibration_folder() -> Path:
    """The bundled INT8 calibration frames (CamVid train and the Udacity drive; README there)."""
    return assets_folder() / "calibration"


def icon() -> Path:
    """The application icon (256x256 PNG): a road scene in the class colours."""
    return assets_folder() / "icon.png"


def _user_folder(kind: str) -> Path:
    home = os.environ.get(HOME_VARIABLE)
    if home:
        return Path(home) if kind == "data" else Path(home) / kind
    import platformdirs

    finder = {"data": platformdirs.user_data_dir, "cache": platformdirs.user_cache_dir}[kind]
    return Path(finder(APP_NAME, appauthor=False))


def user_data_dir() -> Path:
    """Settings, crash logs and downloaded checkpoints."""
    return _user_folder("data")


def user_cache_dir() -> Path:
    """ONNX exports and INT8 models: safe to delete, rebuilt on use."""
    return _user_folder("cache")


def checkpoints_dir() -> Path:
    """Where users' own checkpoints go when the app or the CLI downloads or copies them."""
    return user_data_dir() / "checkpoints"


def settings_file() -> Path:
    return user_data_dir() / "settings.ini"


def recordings_dir() -> Path:
    """The default folder for recordings and snapshots: the user's Videos folder."""
    import platformdirs

    return Path(platformdirs.user_videos_dir()) / APP_NAME
