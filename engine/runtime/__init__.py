"""Running a checkpoint on frames: the public API the app and the commands use.

Inside, each module imports only those before it: `errors`, `cpu`, `preprocess`,
`postprocess`, `areas` (class shares and their CSV), `confidence` (how sure the
model is, per pixel), `stabilize` (steady masks on video), `export` and `quantize` (how
graphs are made), `artifacts` (the one owner of ONNX models, INT8 models and the
OpenVINO cache: names, building, repair),
`graphs` (CUDA graphs for PyTorch on CUDA), `backends` (PyTorch, ONNX Runtime,
OpenVINO: they only open artefacts),
`availability` (which backends this machine runs and the measured auto choice),
`render` (the one renderer), `segmenter` (the facade), `watchdog` (stalled
pipelines say where) and `doctor` (the system report). Modules inside the runtime
import each other by module, never through this package.
"""

from engine.runtime.areas import AreasCsv, class_shares
from engine.runtime.availability import (
    BACKEND_CHOICES,
    BackendChoice,
    available,
    default_backend,
    onnxruntime_conflict,
    why_unavailable,
)
from engine.runtime.confidence import DEFAULT_MEASURE, MEASURES, probabilities_at, top_classes
from engine.runtime.doctor import format_system_report, system_report
from engine.runtime.errors import BackendError
from engine.runtime.render import render
from engine.runtime.segmenter import INPUT_SCALES, VIEWS, ModelOutputs, Segmenter, scaled_input_size
from engine.runtime.stabilize import MaskStabilizer, StabilizerConfig
from engine.runtime.watchdog import StallReport, StallWatchdog

__all__ = [
    "BACKEND_CHOICES",
    "DEFAULT_MEASURE",
    "INPUT_SCALES",
    "MEASURES",
    "VIEWS",
    "AreasCsv",
    "BackendChoice",
    "BackendError",
    "MaskStabilizer",
    "ModelOutputs",
    "Segmenter",
    "StabilizerConfig",
    "StallReport",
    "StallWatchdog",
    "available",
    "class_shares",
    "default_backend",
    "format_system_report",
    "onnxruntime_conflict",
    "probabilities_at",
    "render",
    "scaled_input_size",
    "system_report",
    "top_classes",
    "why_unavailable",
]
