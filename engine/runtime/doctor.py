"""`rtformer doctor`: what this machine has, in one report (also the app's Help > System report).

Versions, CPU features, CUDA devices, ONNX Runtime providers, which backends the app
offers and why the others are unavailable (`engine.runtime.availability`, the Backend menu's
own logic), the cameras Qt lists, whether H.264 encoding works, where settings,
caches and recordings go and whether they are writable, and what has been tested where.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine import resources
from engine.runtime.availability import auto_summary, available, onnxruntime_conflict
from engine.runtime.cpu import ISA_CAP_VARIABLE, VNNI_CLASSES, cpu_class, cpu_flags

# CPU flags (as /proc/cpuinfo names them) that decide the speed of our CPU paths.
CPU_FLAGS = {
    "avx2": "AVX2 (fp32 kernels)",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI (fast INT8)",
    "avx_vnni": "AVX-VNNI (fast INT8)",
    "avx512_bf16": "AVX-512 BF16",
    "amx_int8": "AMX INT8",
}

# Where each path has been run (README, "Support"); the report adds this machine's view.
SUPPORT = (
    (
        "CPU paths (PyTorch, ONNX Runtime fp32 and INT8, OpenVINO fp32 and INT8)",
        "tested in CI on Linux x86-64, every change",
    ),
    (
        "OpenVINO bf16",
        "measured on a Xeon with AMX: CamVid test within 0.05 mIoU of fp32 (Slim, Base); needs "
        "AVX512-BF16 or AMX, and the error where it is missing is tested",
    ),
    ("PyTorch CUDA", "measured once on an NVIDIA H200 (torch 2.11); not in CI"),
    ("ONNX Runtime CUDA/TensorRT", "never run by the project"),
    ("Real cameras", "never run here (no camera); the FFmpeg capture path is tested with test sources"),
    ("Windows and macOS capture", "never run; the device mapping is unit-tested"),
)


MEASURED_FILE = "measured.json"  # in the assets folder: the rows BENCHMARKS.md summarises


def measured_on(cpu_class_name: str) -> str:
    """What was measured on a CPU class, from the one data file BENCHMARKS.md also cites
    (assets/measured.json): the model alone at 360x480 on 2 cores, per variant and runner."""
    data = json.loads((resources.assets_folder() / MEASURED_FILE).read_text())
    entry = data["classes"].get(cpu_class_name) or {"rows": []}
    if not entry["rows"]:
        return "not measured on this class yet"
    rows = ", ".join(
        f"{row['variant'].capitalize()} {row['runner']} {row['median_ms']:.1f} ms ({row['fps']:.0f} FPS)"
        for row in entry["rows"]
    )
    return f"{rows}: {entry['machine']}, 360x480, one frame at a time (BENCHMARKS.md)"


@dataclass
class Section:
    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, value: object) -> None:
        self.rows.append((name, str(value)))


def version_of(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> Section:
    section = Section("Versions")
    section.add("RTFormer Studio", version_of("rtformer-studio"))
    section.add("Python", f"{platform.python_version()} ({sys.executable})")
    section.add("system", f"{platform.system()} {platform.release()} {platform.machine()}")
    for label, distribution in (
        ("torch", "torch"),
        ("ONNX Runtime", "onnxruntime"),
        ("ONNX Runtime GPU", "onnxruntime-gpu"),
        ("OpenVINO", "openvino"),
        ("PySide6", "PySide6"),
        ("PyAV", "av"),
        ("OpenCV", "opencv-python-headless"),
        ("NumPy", "numpy"),
        ("Ray (segment --engine ray)", "ray"),
    ):
        section.add(label, version_of(distribution))
    conflict = onnxruntime_conflict()
    if conflict:
        section.add("WARNING", conflict)
    return section


def cpu() -> Section:
    import torch

    section = Section("CPU")
    section.add("processor", platform.processor() or platform.machine())
    section.add("cores", os.cpu_count())
    section.add("torch threads", torch.get_num_threads())
    section.add("torch CPU kernels", torch.backends.cpu.get_cpu_capability())
    flags = cpu_flags()
    if flags:
        present = [label for flag, label in CPU_FLAGS.items() if flag in flags]
        section.add("features", ", ".join(present) or "none of AVX2, AVX-512, VNNI")
        section.add(
            "INT8",
            "fast (VNNI): 8-bit weights"
            if cpu_class(flags) in VNNI_CLASSES
            else "works without VNNI (7-bit weights); measured on such a CPU: 1.43x fp32 on OpenVINO",
        )
        section.add("class", cpu_class(flags))
        cap = os.environ.get(ISA_CAP_VARIABLE)
        if cap:
            section.add(
                "instruction-set cap", f"{ISA_CAP_VARIABLE}={cap}: features and class above are capped"
            )
        section.add("measured on this class", measured_on(cpu_class(flags)))
    else:
        section.add("features", "unknown on this system (no /proc/cpuinfo)")
    return section


def cuda() -> Section:
    import torch

    section = Section("CUDA")
    section.add("torch built with CUDA", torch.version.cuda or "no (CPU build)")
    if not torch.cuda.is_available():
        section.add("devices", "none")
        return section
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        memory = properties.total_memory / 2**30
        section.add(
            f"device {index}", f"{properties.name}, {memory:.0f} GiB, sm_{properties.major}{properties.minor}"
        )
    return section


def onnx_runtime() -> Section:
    from engine.runtime.availability import onnxruntime_providers

    section = Section("ONNX Runtime")
    section.add("providers", ", ".join(onnxruntime_providers()))
    return section


def openvino() -> Section:
    from engine.runtime.backends import openvino_capabilities

    section = Section("OpenVINO")
    section.add("CPU precisions", ", ".join(sorted(openvino_capabilities())))
    return section


def backends() -> Section:
    """Every backend the app's menu lists: available, or unavailable with the reason."""
    section = Section("Backends")
    for choice, reason in available():
        section.add(choice.label, f"unavailable: {reason}" if reason else "available")
    section.add("default (auto)", auto_summary())
    return section


