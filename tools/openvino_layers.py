"""Where OpenVINO spends a frame: its per-layer performance counters for one checkpoint
and precision, summed by layer type and kernel, with the slowest layers.

    .venv/bin/python tools/openvino_layers.py weights/rtformer-slim-camvid.safetensors \
        --precision int8 [--rounds 30] [--json slim-int8-layers.json]

The kernel name says what ran: "..._I8" / "..._U8" kernels are INT8, "..._FP32" or
"ref_..." are float or reference islands, Reorder nodes are layout or precision
conversions between them. Run it on the CPU class in question (`rtformer doctor`);
BENCHMARKS.md keeps the tables.

`--isa AVX2` caps oneDNN's instruction set (ONEDNN_MAX_CPU_ISA, engine.runtime.cpu) on
a newer CPU, to see which kernels an AVX2-only CPU gets: the convolutions, MatMuls and
fused subgraphs take their AVX2 kernels and the INT8 model its 7-bit weights. It is not
such a CPU: a few of OpenVINO's own nodes (TopK, Interpolate, ReduceMax) keep their
AVX-512 kernels, and the cores, caches and clocks stay this machine's. Shares, not times.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

from engine.model.checkpoint import read_checkpoint_info
from engine.runtime.backends import OpenVinoBackend
from engine.runtime.cpu import ISA_CAP_VARIABLE, cpu_class, cpuinfo_field
from engine.runtime.preprocess import model_input_size


def layer_times(checkpoint: Path, precision: str, rounds: int, threads: int | None) -> dict:
    """{"layers": {name: (type, kernel, median ms)}, "frame_ms": median sum} over `rounds` frames."""
    backend = OpenVinoBackend(checkpoint, "cpu", precision, threads=threads)
    size = read_checkpoint_info(checkpoint).input_size or (360, 480)
    height, width = model_input_size(size, size)  # what the app feeds
    model = backend.model.clone()
    model.reshape({model.inputs[0]: [1, height, width, 3]})
    compiled = backend.core.compile_model(model, "CPU", {**backend.config, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    frame = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    for _ in range(3):
        request.infer({0: frame})
    samples: dict[str, list[float]] = collections.defaultdict(list)
    kinds: dict[str, tuple[str, str]] = {}
    for _ in range(rounds):
        request.infer({0: frame})
        for info in request.profiling_info:
            if info.status.name != "EXECUTED":
                continue
            samples[info.node_name].append(info.real_time.total_seconds() * 1e3)
            kinds[info.node_name] = (info.node_type, info.exec_type)
    layers = {name: (*kinds[name], statistics.median(values)) for name, values in samples.items()}
    return {"size": [height, width], "layers": layers, "frame_ms": sum(ms for *_, ms in layers.values())}


def by_kind(layers: dict) -> list[tuple[str, str, int, float]]:
    """(layer type, kernel, count, ms) summed, slowest first."""
    totals: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for node_type, kernel, ms in layers.values():
        totals[(node_type, kernel)].append(ms)
    rows = [(t, k, len(v), sum(v)) for (t, k), v in totals.items()]
    return sorted(rows, key=lambda row: -row[3])


def markdown(result: dict, top: int) -> str:
    total = result["frame_ms"]
    lines = [
        f"Sum of layer medians: {total:.1f} ms at {result['size'][0]}x{result['size'][1]}",
        "",
        "| layer type | kernel | layers | ms | share |",
        "|---|---|---|---|---|",
    ]
    for node_type, kernel, count, ms in by_kind(result["layers"])[:top]:
        lines.append(f"| {node_type} | {kernel} | {count} | {ms:.2f} | {ms / total:.1%} |")
    lines += ["", "| slowest layers | type | kernel | ms |", "|---|---|---|---|"]
    slowest = sorted(result["layers"].items(), key=lambda item: -item[1][2])[:top]
    for name, (node_type, kernel, ms) in slowest:
        lines.append(f"| {name[:60]} | {node_type} | {kernel} | {ms:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--precision", default="int8", choices=("fp32", "bf16", "int8"))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json", type=Path, help="write every layer's median ms as JSON")
    parser.add_argument("--isa", help="cap oneDNN's instruction set, e.g. AVX2 (ONEDNN_MAX_CPU_ISA)")
    args = parser.parse_args()
    if args.isa:  # before OpenVINO starts: oneDNN reads the cap once
        os.environ[ISA_CAP_VARIABLE] = args.isa.upper()
    result = layer_times(args.checkpoint, args.precision, args.rounds, args.threads)
    capped = f", capped at {os.environ[ISA_CAP_VARIABLE]} ({ISA_CAP_VARIABLE})" if args.isa else ""
    print(
        f"{args.checkpoint.name}, OpenVINO {args.precision}, {cpu_class()} CPU"
        f" ({cpuinfo_field('model name')}){capped}"
    )
    print(markdown(result, args.top))
    if args.json:
        args.json.write_text(json.dumps({**result, "command": " ".join(["python", *sys.argv])}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
