"""What the engine knows about media files: images and video.

Images: `IMAGE_SUFFIXES` and `list_images`, one definition for the datasets, the
CLI, INT8 calibration, the probe and the app's image sources.

Video, through PyAV (FFmpeg): `VideoReader` opens any input FFmpeg reads (files,
streams, cameras); `read_frames` yields every frame of a file with its timestamp
and stops cleanly at damage; `VideoWriter` encodes BGR frames to H.264 MP4 with
given timestamps, falling back to MPEG-4 Part 2 when no H.264 encoder exists.
With `crash_safe=True` the MP4 is fragmented (an index every second instead of
one at the end), so a process killed mid-recording or a full disk leaves a file
that plays up to its last second.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

log = logging.getLogger("rtformer.engine")
ENCODERS = ("libx264", "h264", "mpeg4")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # what cv2.imread takes


# What a folder walk takes for a video by its name (FFmpeg reads many more, given by name).
VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv",
    ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".3gp", ".ogv",
)  # fmt: skip


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def list_images(folder: str | Path, pattern: str = "*") -> list[Path]:
    """The image files in `folder` matching `pattern` (glob; "*/*.png" reaches into subfolders),
    sorted by path."""
    return sorted(path for path in Path(folder).glob(pattern) if path.is_file() and is_image(path))


class VideoError(Exception):
    """A video that cannot be opened or written."""


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frames: int  # as the container says; 0 when unknown
    duration: float  # seconds, 0 when unknown


@dataclass
class DecodeReport:
    """Filled while reading: how many frames came out and what stopped the reading."""

    frames: int = 0
    error: str = ""
    damaged: bool = field(default=False)


class VideoReader:
    """One video input opened with PyAV: a file, a stream URL or a camera device. The one
    place that works out frame rate, duration and timestamps, and seeks; `read_frames`,
    `probe`, `segment` and the app's sources all read through it.

    Errors are VideoError: at open, "cannot open NAME as a video: why"; while reading,
    "NAME is damaged after frame N: why".
    """

    def __init__(
        self,
        location: str | Path,
        name: str | None = None,
        format: str | None = None,
        options: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.name = name or Path(str(location)).name
        self.container = None
        try:
            self.container = av.open(str(location), format=format, options=options or {}, timeout=timeout)
        except (av.FFmpegError, OSError) as error:
            raise VideoError(f"cannot open {self.name} as a video: {ffmpeg_reason(error)}") from None
        if not self.container.streams.video:
            self.close()
            raise VideoError(f"cannot open {self.name} as a video: it has no video stream")
        self.stream = self.container.streams.video[0]
        codec = self.stream.codec_context
        self.width, self.height = codec.width, codec.height
        if self.width * self.height > SMALL_FRAME_PIXELS:
            self.stream.thread_type = "AUTO"  # else one thread: less CPU, which inference needs
        self.rate = Fraction(self.stream.average_rate or self.stream.guessed_rate or 25)
        self.fps = float(self.rate)
        self.time_base = Fraction(self.stream.time_base) if self.stream.time_base else Fraction(1, 90000)
        self.declared_frames = self.stream.frames  # 0 when the container does not say
        self.duration = float(self.stream.duration * self.stream.time_base) if self.stream.duration else 0.0
        if not self.duration and self.container.duration:
            self.duration = self.container.duration / av.time_base
        self._frames = self.container.decode(self.stream)
        self.index = 0  # frames decoded so far
        self._skip_until = 0.0

    def read(self) -> tuple[np.ndarray, float] | None:
        """The next (BGR frame, seconds), or None at the end."""
        while True:
            try:
                frame = next(self._frames)
            except StopIteration:
                return None
            except (av.FFmpegError, ValueError) as error:
                raise VideoError(
                    f"{self.name} is damaged after frame {self.index}: {ffmpeg_reason(error)}"
                ) from None
            seconds = float(frame.pts * frame.time_base) if frame.pts is not None else self.index / self.fps
            self.index += 1
            # After a seek, decoding restarts at the keyframe before the target: skip to it.
            if seconds >= self._skip_until - 0.5 / self.fps:
                self._skip_until = 0.0
                return frame.to_ndarray(format="bgr24"), seconds

    def seek(self, seconds: float) -> None:
        """Continue from `seconds` (files)."""
        target = max(0.0, seconds)
        self.container.seek(int(target / self.stream.time_base), stream=self.stream, backward=True)
        self._frames = self.container.decode(self.stream)
        self.index = int(target * self.fps)
        self._skip_until = target

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ffmpeg_reason(error: Exception) -> str:
    """FFmpeg's own words for `error` ("Invalid data found when processing input"), without
    the errno and path PyAV wraps them in; other errors as they are."""
    reason = getattr(error, "strerror", None)
    return reason if isinstance(error, av.FFmpegError) and reason else str(error)


def probe(path: str | Path) -> VideoInfo:
    with VideoReader(path) as reader:
        return VideoInfo(
            reader.width,
            reader.height,
            reader.rate,
            reader.time_base,
            reader.declared_frames,
            reader.duration,
        )


def read_frames(path: str | Path, report: DecodeReport | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """Yield (BGR frame, timestamp in seconds) for every decodable frame. Damage
    ends the stream early: `report.damaged` and `report.error` say so."""
    report = report if report is not None else DecodeReport()
    with VideoReader(path) as reader:
        while True:
            try:
                item = reader.read()
            except VideoError as error:
                report.damaged, report.error = True, str(error).split(": ", 1)[-1]
                break
            if item is None:
                break
            report.frames += 1
            yield item
        if not report.damaged and reader.declared_frames and report.frames < reader.declared_frames:
            report.damaged = True
            report.error = (
                f"the file declares {reader.declared_frames} frames but only {report.frames} could be decoded"
            )
        if report.damaged:
            log.warning("%s: decoding stopped after %d frames: %s", path, report.frames, report.error)


# Up to this size (720p) one codec thread costs less CPU than several that synchronise:
# 2.3 vs 2.6 ms a frame to decode the 480x360 demo, 1.5 vs 1.8 ms to encode it.
SMALL_FRAME_PIXELS = 1280 * 720


def letterbox(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """`frame` scaled to fit (height, width) with its aspect ratio kept, centred on black:
    a picture of another size is never cropped."""
    if frame.shape[:2] == (height, width):
        return frame
    scale = min(height / frame.shape[0], width / frame.shape[1])
    fitted_h = max(1, min(height, round(frame.shape[0] * scale)))
    fitted_w = max(1, min(width, round(frame.shape[1] * scale)))
    fitted = cv2.resize(frame, (fitted_w, fitted_h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - fitted_h) // 2, (width - fitted_w) // 2
    canvas[top : top + fitted_h, left : left + fitted_w] = fitted
    return canvas


# Fragmented MP4: an empty index up front, then a self-contained fragment at each keyframe
# and at least every second; packets reach the disk as they are muxed. Measured: a writer
# killed with SIGKILL after 95 frames at 30 fps leaves 90 decodable frames.
CRASH_SAFE_MP4 = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "frag_duration": "1000000",
    "flush_packets": "1",
}


class VideoWriter:
    """H.264 MP4 writer; frames carry their own timestamps (seconds from the start),
    so the file's duration follows the clock, whatever the frame rate was.

    The first frame fixes the output size; later frames of another size (a view
    change while recording) are letterboxed into it. `crash_safe` writes fragmented
    MP4 (see CRASH_SAFE_MP4) for recordings that must survive a crash or a full disk.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float | Fraction = 30,
        time_base: Fraction | None = None,
        crf: int = 23,
        codec: str | None = None,
        preset: str = "ultrafast",
        crash_safe: bool = False,
    ) -> None:
        self.path = Path(path)
        is_mp4 = self.path.suffix.lower() in (".mp4", ".mov")
        # faststart: the index goes first, so a copy of a finished file cut short still plays.
        options = {"movflags": "+faststart"} if is_mp4 else {}
        if crash_safe and is_mp4:
            options = dict(CRASH_SAFE_MP4)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(self.path), "w", options=options)
        except (av.FFmpegError, OSError) as error:
            raise VideoError(f"cannot write {self.path}: {ffmpeg_reason(error)}") from None
        self.codec = codec or next(name for name in ENCODERS if _has_encoder(name))
        if self.codec != ENCODERS[0]:
            log.warning("H.264 encoder unavailable; writing %s with %s", self.path, self.codec)
        self.fps = Fraction(fps).limit_denominator(100000)
        self.stream = self.container.add_stream(self.codec, rate=self.fps)
        self.stream.time_base = time_base or Fraction(1, 90000)
        # The encoder must count in the same fine units: at 1/fps, two frames less than
        # a frame period apart (a live recording) would collide and be dropped.
        self.stream.codec_context.time_base = self.stream.time_base
        self.stream.pix_fmt = "yuv420p"
        if crash_safe:  # a keyframe (and so a fragment) at least once a second of nominal rate
            self.stream.codec_context.gop_size = max(1, round(float(self.fps)))
        if self.codec in ("libx264", "h264"):
            # Measured on the demo video (480x360): veryfast 6.7 ms/frame, superfast 3.5 ms at
            # about the same size, ultrafast 1.5 ms and 24-32% larger. Real time comes first:
            # the encoder shares two cores with inference.
            self.stream.options = {"crf": str(crf), "preset": preset}
        self.frames = 0
        self._last_pts = -1
        self._opened = False

    def write(self, frame: np.ndarray, seconds: float | None = None) -> None:
        """Add a BGR frame shown at `seconds` (default: frame count / fps)."""
        if not self._opened:  # size is known only from the first frame
            self.stream.height, self.stream.width = frame.shape[0] & ~1, frame.shape[1] & ~1
            if self.codec in ("libx264", "h264") and frame.shape[0] * frame.shape[1] <= SMALL_FRAME_PIXELS:
                self.stream.options = {**self.stream.options, "threads": "1"}
            self._opened = True
        height, width = self.stream.height, self.stream.width
        if frame.shape[0] - height in (0, 1) and frame.shape[1] - width in (0, 1):
            frame = np.ascontiguousarray(frame[:height, :width])  # an odd side loses one line (yuv420p)
        else:
            frame = letterbox(frame, height, width)
        if seconds is None:
            seconds = self.frames / float(self.fps)
        pts = max(round(seconds / self.stream.time_base), self._last_pts + 1)
        video_frame = self._video_frame(frame)
        video_frame.pts, video_frame.time_base = pts, self.stream.time_base
        self._last_pts = pts
        try:
            self.container.mux(self.stream.encode(video_frame))
        except (av.FFmpegError, OSError) as error:
            raise VideoError(f"writing {self.path} failed: {ffmpeg_reason(error)}") from None
        self.frames += 1

    def _video_frame(self, frame: np.ndarray) -> av.VideoFrame:
        """The frame in the encoder's yuv420p. OpenCV converts BGR to I420 (BT.601, limited
        range, as swscale does) about 3.5x faster than swscale inside the encoder: 4.5 vs
        16.9 ms a frame at 1080p on this project's 2-core machine."""
        if self.stream.pix_fmt != "yuv420p":
            return av.VideoFrame.from_ndarray(frame, format="bgr24")
        return av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420), format="yuv420p")

    def close(self) -> None:
        """Flush the encoder and finish the file (safe to call twice)."""
        if self.container is None:
            return
        container, self.container = self.container, None
        try:
            if self._opened:
                container.mux(self.stream.encode())
        except (av.FFmpegError, OSError) as error:
            raise VideoError(f"finishing {self.path} failed: {ffmpeg_reason(error)}") from None
        finally:
            try:
                container.close()
            except (av.FFmpegError, OSError) as error:  # the trailer may not fit on a full disk
                log.warning("closing %s: %s", self.path, error)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.close()
        except VideoError as error:
            if exc_type is None:
                raise
            log.warning("%s", error)  # the error already raised says more: keep it


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except (av.FFmpegError, ValueError):
        return False
