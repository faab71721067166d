"""Model artefacts: the one owner of "the ONNX model for (checkpoint, precision,
calibration)" and of the OpenVINO compiled-model cache.

Every artefact lives in the user cache folder (never beside the checkpoint, which may
sit in an installed package) under a name made of what decides its content:

    <stem>.<checkpoint digest>.opset<N>.g<graph version>.deploy-fp32.onnx
    <stem>.<checkpoint digest>.opset<N>.g<graph version>.deploy-int8.<calibration key>.onnx

so a retrained checkpoint, a new export graph (GRAPH_VERSION) or other calibration
frames get new files and an old cache is never reused for them. Files are written
under a unique temporary name and renamed into place, so two processes exporting at
once never see each other's half-written files. A cached file that ONNX cannot parse
is rebuilt once; a file that parses is never deleted because a runtime failed on it
(a CUDA or TensorRT provider failure says nothing about the file).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from engine.resources import calibration_folder, user_cache_dir
from engine.runtime.cpu import VNNI_CLASSES, cpu_class
from engine.runtime.errors import BackendError
from engine.runtime.export import DEFAULT_OPSET

log = logging.getLogger("rtformer.engine")

# The deployment graph's layout (engine.runtime.export.FramesToLogits). Version 2: uint8 "labels"
# output beside the logits (commit 7f1a753); caches of version 1 lack it.
GRAPH_VERSION = 2
FP32_KIND = "deploy-fp32"
CALIBRATION_FRAMES = 16
# The INT8 weights' width, by CPU class (engine.runtime.cpu), unless this variable says.
INT8_WEIGHT_BITS_VARIABLE = "RTFORMER_INT8_WEIGHT_BITS"


def int8_weight_bits() -> int:
    """The width of the INT8 models' weights here: $RTFORMER_INT8_WEIGHT_BITS (7 or 8), else
    8 on CPUs with VNNI and 7 on the others.

    Without VNNI, x86 multiplies u8 x s8 pairs with a saturating 16-bit add (vpmaddubsw),
    which 8-bit weights overflow: on an AVX2 EPYC, Slim on CamVid test scored 42.2 with
    8 bits, 52.1 with 7 (fp32 52.7). With VNNI (or AMX) the products are exact, and 8
    bits keep more: on a Xeon with AMX, Base scored 57.18 with 8 bits against 56.36 with
    7 (fp32 57.29; ONNX Runtime, OpenVINO alike), Slim 52.10 against 52.13, at the same
    speed (tools/int8_weight_width.py; the model card has the figures).
    """
    value = os.environ.get(INT8_WEIGHT_BITS_VARIABLE, "").strip()
    if not value:
        return 8 if cpu_class() in VNNI_CLASSES else 7
    if value not in ("7", "8"):
        raise BackendError(f"${INT8_WEIGHT_BITS_VARIABLE} must be 7 or 8, not {value!r}")
    return int(value)


def int8_kind(bits: int) -> str:
    """The artefact kind of INT8 models with `bits`-bit weights: "deploy-int8w7", "deploy-int8w8"."""
    return f"deploy-int8w{bits}"


def file_digest(path: str | Path, length: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def onnx_folder() -> Path:
    folder = user_cache_dir() / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def openvino_cache_folder() -> Path:
    """OpenVINO's CACHE_DIR: its compiled models, one blob per (graph, shape, settings)."""
    folder = user_cache_dir() / "openvino"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def artifact_path(checkpoint: str | Path, kind: str, opset: int = DEFAULT_OPSET, key: str = "") -> Path:
    """Where the artefact `kind` of `checkpoint` is cached; `key` names its calibration."""
    checkpoint = Path(checkpoint)
    suffix = f".{key}" if key else ""
    name = f"{checkpoint.stem}.{file_digest(checkpoint)}.opset{opset}.g{GRAPH_VERSION}.{kind}{suffix}.onnx"
    return onnx_folder() / name


