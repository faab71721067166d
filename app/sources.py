"""Frame sources: video files, images, folders of images, stream URLs, cameras, and a
fake camera for tests and demos.

A source yields `Frame`s. Live sources (cameras, streams) are read as fast as
they produce and the newest frame wins downstream; file sources carry
timestamps so the capture service can play them at their native rate, and
support seeking.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.cameras import camera_input
from engine.media import VideoError, VideoReader, is_image, list_images


class SourceError(Exception):
    """A source that cannot be opened or read; the message says which and why."""


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8 (H, W, 3)
    timestamp: float  # seconds on the source's clock (file position, or capture time)
    index: int
    captured: float = 0.0  # time.monotonic() when the capture service got it


class FrameSource(ABC):
    """Base class. Subclasses set `name`, `live`, and implement open/read/close."""

    name = "source"
    live = False
    seekable = False
    duration = 0.0  # seconds, 0 when unknown
    fps = 30.0

    @abstractmethod
    def open(self) -> None:
        """Acquire the device or file; raise SourceError with a clear message."""

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None at the end."""

    def seek(self, seconds: float) -> None:
        """Files only (`seekable`): continue from `seconds`."""
        raise SourceError(f"{self.name} cannot seek")

    @abstractmethod
    def close(self) -> None:
        """Release the device or file (safe to call twice)."""

    def _open_reader(self, message: str, location: str, **kwargs) -> None:
        """Open an FFmpeg input (engine.media.VideoReader), or raise SourceError(message: why)."""
        try:
            self.reader = VideoReader(location, name=self.name, **kwargs)
        except VideoError as error:
            raise SourceError(f"{message}: {str(error).split(': ', 1)[-1]}") from None
        self.fps = self.reader.fps

    def _read_reader(self) -> tuple[np.ndarray, float] | None:
        try:
            return self.reader.read()
        except VideoError as error:
            raise SourceError(str(error)) from None

    def _close_reader(self) -> None:
        reader, self.reader = getattr(self, "reader", None), None
        if reader is not None:
            reader.close()


class VideoFileSource(FrameSource):
    """A video file or anything else FFmpeg opens (engine.media.VideoReader)."""

    seekable = True

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.name = Path(self.path).name
        self.reader = None

    def open(self) -> None:
        if not Path(self.path).is_file():
            raise SourceError(f"file not found: {self.path}")
        self._open_reader(f"cannot open {self.name} as a video", self.path)
        self.duration = self.reader.duration

    def read(self) -> Frame | None:
        item = self._read_reader()
        if item is None:
            return None
        image, seconds = item
        return Frame(image, seconds, self.reader.index - 1)

    def seek(self, seconds: float) -> None:
        self.reader.seek(seconds)

    def close(self) -> None:
        self._close_reader()


class StreamSource(VideoFileSource):
    """A network stream (RTSP, HTTP, ...): live, newest frame wins."""

    live = True
    seekable = False

    def open(self) -> None:
        options = {"rtsp_transport": "tcp", "stimeout": "5000000"}
        self._open_reader(f"cannot open stream {self.path}", self.path, options=options, timeout=10)


class ImageSequenceSource(FrameSource):
    """One image or a folder of images, shown at `fps` (repeated, so changes of
    model or view show at once)."""

    seekable = True

    def __init__(self, path: str | Path, fps: float = 5.0) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.fps = fps

    def open(self) -> None:
        if self.path.is_dir():
            self.files = list_images(self.path)
            if not self.files:
                raise SourceError(f"no images in folder {self.path}")
        elif self.path.is_file():
            self.files = [self.path]
        else:
            raise SourceError(f"file not found: {self.path}")
        self.duration = len(self.files) / self.fps
        self._index = 0

    def read(self) -> Frame | None:
        if self._index >= len(self.files):
            return None
        path = self.files[self._index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"cannot read image {path}")
        self._index += 1
        return Frame(image, (self._index - 1) / self.fps, self._index - 1)

    def seek(self, seconds: float) -> None:
        self._index = min(max(0, int(seconds * self.fps)), len(self.files) - 1)

    def close(self) -> None:
        """Images are read one at a time: nothing stays open."""


