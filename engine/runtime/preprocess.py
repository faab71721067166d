"""Preprocessing: a BGR frame resized to the model's input size (aspect ratio kept,
multiples of 8) and, where the backend wants it, ImageNet-normalised into reused
buffers. Used by every backend and by INT8 calibration."""

from __future__ import annotations

import cv2
import numpy as np

from engine.model.rtformer import MIN_INPUT_SIZE

# Multiples of 8 (the high-resolution branch's stride) keep a CamVid frame at 360x480, the
# size the weights were trained and are scored at. Multiples of 32 made it 352x480, whose
# 1/32 map is 11x15 where training saw 12x15, and RTFormer's attention, which sees the
# whole map: the CamVid-only Slim scored 51.87 mIoU on CamVid test at
# 352x480 and 52.51 at 360x480. For 1280x720 frames, 272x480 instead of 256x480 took the
# shipped Slim's agreement with the probe's reference from 82.7% to 84.0%. Cost, 360
# against 352, interleaved on a quiet 2-core EPYC (AVX-512 BF16), ms a frame through the
# Segmenter: Slim x1.06 ONNX Runtime fp32 (26.4 -> 27.9), x1.01 OpenVINO INT8 and bf16;
# Base x1.03 OpenVINO INT8, x1.00 bf16; Slim 1280x720 at 272 against 256, bf16: x1.04.
SIZE_MULTIPLE = 8


# The input sizes offered besides the model's own (the app's Input size menu, `--input-scale`),
# as fractions of each side: for CPUs too slow for the full size (an AVX2-only CPU ran Slim
# at 18.6 FPS), fewer pixels for fewer convolutions, at a measured cost in accuracy
# (BENCHMARKS.md, "Smaller inputs for slow CPUs": through the AVX2 cap, 240x320 ran Slim
# 1.84x and Base 2.0x faster for 3.1 and 3.7 mIoU on CamVid test).
INPUT_SCALES = (1.0, 0.8, 2 / 3)


def _snap(value: float) -> int:
    return max(MIN_INPUT_SIZE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def model_input_size(frame_size: tuple[int, int], input_size: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) to feed the model: the frame scaled to fit `input_size` with its aspect
    ratio kept (the frame's own size when None), rounded to multiples of 8."""
    height, width = frame_size
    if input_size is not None:
        scale = min(input_size[0] / height, input_size[1] / width)
        height, width = height * scale, width * scale
    return _snap(height), _snap(width)


def scaled_input_size(input_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The box frames are fitted into, each side times `scale`, in multiples of 8:
    (360, 480) -> (288, 384) at 0.8, (240, 320) at 2/3."""
    if not 0.1 <= scale <= 2.0:
        raise ValueError(f"input scale {scale:g} is outside 0.1-2.0")
    return _snap(input_size[0] * scale), _snap(input_size[1] * scale)


class Preprocessor:
    """BGR uint8 frame -> normalised RGB float32 (1, 3, h, w), into buffers reused
    while the frame size stays the same."""

    def __init__(self, input_size: tuple[int, int] | None, mean, std) -> None:
        self.input_size = input_size
        # x_rgb_norm = (x / 255 - mean) / std = x * scale + offset, per channel (BGR order here)
        std_bgr, mean_bgr = np.asarray(std, np.float32)[::-1], np.asarray(mean, np.float32)[::-1]
        self.scale = (1.0 / (255.0 * std_bgr)).astype(np.float32)
        self.offset = (-mean_bgr / std_bgr).astype(np.float32)
        self.mean, self.std = tuple(mean), tuple(std)
        self._frame_size: tuple[int, int] | None = None
        self.size: tuple[int, int] | None = None  # (h, w) of the latest frame as the model sees it

    def _allocate(self, frame_size: tuple[int, int]) -> None:
        self._frame_size = frame_size
        self.size = model_input_size(frame_size, self.input_size)
        height, width = self.size
        self._resized = np.empty((height, width, 3), np.uint8)
        self._float = np.empty((height, width, 3), np.float32)
        self._blob = np.empty((1, 3, height, width), np.float32)

    @property
    def resized(self) -> np.ndarray:
        """The latest frame resized to the model's input size (BGR uint8 (h, w, 3)), in the
        buffer the next call reuses."""
        return self._resized

    def resize(self, frame: np.ndarray) -> np.ndarray:
        """The frame resized to the model's input size (BGR uint8); the buffer is reused."""
        check_frame(frame)
        if frame.shape[:2] != self._frame_size:
            self._allocate(frame.shape[:2])
        if frame.shape[:2] == self.size:
            self._resized[...] = frame
        else:
            cv2.resize(frame, self.size[::-1], dst=self._resized, interpolation=cv2.INTER_LINEAR)
        return self._resized

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        resized = self.resize(frame)
        np.multiply(resized, self.scale, out=self._float)
        np.add(self._float, self.offset, out=self._float)
        self._blob[0] = self._float.transpose(2, 0, 1)[::-1]  # HWC BGR -> CHW RGB
        return self._blob


def check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(f"expected a BGR uint8 frame of shape (H, W, 3), got {shape} {dtype}")
    if min(frame.shape[:2]) < 8:
        raise ValueError(f"frame {frame.shape[1]}x{frame.shape[0]} is too small to segment")