def calibration_key(source: str | Path, count: int = CALIBRATION_FRAMES) -> str:
    """What identifies a calibration: the content of the source (a video file, or the
    images of a folder with their names) and the number of frames taken from it."""
    from engine.media import list_images

    source = Path(source)
    digest = hashlib.sha256(f"frames={count}".encode())
    if source.is_file():
        digest.update(file_digest(source, 64).encode())
    elif source.is_dir():
        for image in list_images(source):
            digest.update(image.name.encode())
            digest.update(file_digest(image, 64).encode())
    else:
        raise BackendError(f"calibration source not found: {source}")
    return "cal-" + digest.hexdigest()[:10]


def default_calibration() -> Path | None:
    """The frames INT8 is calibrated on when the user gives none: the bundled frames of
    CamVid train and the Udacity drive (assets/calibration/README.md says why both).
    The model card's INT8 figures use them."""
    folder = calibration_folder()
    return folder if folder.is_dir() else None


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary)` and rename the result to `path`. The temporary name is
    unique, so concurrent writers of one artefact never overwrite each other's half."""
    descriptor, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx.tmp", dir=path.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        write(temporary)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def fp32_model(checkpoint: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """The fp32 deployment graph (frames in; logits and labels out), exported on first use."""
    from engine.model.checkpoint import load_checkpoint
    from engine.runtime.export import export_onnx

    path = artifact_path(checkpoint, FP32_KIND, opset)
    if path.is_file():
        return path
    model, info = load_checkpoint(checkpoint)
    log.info("exporting %s to %s", checkpoint, path)
    size = info.input_size or (360, 480)

    def export(temporary: Path) -> None:
        export_onnx(model, temporary, opset, sample_size=size, normalisation=(info.mean, info.std))

    return write_atomically(path, export)


def int8_model(
    checkpoint: str | Path, calibration: str | Path | None = None, count: int = CALIBRATION_FRAMES
) -> Path:
    """The INT8 (QDQ) deployment graph calibrated on `calibration` (a folder of images or a
    video; default: the bundled calibration frames), quantized on first use."""
    calibration = calibration if calibration is not None else default_calibration()
    if calibration is None:
        raise BackendError(
            f"no calibration frames for the INT8 model of {checkpoint}: give a folder of images or a video"
        )
    bits = int8_weight_bits()
    path = artifact_path(checkpoint, int8_kind(bits), key=calibration_key(calibration, count))
    if path.is_file():
        return path
    from engine.runtime.quantize import quantize_graph

    fp32 = fp32_model(checkpoint)
    write_atomically(
        path, lambda temporary: quantize_graph(checkpoint, fp32, calibration, count, temporary, bits)
    )
    log.info(
        "wrote INT8 model %s (%d-bit weights, calibrated on %d frames of %s)", path, bits, count, calibration
    )
    return path


def onnx_model(checkpoint: str | Path, precision: str, calibration: str | Path | None = None) -> Path:
    """The deployment graph of `checkpoint` for `precision` ("fp32" or "int8")."""
    if precision == "int8":
        return int8_model(checkpoint, calibration)
    if precision == "fp32":
        return fp32_model(checkpoint)
    raise BackendError(f"no ONNX model for precision {precision!r}: the deployment graphs are fp32 and int8")


def is_damaged(path: Path) -> bool:
    """True when `path` is not a loadable ONNX model (truncated, overwritten, empty)."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load(str(path), load_external_data=False))
    except Exception:  # onnx raises DecodeError, ValidationError, OSError...
        return True
    return False


def opened_with_repair(
    checkpoint: str | Path,
    precision: str,
    calibration: str | Path | None,
    open_file: Callable[[Path], object],
):
    """`open_file(path)` on the cached artefact; when that fails and the file is damaged,
    the artefact is rebuilt once and opened again. Other failures propagate untouched,
    and the (valid) file stays."""
    path = onnx_model(checkpoint, precision, calibration)
    try:
        return open_file(path)
    except Exception as error:
        if not is_damaged(path):
            raise
        log.warning("cached model %s is damaged (%s); building it again", path, first_line(error))
        path.unlink(missing_ok=True)
        return open_file(onnx_model(checkpoint, precision, calibration))


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
