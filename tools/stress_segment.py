"""Stress `rtformer segment` for stalls: many runs on small odd-size videos,
each in its own process with a fresh OpenVINO compiled-model cache, while other
processes load every core with multi-threaded inference; every run has a time limit.

    .venv/bin/python tools/stress_segment.py --runs 200 --load 2 -o stress.json

A run past `--timeout` is killed and counted as a stall (the issue saw two sit at
"0/12 frames" for 180 s); each run also gets `--stall-limit`, so a stall inside the
pipeline ends with the watchdog's report (stage and stacks) instead of a kill. The
INT8 ONNX models are built once, up front, and shared: the fresh part of each run is
OpenVINO's compilation for the new input shape, where the issue's clue pointed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from engine.media import VideoWriter
from engine.resources import HOME_VARIABLE, calibration_folder, shipped_weights
from engine.runtime.cpu import cpu_class, cpuinfo_field

# (height, width, frames): odd sizes like the 321x239 and 3840x2160 inputs.
VIDEOS = ((239, 321, 12), (2160, 3840, 3), (61, 97, 9), (481, 641, 6), (1080, 1921, 4), (33, 45, 5))
LOAD_SCRIPT = """
import os, sys, numpy as np, onnxruntime as ort
options = ort.SessionOptions(); options.intra_op_num_threads = int(sys.argv[2])
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
frame = np.random.default_rng(0).integers(0, 256, (1, 352, 480, 3), dtype=np.uint8)
while True:
    session.run(None, {session.get_inputs()[0].name: frame})
"""


def write_videos(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for height, width, frames in VIDEOS:
        path = folder / f"odd-{width}x{height}.mp4"
        with VideoWriter(path, fps=Fraction(10)) as writer:
            for _ in range(frames):
                writer.write(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def prepared_home(folder: Path, checkpoint: Path) -> Path:
    """A user folder whose cache holds the fp32 and INT8 ONNX models (built here, once)."""
    home = folder / "prepared"
    environment = {**os.environ, HOME_VARIABLE: str(home)}
    calibration = str(calibration_folder())  # what segment calibrates on: the same INT8 file
    command = [
        sys.executable,
        "-m",
        "engine.commands.cli",
        "quantize",
        str(checkpoint),
        "--calibration",
        calibration,
    ]
    subprocess.run(command, env=environment, check=True, capture_output=True)
    return home


def fresh_home(prepared: Path, folder: Path, index: int) -> Path:
    """A copy of the prepared user folder without OpenVINO's compiled models."""
    home = folder / f"run-{index}"
    shutil.copytree(prepared, home, ignore=shutil.ignore_patterns("openvino"))
    return home


def start_load(count: int, model: Path, threads: int) -> list[subprocess.Popen]:
    script = [sys.executable, "-c", LOAD_SCRIPT, str(model), str(threads)]
    return [subprocess.Popen(script, stdout=subprocess.DEVNULL) for _ in range(count)]


def one_run(video: Path, home: Path, checkpoint: Path, args) -> dict:
    command = [
        *(sys.executable, "-m", "engine.commands.cli", "segment", str(video)),
        *("-o", str(home / "out.mp4"), "--checkpoint", str(checkpoint)),
        *("--backend", "openvino", "--precision", "int8", "--streams", "2"),
        *("--stall-limit", str(args.stall_limit)),
    ]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            env={**os.environ, HOME_VARIABLE: str(home)},
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
        code, tail = done.returncode, done.stderr[-600:]
    except subprocess.TimeoutExpired as expired:
        code, tail = "timeout", (expired.stderr or b"")[-600:].decode(errors="replace")
    return {"video": video.name, "seconds": round(time.monotonic() - started, 1), "code": code, "tail": tail}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--load", type=int, default=2, help="processes of inference beside the runs")
    parser.add_argument("--load-threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--stall-limit", type=float, default=120)
    parser.add_argument("--checkpoint", type=Path, default=shipped_weights()["slim"])
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rtformer-stress-") as scratch:
        folder = Path(scratch)
        videos = write_videos(folder)
        prepared = prepared_home(folder, args.checkpoint)
        fp32 = next((prepared / "cache" / "onnx").glob("*deploy-fp32.onnx"))
        load = start_load(args.load, fp32, args.load_threads)
        results = []
        try:
            for index in range(args.runs):
                home = fresh_home(prepared, folder, index)
                results.append(one_run(videos[index % len(videos)], home, args.checkpoint, args))
                shutil.rmtree(home, ignore_errors=True)
                last = results[-1]
                print(
                    f"{index + 1}/{args.runs} {last['video']}: {last['code']} in {last['seconds']} s",
                    flush=True,
                )
        finally:
            for process in load:
                process.kill()
    seconds = [r["seconds"] for r in results]
    summary = {
        "cpu": cpuinfo_field("model name"),
        "cpu_class": cpu_class(),
        "command": " ".join(["python", *sys.argv]),
        "runs": len(results),
        "load_processes": args.load,
        "timeout_s": args.timeout,
        "past_limit": sum(r["code"] == "timeout" for r in results),
        "failed": [r for r in results if r["code"] not in (0, "timeout")],
        "stalled": [r for r in results if r["code"] == "timeout" or "stalled" in r["tail"]],
        "seconds": {"median": statistics.median(seconds), "max": max(seconds)} if seconds else {},
    }
    text = json.dumps(summary, indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    return 0 if not summary["stalled"] and not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