class CameraSource(FrameSource):
    """A camera through FFmpeg (PyAV), at a chosen resolution."""

    live = True

    def __init__(self, device_id: str, description: str, resolution: tuple[int, int] | None = None) -> None:
        self.device_id, self.name = device_id, description
        self.resolution = resolution
        self.reader = None

    def open(self) -> None:
        try:
            name, input_format = camera_input(self.device_id, self.name)
        except ValueError as error:
            raise SourceError(f"camera {self.name!r} cannot be opened: {error}") from None
        options = {"video_size": f"{self.resolution[0]}x{self.resolution[1]}"} if self.resolution else {}
        message = f"camera {self.name!r} cannot be opened"
        self._open_reader(message, name, format=input_format, options=options, timeout=5)
        self._start = time.monotonic()

    def read(self) -> Frame | None:
        try:
            item = self.reader.read()
        except VideoError as error:
            raise SourceError(f"camera {self.name!r} stopped delivering frames ({error})") from None
        if item is None:
            raise SourceError(f"camera {self.name!r} stopped delivering frames (end of input)")
        # A camera's own timestamps start anywhere: the app's clock is what matters live.
        return Frame(item[0], time.monotonic() - self._start, self.reader.index - 1)

    def close(self) -> None:
        self._close_reader()


class FakeCamera(FrameSource):
    """A camera that draws moving shapes at `fps`: for tests and for trying the app
    without a camera. `fail_on_open` acts out a camera that is not there;
    `unplug_after` one that disappears after that many frames, and is back after
    `absent_for` failed attempts to reopen it."""

    live = True

    def __init__(
        self,
        size=(360, 480),
        fps: float = 30.0,
        fail_on_open: bool = False,
        name: str = "Fake camera",
        unplug_after: int | None = None,
        absent_for: int = 0,
    ):
        self.size, self.fps, self.fail_on_open, self.name = size, fps, fail_on_open, name
        self.unplug_after, self.absent_for = unplug_after, absent_for
        self.unplugged = False
        self.opened = 0  # successful opens
        self.released = threading.Event()

    def open(self) -> None:
        if self.fail_on_open:
            raise SourceError(f"camera {self.name!r} cannot be opened: device is not there")
        if self.unplugged and self.absent_for > 0:
            self.absent_for -= 1
            raise SourceError(f"camera {self.name!r} cannot be opened: device is not there")
        self._index = 0
        self._start = time.monotonic()
        self.opened += 1
        self.released.clear()

    def read(self) -> Frame | None:
        if not self.unplugged and self.unplug_after is not None and self._index >= self.unplug_after:
            self.unplugged = True
            raise SourceError(f"camera {self.name!r} stopped delivering frames (unplugged)")
        due = self._start + self._index / self.fps
        time.sleep(max(0.0, due - time.monotonic()))
        height, width = self.size
        image = np.zeros((height, width, 3), np.uint8)
        image[: height // 2] = (200, 160, 120)  # "sky"
        image[height // 2 :] = (90, 90, 90)  # "road"
        phase = self._index / self.fps
        x = int((math.sin(phase) * 0.4 + 0.5) * width)
        cv2.circle(image, (x, height * 2 // 3), height // 8, (40, 40, 220), -1)
        self._index += 1
        return Frame(image, time.monotonic() - self._start, self._index - 1)

    def close(self) -> None:
        self.released.set()


def source_for(location: str) -> FrameSource:
    """The source for a path or URL typed or dropped by the user."""
    if "://" in location and not location.startswith("file://"):
        return StreamSource(location)
    path = Path(location.removeprefix("file://"))
    if path.is_dir() or is_image(path):
        return ImageSequenceSource(path)
    return VideoFileSource(path)
