"""Inference backends behind `Segmenter`: PyTorch (CPU, CUDA), ONNX Runtime and OpenVINO.

A backend (the `Backend` protocol) takes a batch the Segmenter prepared, either
resized BGR uint8 frames (N, h, w, 3) when `takes_frames` (the graph or the device
normalises), or normalised RGB float32 images (N, 3, h, w); it returns logits
(N, C, h, w) float or labels (N, h, w) uint8 as torch tensors. Model files come from
engine.runtime.artifacts; backends only open them. `create_backend` builds one for concrete
choices; "auto" is resolved above, by engine.runtime.availability.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from engine.model.checkpoint import load_checkpoint
from engine.runtime.artifacts import first_line, opened_with_repair, openvino_cache_folder
from engine.runtime.cpu import bf16_capped
from engine.runtime.errors import BackendError
from engine.runtime.export import normalise_frames
from engine.runtime.graphs import GraphedForward
from engine.runtime.postprocess import argmax_channels

log = logging.getLogger("rtformer.engine")

ORT_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# INFERENCE_PRECISION_HINT per precision; INT8 takes bf16 where the CPU has it
# (openvino_precision_hint).
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
# The deployment graph each OpenVINO precision compiles: bf16 is the fp32 graph run with
# the bf16 hint (OpenVINO lowers it on CPUs with AVX512-BF16 or AMX); there is no bf16 file.
OPENVINO_GRAPHS = {"fp32": "fp32", "bf16": "fp32", "int8": "int8"}


class Backend(Protocol):
    description: str
    takes_frames: bool  # True: resized uint8 BGR frames in; False: normalised float images
    parallel: int  # how many infer calls may run at once, from as many threads
    batches: bool  # whether several frames a call may pay (then `segment` measures how many)

    def infer_logits(self, batch: np.ndarray) -> torch.Tensor: ...  # (N, C, h, w) float

    def infer_labels(self, batch: np.ndarray) -> torch.Tensor: ...  # (N, h, w) uint8

    # Both from one run, on the host: what the video stabilizer (engine.runtime.stabilize) needs.
    def infer_both(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...


def cuda_available() -> bool:
    return torch.cuda.is_available()


def ort_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


class TorchBackend:
    """PyTorch eager: inference mode, channels-last, fp16 on CUDA; on CUDA the
    normalisation and the argmax run on the GPU (the CPU only resizes), replayed as a
    CUDA graph per input shape unless `cuda_graphs` is False (engine.runtime.graphs)."""

    def __init__(
        self,
        checkpoint: Path,
        device: str,
        precision: str,
        threads: int | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        if device == "cuda" and not cuda_available():
            raise BackendError("PyTorch CUDA asked for, but this machine has no CUDA device")
        if precision in ("int8", "bf16"):
            raise BackendError(f"{precision} runs on ONNX Runtime or OpenVINO: choose one of those backends")
        if precision == "fp16" and device != "cuda":
            raise BackendError("fp16 needs CUDA; on the CPU use fp32 (or INT8 on ONNX Runtime/OpenVINO)")
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        model, info = load_checkpoint(checkpoint, self.device)
        self.model = model.to(memory_format=torch.channels_last, dtype=self.dtype).eval()
        self.mean = (torch.tensor(info.mean, device=self.device).view(1, 3, 1, 1) * 255).to(self.dtype)
        self.std = (torch.tensor(info.std, device=self.device).view(1, 3, 1, 1) * 255).to(self.dtype)
        on_cuda = self.device.type == "cuda"
        self.takes_frames = on_cuda
        self.parallel = 1
        self.precision = precision
        self.batches = on_cuda  # a GPU has room for more frames a launch; a CPU core does not
        self.graphed = GraphedForward(self.forward_frames) if on_cuda and cuda_graphs else None

    @property
    def description(self) -> str:
        graphs = " (CUDA graphs)" if self.graphed is not None and self.graphed.active else ""
        return f"PyTorch {self.device.type.upper()} {self.precision}{graphs}"

    def forward_frames(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BGR uint8 frames (N, h, w, 3) on the device -> (logits (N, C, h, w), labels (N, h, w) uint8)."""
        images = normalise_frames(frames, self.mean, self.std)
        logits = self.model(images.contiguous(memory_format=torch.channels_last))
        return logits, logits.argmax(1).to(torch.uint8)

    @torch.inference_mode()
    def _run(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits (N, C, h, w) on the device, labels (N, h, w) uint8 on the device where the
        device took the argmax, else None: on the CPU `cpu_labels` takes it faster)."""
        if batch.dtype == np.uint8:  # resized BGR frames (N, h, w, 3): normalise on the device
            frames = torch.from_numpy(batch).to(self.device, non_blocking=True)
            return (self.graphed or self.forward_frames)(frames)
        images = torch.from_numpy(batch).to(self.device, self.dtype)
        logits = self.model(images.contiguous(memory_format=torch.channels_last))
        return logits, logits.argmax(1).to(torch.uint8) if self.device.type == "cuda" else None

    def infer_logits(self, batch: np.ndarray) -> torch.Tensor:
        return self._run(batch)[0].float()

    def infer_labels(self, batch: np.ndarray) -> torch.Tensor:
        """On CUDA the argmax runs on the device and only the labels cross to the host."""
        logits, labels = self._run(batch)
        return labels.cpu() if labels is not None else cpu_labels(logits)

    def infer_both(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        logits, labels = self._run(batch)
        logits = logits.float().cpu()
        return logits, labels.cpu() if labels is not None else cpu_labels(logits)


def cpu_labels(logits: torch.Tensor) -> torch.Tensor:
    """logits (N, C, h, w) on the CPU -> labels (N, h, w) uint8."""
    return torch.from_numpy(np.stack([argmax_channels(plane.float().numpy()) for plane in logits]))


class OnnxRuntimeBackend:
    """ONNX Runtime with providers TensorRT > CUDA > CPU where present; fp32 or INT8."""

    takes_frames = True  # the deployment graph normalises
    parallel = 1
    batches = False

    def __init__(
        self,
        checkpoint: Path,
        device: str,
        precision: str,
        calibration: str | Path | None = None,
        threads: int | None = None,
        spinning: bool = False,
    ) -> None:
        if precision not in ("fp32", "int8"):
            raise BackendError(f"ONNX Runtime here takes fp32 or INT8, not {precision}")
        self.providers = choose_providers(device if precision != "int8" else "cpu")
        self.session = opened_with_repair(
            checkpoint,
            precision,
            calibration,
            lambda path: open_session(path, self.providers, threads, spinning),
        )
        self.input_name = self.session.get_inputs()[0].name
        used = self.session.get_providers()[0].replace("ExecutionProvider", "")
        self.description = f"ONNX Runtime {used} {precision}"

    def infer_logits(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.session.run(["logits"], {self.input_name: batch})[0])

    def infer_labels(self, batch: np.ndarray) -> torch.Tensor:
        """The graph's own argmax: the logits never leave the runtime."""
        return torch.from_numpy(self.session.run(["labels"], {self.input_name: batch})[0])

    def infer_both(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        logits, labels = self.session.run(["logits", "labels"], {self.input_name: batch})
        return torch.from_numpy(logits), torch.from_numpy(labels)


def choose_providers(device: str) -> list[str]:
    available = ort_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = [p for p in ORT_PROVIDER_ORDER if p in available]
    missing = [p for p in ORT_PROVIDER_ORDER[:2] if p not in available]
    if missing and device == "cuda":
        log.warning("ONNX Runtime here lacks %s; falling back to %s", ", ".join(missing), wanted[0])
    return wanted


def session_options(threads: int | None, spinning: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    # Spinning worker threads steal the CPU from capture, GUI and encoder threads.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    # Smaller work blocks balance the two threads better on this model's small tensors:
    # Slim at 360x480 on two cores, 43.0 -> 40.1-40.3 ms in three interleaved runs (2 to 8 alike).
    options.add_session_config_entry("session.dynamic_block_base", "4")
    options.log_severity_level = 3
    return options


def open_session(path: Path, providers: list[str], threads: int | None = None, spinning: bool = False):
    """An InferenceSession on `path`; errors say which file and why."""
    import onnxruntime as ort

    if not Path(path).is_file():
        raise BackendError(f"ONNX model not found: {path}")
    try:
        return ort.InferenceSession(str(path), session_options(threads, spinning), providers=providers)
    except Exception as error:  # ORT raises its own pybind error types
        raise BackendError(f"ONNX Runtime cannot load {path}: {first_line(error)}") from error


# ---------------------------------------------------------------- OpenVINO


def openvino_core():
    """An OpenVINO Core, or a BackendError saying how to get one."""
    try:
        import openvino
    except ImportError:
        raise BackendError("OpenVINO is not installed (pip install openvino)") from None
    return openvino.Core()


def openvino_capabilities() -> set[str]:
    """What OpenVINO's CPU plugin can run here: FP32, INT8 and, on CPUs with AVX512-BF16
    or AMX, BF16 (not under an instruction-set cap below them: cpu.ISA_CAP_VARIABLE)."""
    capabilities = set(openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if bf16_capped():
        capabilities.discard("BF16")
    return capabilities


def openvino_precision_hint(precision: str, capabilities: set[str]) -> str:
    """OpenVINO's INFERENCE_PRECISION_HINT for one of our precisions on a CPU with these
    capabilities (openvino_capabilities()).

    The INT8 model's float parts (the logits' upsampling and argmax, the attention's
    MatMuls, the pooling) run in bf16 where the CPU has it, in fp32 elsewhere. On a 2-core
    Zen 5 EPYC with AVX512-BF16 (interleaved, Segmenter at 360x480) that took
    Slim from 17.7 to 15.6 ms a frame and Base from 35.4 to 31.5 ms, where the fp32 TopK
    of the labels alone took 3.9 and 5.3 ms; CamVid test (OpenVINO INT8, app path) moved
    51.90 -> 51.93 and 57.51 -> 57.51, with 99.5% of labels unchanged."""
    if precision == "int8" and "BF16" in capabilities:
        return "bf16"
    return OPENVINO_PRECISIONS[precision]


def labels_by_reduction(model) -> None:
    """Replace the OpenVINO model's labels (the graph's ArgMax, a TopK here) by a max, a
    comparison and a min over the classes, in place: the same labels, the first maximum
    winning as in ArgMax.

    Why: with fp32 float parts the TopK was the largest node after the convolutions. Slim
    INT8 on a Zen 5 EPYC capped at AVX2 (tools/openvino_layers.py --isa AVX2):
    TopK 4.19 of 24.6 ms (17%); interleaved, quiet, 360x480: 26.6 -> 24.6 ms (x0.92);
    uncapped with the f32 hint x0.91 (INT8) and x0.93 (fp32), labels identical. With bf16
    float parts the TopK is cheap and this form slower (Base INT8 21.7 -> 25.4 ms), so the
    backend uses it only where the float parts run in fp32."""
    try:
        import openvino.opset13 as ops
    except ImportError:  # OpenVINO before 2025 keeps the opsets under openvino.runtime
        import openvino.runtime.opset13 as ops

    logits = next(r for r in model.get_results() if "logits" in r.output(0).get_names()).input_value(0)
    labels = next(r for r in model.get_results() if "labels" in r.output(0).get_names()).input_value(0)
    classes = logits.get_partial_shape()[1].get_length()
    channel_axis = ops.constant(np.array([1], np.int64))
    top = ops.reduce_max(logits, channel_axis, keep_dims=True)
    index = ops.constant(np.arange(classes, dtype=np.float32).reshape(1, classes, 1, 1))
    first_top = ops.reduce_min(
        ops.select(ops.equal(logits, top), index, ops.constant(np.float32(classes))),
        channel_axis,
        keep_dims=False,
    )
    labels.replace(ops.convert(first_top, "u8").output(0))  # the tensor name "labels" moves along
    model.validate_nodes_and_infer_types()


class OpenVinoBackend:
    """OpenVINO on the CPU: the deployment graph compiled per input shape; fp32, bf16
    (where the CPU has it) or INT8 (our QDQ model, whose remaining float parts run in bf16
    where the CPU has it: openvino_precision_hint). Compiled models are cached
    (OpenVINO's CACHE_DIR) in the user cache.

    One stream (the default) uses the latency hint: one frame at a time on all threads,
    for live video. `streams` > 1 uses the throughput hint: that many frames at once,
    from as many threads (`parallel`), each on its share of the cores, for files,
    where a frame's latency does not matter and throughput does."""

    takes_frames = True
    batches = False  # streams, not batches, give OpenVINO its frames in flight

    def __init__(
        self,
        checkpoint: Path,
        device: str,
        precision: str,
        calibration: str | Path | None = None,
        threads: int | None = None,
        streams: int = 1,
    ) -> None:
        if device == "cuda":
            raise BackendError("OpenVINO here runs on the CPU; for CUDA choose PyTorch or ONNX Runtime")
        if precision not in OPENVINO_PRECISIONS:
            raise BackendError(f"OpenVINO takes fp32, bf16 or INT8, not {precision}")
        self.core = openvino_core()
        capabilities = openvino_capabilities()
        if precision == "bf16" and "BF16" not in capabilities:
            raise BackendError(
                "this CPU has no bf16 support (OpenVINO reports "
                f"{', '.join(sorted(capabilities))}; bf16 needs AVX512-BF16 or AMX): use fp32 or INT8"
            )
        self.config = {
            "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
            "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1,
            "INFERENCE_PRECISION_HINT": openvino_precision_hint(precision, capabilities),
            # Unpinned: capture, rendering, the GUI and the encoder share these cores, and a
            # pinned worker cannot step aside. The app at 1080p on 2 cores, two interleaved
            # pairs: 14.3 and 14.4 FPS unpinned, 12.3 and 12.7 pinned.
            "ENABLE_CPU_PINNING": False,
        }
        if streams > 1:
            self.config["NUM_STREAMS"] = streams
        self.parallel = streams
        graph = OPENVINO_GRAPHS[precision]
        self.model = opened_with_repair(checkpoint, graph, calibration, self._read)
        if self.config["INFERENCE_PRECISION_HINT"] == "f32":
            labels_by_reduction(self.model)
        self.cache = openvino_cache_folder()
        self._idle: dict[tuple[int, ...], queue.SimpleQueue] = {}  # infer requests per shape
        self._compiling = threading.Lock()
        streams_text = f", {streams} streams" if streams > 1 else ""
        self.description = f"OpenVINO CPU {precision}{streams_text}"

    def _read(self, path: Path):
        try:
            return self.core.read_model(str(path))
        except Exception as error:
            raise BackendError(f"OpenVINO cannot read {path}: {first_line(error)}") from error

    def _requests(self, shape: tuple[int, ...]) -> queue.SimpleQueue:
        """The idle infer requests compiled for `shape` (N, h, w, 3): a static shape
        compiles to faster kernels than a dynamic one; each new size compiles once (from
        the cache after the first run).

        The first request infers once here, under the lock, before any other thread may
        use one. Why: OpenVINO's Python binding initialises its NumPy bridge on first use
        (a call-once inside a function-local static), and two threads arriving there at
        once deadlock, one holding the GIL: the whole process freezes, watchdog thread
        included. Seen as `segment` stuck at "0/12 frames" with 2 streams: the threads
        wait together for the compile and then infer at the same moment; 4 runs in 17 on
        odd-size videos under load before this warm-up, none in 236 after (py-spy: one thread in
        `__cxa_guard_acquire`, the other in `gil_safe_call_once_and_store<npy_api>`)."""
        with self._compiling:
            if shape not in self._idle:
                model = self.model.clone()
                model.reshape({model.inputs[0]: list(shape)})
                compiled = self._compile(model)
                requests = [compiled.create_infer_request() for _ in range(self.parallel)]
                requests[0].infer({0: np.zeros(shape, np.uint8)})
                self._idle[shape] = queue.SimpleQueue()
                for request in requests:
                    self._idle[shape].put(request)
            return self._idle[shape]

    def _compile(self, model):
        cached = {**self.config, "CACHE_DIR": str(self.cache)}
        try:
            return self.core.compile_model(model, "CPU", cached)
        except Exception as error:
            first_error = first_line(error)
        try:  # without the cache: if this works, the cache was damaged
            compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception as error:
            raise BackendError(f"OpenVINO cannot compile the model: {first_line(error)}") from error
        log.warning("OpenVINO cache %s is damaged (%s); starting it afresh", self.cache, first_error)
        shutil.rmtree(self.cache, ignore_errors=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        return compiled

    def _run(self, batch: np.ndarray, *outputs: str) -> list[torch.Tensor]:
        with self.lent_outputs(batch, *outputs) as lent:
            return [tensor.clone() for tensor in lent]

    def infer_logits(self, batch: np.ndarray) -> torch.Tensor:
        return self._run(batch, "logits")[0]

    def infer_labels(self, batch: np.ndarray) -> torch.Tensor:
        return self._run(batch, "labels")[0]

    def infer_both(self, batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        logits, labels = self._run(batch, "logits", "labels")
        return logits, labels

    @contextmanager
    def lent_outputs(self, batch: np.ndarray, *outputs: str) -> Iterator[list[torch.Tensor]]:
        """The named outputs in the infer request's own buffers, lent for the block: the
        request goes back to the pool (to be overwritten) when the block ends."""
        idle = self._requests(batch.shape)
        request = idle.get()
        try:
            request.infer({0: batch})
            yield [torch.from_numpy(request.get_tensor(output).data) for output in outputs]
        finally:
            idle.put(request)


@contextmanager
def both_outputs(backend: Backend, batch: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, labels) for `batch` from one run, valid inside the block only: OpenVINO
    lends its output buffers instead of copying the logits (7.4 MB at 352x480: 0.7 ms a
    frame, Slim bf16 on 2 cores, 13.4 against 14.1 ms); the others give their own."""
    lend = getattr(backend, "lent_outputs", None)
    if lend is None:
        yield backend.infer_both(batch)
        return
    with lend(batch, "logits", "labels") as (logits, labels):
        yield logits, labels


# ---------------------------------------------------------------- choosing


def create_backend(
    checkpoint: Path,
    backend: str,
    device: str,
    precision: str,
    calibration: str | Path | None,
    threads: int | None,
    streams: int = 1,
    cuda_graphs: bool = True,
) -> Backend:
    """Build the backend for concrete choices (engine.runtime.availability.resolve turns "auto"
    into them). `streams` (frames at once, for files) applies to OpenVINO; the others run
    one frame at a time. `cuda_graphs` applies to PyTorch on CUDA."""
    if backend == "torch":
        chosen: Backend = TorchBackend(checkpoint, device, precision, threads, cuda_graphs)
    elif backend == "openvino":
        chosen = OpenVinoBackend(checkpoint, device, precision, calibration, threads, streams)
    elif backend == "onnxruntime":
        chosen = OnnxRuntimeBackend(checkpoint, device, precision, calibration, threads)
    else:
        raise BackendError(f"unknown backend {backend!r}")
    log.info("backend: %s", chosen.description)
    return chosen
