"""Running a checkpoint on frames: the public API the app and the commands use.

Inside, each module imports only those before it: `errors`, `cpu`, `preprocess`,
`postprocess`, `stabilize` (steady masks on video), `export` and `quantize` (how
graphs are made), `artifacts` (the one owner of ONNX models, INT8 models and the
OpenVINO cache: names, building, repair),
`graphs` (CUDA graphs for PyTorch on CUDA), `backends` (PyTorch, ONNX Runtime,
OpenVINO: they only open artefacts),
`availability` (which backends this machine runs and the measured auto choice),
`render` (the one renderer), `segmenter` (the facade), `watchdog` (stalled
pipelines say where) and `doctor` (the system report). Modules inside the runtime
import each other by module, never through this package.
"""

from engine.runtime.availability import (
    BACKEND_CHOICES,
    BackendChoice,
    available,
    default_backend,
    onnxruntime_conflict,
    why_unavailable,
)
from engine.runtime.doctor import format_system_report, system_report
from engine.runtime.errors import BackendError
from engine.runtime.render import render
from engine.runtime.segmenter import INPUT_SCALES, VIEWS, Segmenter, scaled_input_size
from engine.runtime.stabilize import MaskStabilizer, StabilizerConfig
from engine.runtime.watchdog import StallReport, StallWatchdog

__all__ = [
    "BACKEND_CHOICES",
    "INPUT_SCALES",
    "VIEWS",
    "BackendChoice",
    "BackendError",
    "MaskStabilizer",
    "Segmenter",
    "StabilizerConfig",
    "StallReport",
    "StallWatchdog",
    "available",
    "default_backend",
    "format_system_report",
    "onnxruntime_conflict",
    "render",
    "scaled_input_size",
    "system_report",
    "why_unavailable",
]
