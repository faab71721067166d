"""This CPU: its /proc/cpuinfo fields and its class, the one reader for artefacts (the
INT8 weights' width), auto's key, doctor, bench and the tools.

The machines this runs on differ in CPU from day to day, and three things
follow the class: whether bf16 runs (AVX512-BF16 or AMX), whether 8-bit INT8
weights are exact (VNNI adds u8 x s8 products in 32 bits; without it vpmaddubsw
saturates at 16 bits), and how fast each backend is (measured, never assumed).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# Each class a superset of the next, and the /proc/cpuinfo flags that make it.
CPU_CLASSES = (
    ("AMX", {"amx_int8", "amx_bf16"}),
    ("AVX-512 BF16", {"avx512_bf16"}),
    ("VNNI", {"avx512_vnni", "avx_vnni"}),
    ("AVX2", {"avx2"}),
)
VNNI_CLASSES = ("AMX", "AVX-512 BF16", "VNNI")

# oneDNN, and with it OpenVINO's convolutions and MatMuls, uses no instruction set above
# the one this variable names. Set to AVX2 on an AVX-512 machine, it profiles the AVX2
# kernels there (tools/openvino_layers.py --isa AVX2), and the CPU must then be treated
# as AVX2 throughout: OpenVINO still reports BF16, and a bf16 hint under an AVX2 cap
# fails to compile ("Supported primitive descriptors list is empty for node ... Pooling").
ISA_CAP_VARIABLE = "ONEDNN_MAX_CPU_ISA"
# The flags each cap takes away, by prefix (oneDNN's cap names; others take nothing away).
ISA_CAP_REMOVES = {
    "SSE41": ("avx", "avx2", "avx512", "avx_vnni", "amx"),
    "AVX": ("avx2", "avx512", "avx_vnni", "amx"),
    "AVX2": ("avx512", "avx_vnni", "amx"),
    "AVX2_VNNI": ("avx512", "amx"),
    "AVX2_VNNI_2": ("avx512", "amx"),
    "AVX512_CORE": ("avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx"),
    "AVX512_CORE_VNNI": ("avx512_bf16", "avx512_fp16", "amx"),
    "AVX512_CORE_BF16": ("avx512_fp16", "amx"),
    "AVX10_1_512": ("amx",),
    "AVX512_CORE_FP16": ("amx",),
}


def cpuinfo_field(name: str) -> str:
    """The value of the first `name` line of /proc/cpuinfo ("model name", "flags"); empty
    where there is none (not Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.partition(":")[2].strip()
    return ""


def cpu_flags() -> set[str]:
    """/proc/cpuinfo's flags, less those that oneDNN's instruction-set cap forbids."""
    return capped_flags(set(cpuinfo_field("flags").split()), os.environ.get(ISA_CAP_VARIABLE, ""))


def capped_flags(flags: set[str], cap: str) -> set[str]:
    """`flags` without those above oneDNN's instruction-set `cap` (ISA_CAP_VARIABLE's value)."""
    removed = ISA_CAP_REMOVES.get(cap.strip().upper(), ())
    return {flag for flag in flags if not flag.startswith(removed)}


def bf16_capped() -> bool:
    """True where oneDNN's instruction-set cap rules bf16 out, whatever the CPU has."""
    return not capped_flags({"avx512_bf16"}, os.environ.get(ISA_CAP_VARIABLE, ""))


def cpu_class(flags: set[str] | None = None) -> str:
    """This CPU's class (CPU_CLASSES): "AMX", "AVX-512 BF16", "VNNI", "AVX2", or "other"
    (also where /proc/cpuinfo is missing)."""
    flags = cpu_flags() if flags is None else flags
    return next((name for name, needs in CPU_CLASSES if flags & needs), "other")
