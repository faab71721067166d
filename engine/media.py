"""What counts as an image file, and the images of a folder: one definition for the
datasets, the CLI, INT8 calibration, the probe and the app's image sources."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # what cv2.imread takes


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | Path, pattern: str = "*") -> list[Path]:
    """The image files in `folder` matching `pattern` (glob; "*/*.png" reaches into subfolders),
    sorted by path."""
    return sorted(path for path in Path(folder).glob(pattern) if path.is_file() and is_image(path))