def cameras() -> Section:
    section = Section("Cameras (Qt Multimedia)")
    try:
        found = qt_cameras()
    except (ImportError, RuntimeError) as error:
        section.add("cameras", f"cannot list: {error}")
        return section
    for device_id, name, resolutions in found:
        sizes = ", ".join(f"{w}x{h}" for w, h in resolutions[:6])
        section.add(name, f"{device_id} ({sizes})")
    if not found:
        section.add("cameras", "none listed")
    return section


def qt_cameras() -> list:
    """The cameras Qt lists. Discovery needs a Qt application object: inside the app, its
    own; elsewhere a child process makes one, so this process never holds a bare
    QCoreApplication (a QApplication could not be created after it)."""
    from PySide6.QtCore import QCoreApplication

    from engine.cameras import list_cameras

    if QCoreApplication.instance() is not None:
        return list_cameras()
    code = (
        "import json; from PySide6.QtCore import QCoreApplication; app = QCoreApplication([]); "
        "from engine.cameras import list_cameras; print(json.dumps(list_cameras()))"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if child.returncode != 0:
        raise RuntimeError(child.stderr.strip().splitlines()[-1] if child.stderr.strip() else "Qt failed")
    return json.loads(child.stdout.strip().splitlines()[-1])


def encoding() -> Section:
    """Writes a short clip: H.264 works only if a real file comes out."""
    import numpy as np

    from engine.media import VideoError, VideoWriter, read_frames

    section = Section("Video encoding")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "check.mp4"
        try:
            with VideoWriter(path, fps=10) as writer:
                for index in range(5):
                    writer.write(np.full((64, 96, 3), index * 40, np.uint8))
                codec = writer.codec
            frames = sum(1 for _ in read_frames(path))
        except (VideoError, OSError) as error:
            section.add("recording", f"FAILS: {error}")
            return section
    h264 = codec in ("libx264", "h264")
    verdict = "H.264 works" if h264 else f"no H.264 encoder: recordings use {codec}"
    section.add("recording", f"{verdict} ({codec}, {frames} of 5 frames read back)")
    return section


def writable(folder: Path) -> str:
    """'writable' or why not; the folder is created if it can be (what the app would do)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        return f"NOT writable ({error.strerror or error})"
    return "writable"


def folders() -> Section:
    section = Section("Folders")
    for label, folder in (
        ("settings and crash logs", resources.user_data_dir()),
        ("caches (ONNX exports, INT8)", resources.user_cache_dir()),
        ("recordings and snapshots (default)", resources.recordings_dir()),
        ("your checkpoints", resources.checkpoints_dir()),
    ):
        section.add(label, f"{folder} ({writable(folder)})")
    for variant, path in resources.shipped_weights().items():
        section.add(f"shipped {variant} weights", path if path.is_file() else f"MISSING: {path}")
    demo = resources.demo_video()
    section.add("demo video", demo if demo.is_file() else f"MISSING: {demo}")
    return section


def support() -> Section:
    import torch

    section = Section("Tested where")
    for path, where in SUPPORT:
        section.add(path, where)
    machine = f"{platform.system()} {platform.machine()}"
    on_cuda = "yes" if torch.cuda.is_available() else "no CUDA device"
    section.add("this machine", f"{machine}; CUDA paths usable here: {on_cuda}")
    return section


SECTIONS = (versions, cpu, cuda, onnx_runtime, openvino, backends, cameras, encoding, folders, support)


def system_report() -> list[Section]:
    """Every section; one that fails says so instead of stopping the report."""
    sections = []
    for make in SECTIONS:
        try:
            sections.append(make())
        except Exception as error:  # a diagnostic must report, never crash
            sections.append(Section(make.__name__, [("error", f"{type(error).__name__}: {error}")]))
    return sections


def format_system_report(sections: list[Section]) -> str:
    width = max(len(name) for section in sections for name, _ in section.rows)
    lines = []
    for section in sections:
        lines += [section.title, "-" * len(section.title)]
        lines += [f"  {name:<{width}}  {value}" for name, value in section.rows]
        lines.append("")
    return "\n".join(lines)


def report_json(sections: list[Section]) -> str:
    return json.dumps([asdict(section) for section in sections], indent=2)
