"""Cameras: the ones Qt Multimedia lists, and how FFmpeg (PyAV) opens each of them.

Qt names a camera by a device id and a description; FFmpeg's capture devices want
something else on each platform (FFmpeg's documentation, "Input Devices"):
- Linux, v4l2: the device node, which is Qt's id (e.g. /dev/video0).
- Windows, dshow: "video=<friendly name>", the name Qt shows as the description.
- macOS, avfoundation: "<video>:<audio>", each a device index or a device name; Qt's
  id there is AVFoundation's unique id, which FFmpeg does not take, so the name is
  given, with "none" for audio. A name made only of digits would be read as an index.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("rtformer.engine")

DEFAULT_RESOLUTIONS = [(640, 480), (1280, 720)]


def camera_input(device_id: str, description: str, platform: str | None = None) -> tuple[str, str]:
    """FFmpeg (input, format) for a camera Qt lists."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return device_id, "v4l2"
    if platform == "win32":
        return f"video={description}", "dshow"
    if platform == "darwin":
        if description.isdigit():
            raise ValueError(f"camera name {description!r} is all digits: FFmpeg would read it as an index")
        return f"{description}:none", "avfoundation"
    raise ValueError(f"no camera capture for platform {platform!r}")


def list_cameras() -> list[tuple[str, str, list[tuple[int, int]]]]:
    """(device id, name, resolutions) for each camera Qt Multimedia sees; [] without Qt Multimedia."""
    try:
        from PySide6.QtMultimedia import QMediaDevices
    except ImportError as error:  # e.g. libpulse0 missing on Debian
        log.warning("Qt Multimedia unavailable (%s): no camera list", error)
        return []
    cameras = []
    for device in QMediaDevices.videoInputs():
        sizes = sorted({(f.resolution().width(), f.resolution().height()) for f in device.videoFormats()})
        device_id = bytes(device.id()).decode(errors="replace")
        cameras.append((device_id, device.description(), sizes or DEFAULT_RESOLUTIONS))
    return cameras
