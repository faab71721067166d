"""This CPU: its /proc/cpuinfo fields and its class, the one reader for artefacts (the
INT8 weights' width), auto's key, doctor, bench and the tools.

The project's machines change CPU from day to day (issue 21), and three things
follow the class: whether bf16 runs (AVX512-BF16 or AMX), whether 8-bit INT8
weights are exact (VNNI adds u8 x s8 products in 32 bits; without it vpmaddubsw
saturates at 16 bits), and how fast each backend is (measured, never assumed).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

# Each class a superset of the next, and the /proc/cpuinfo flags that make it.
CPU_CLASSES = (
    ("AMX", {"amx_int8", "amx_bf16"}),
    ("AVX-512 BF16", {"avx512_bf16"}),
    ("VNNI", {"avx512_vnni", "avx_vnni"}),
    ("AVX2", {"avx2"}),
)
VNNI_CLASSES = ("AMX", "AVX-512 BF16", "VNNI")


def cpuinfo_field(name: str) -> str:
    """The value of the first `name` line of /proc/cpuinfo ("model name", "flags"); empty
    where there is none (not Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.partition(":")[2].strip()
    return ""


def cpu_flags() -> set[str]:
    return set(cpuinfo_field("flags").split())


def cpu_class(flags: set[str] | None = None) -> str:
    """This CPU's class (CPU_CLASSES): "AMX", "AVX-512 BF16", "VNNI", "AVX2", or "other"
    (also where /proc/cpuinfo is missing)."""
    flags = cpu_flags() if flags is None else flags
    return next((name for name, needs in CPU_CLASSES if flags & needs), "other")
