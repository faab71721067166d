"""Archive jobs measured side by side on one folder of short videos cut from a clip:

- each file by its own `rtformer segment FILE -o FILE` (one process per file, as before
  archive jobs), against the in-process engine and the Ray engine embedded on this
  machine (`--engine ray`), each the whole job from the command line;
- the in-process engine's gap between one file's end and the next file's first frame;
- a rerun of the finished job (it must skip everything);
- the job killed (SIGKILL) `--kills` times at random moments, then finished: each input
  done once, every output complete;
- label maps of a few files on a two-node Ray cluster simulated on this machine
  (ray.cluster_utils), compared with the in-process engine's.

    .venv/bin/python tools/bench_archive.py data/udacity-hmb-clip/hmb-first-30s-20fps.mp4 \\
        -o docs/benchmarks/archive-amx.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.commands.archive import JobSettings, Manifest, collect_inputs, in_process, run_archive
from engine.commands.bench import machine_description, write_json
from engine.media import VideoWriter, probe, read_frames
from engine.resources import shipped_weights
from engine.runtime.cpu import cpu_class

RTFORMER = [sys.executable, "-m", "engine.commands.cli"]
ROOT = Path(__file__).resolve().parents[1]


def cut_videos(source: Path, folder: Path, count: int, frames: int) -> list[Path]:
    """`count` videos of `frames` frames each, cut from `source` at evenly spread starts."""
    info = probe(source)
    clip = [frame for frame, _ in read_frames(source)]
    step = max(1, (len(clip) - frames) // max(1, count - 1))
    paths = []
    for index in range(count):
        start = min(index * step, len(clip) - frames)
        path = folder / f"drive-{index:02d}.mp4"
        with VideoWriter(path, fps=info.fps) as writer:
            for frame in clip[start : start + frames]:
                writer.write(frame)
        paths.append(path)
    return paths


def timed(command: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def one_by_one(videos: list[Path], folder: Path) -> float:
    folder.mkdir(parents=True)
    return sum(timed([*RTFORMER, "segment", str(video), "-o", str(folder / video.name)]) for video in videos)


def gaps_in_process(videos_folder: Path, output: Path) -> dict:
    """The in-process engine through the API, each row's arrival timed: the gap from one
    file's end to the next file's first frame (the next one's start, as its row's seconds
    place it, plus its own time to the first frame)."""
    settings = JobSettings(checkpoint=str(shipped_weights()["slim"]))
    plan = collect_inputs([str(videos_folder)], output)
    arrivals: list[float] = []

    def timed_engine(items, folder, settings, finished, progress):
        def arrive(row):
            arrivals.append(time.perf_counter())
            finished(row)

        in_process(items, folder, settings, arrive, progress)

    report = run_archive(plan, output, settings, progress=False, engine=timed_engine)
    rows = report.rows
    gaps = [
        (arrivals[i + 1] - rows[i + 1]["seconds"]) - arrivals[i] + rows[i + 1]["first_frame_seconds"]
        for i in range(len(rows) - 1)
    ]
    return {
        "gap_seconds_median": statistics.median(gaps),
        "gap_seconds_max": max(gaps),
        "first_frame_seconds_median": statistics.median(row["first_frame_seconds"] for row in rows),
    }


def kills(videos_folder: Path, output: Path, count: int, seed: int = 0) -> dict:
    moments = random.Random(seed)
    command = [*RTFORMER, "segment", str(videos_folder), "-o", str(output)]
    for _ in range(count):
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=moments.uniform(3.0, 15.0))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
    done_before = sum(row["status"] == "done" for row in Manifest(output).rows())
    finish = timed(command)
    rows = Manifest(output).rows()
    done = [row["output"] for row in rows if row["status"] == "done"]
    complete = all(
        len(list(read_frames(output / name))) == probe(videos_folder / name).frames for name in set(done)
    )
    leftovers = [path.name for path in output.rglob(".*")]
    return {
        "kills": count,
        "done_before_the_last_run": done_before,
        "inputs": len(list(videos_folder.glob("*.mp4"))),
        "done_rows": len(done),
        "distinct_done": len(set(done)),
        "outputs_complete": complete,
        "hidden_leftovers": leftovers,
        "last_run_seconds": finish,
    }


def two_node_labels(videos: list[Path], folder: Path) -> dict:
    """Label maps of `videos` in process and on a simulated two-node cluster: equal?"""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray.cluster_utils import Cluster

    subset = folder / "subset"
    subset.mkdir(parents=True)
    for video in videos:
        shutil.copy(video, subset / video.name)
    timed([*RTFORMER, "segment", str(subset), "-o", str(folder / "process"), "--labels"])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        arguments = ["--engine", "ray", "--ray-address", cluster.address, "--cpus-per-worker", "1"]
        seconds = timed(
            [*RTFORMER, "segment", str(subset), "-o", str(folder / "ray"), "--labels", *arguments]
        )
    finally:
        cluster.shutdown()
    import cv2

    ours = sorted((folder / "ray").rglob("*.png"))
    theirs = sorted((folder / "process").rglob("*.png"))
    same = len(ours) == len(theirs) and all(
        np.array_equal(cv2.imread(str(a), cv2.IMREAD_UNCHANGED), cv2.imread(str(b), cv2.IMREAD_UNCHANGED))
        for a, b in zip(ours, theirs, strict=True)
    )
    nodes = {row.get("node") for row in Manifest(folder / "ray").rows()}
    return {
        "files": len(videos),
        "label_maps": len(ours),
        "identical": same,
        "nodes": len(nodes),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="a clip to cut the videos from")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the JSON report")
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--frames", type=int, default=60, help="frames per video")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument(
        "--engines-only", action="store_true", help="only the engines side by side and the rerun"
    )
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    try:
        videos_folder = work / "videos"
        videos_folder.mkdir()
        videos = cut_videos(arguments.source, videos_folder, arguments.videos, arguments.frames)
        frames = arguments.videos * arguments.frames
        job = [*RTFORMER, "segment", str(videos_folder)]
        report: dict = {"machine": {**machine_description(), "class": cpu_class()}, "videos": len(videos)}
        report["frames"] = frames
        size = probe(videos[0])
        report["size"] = f"{size.width}x{size.height}"
        # Side by side, in one run; the in-process engine twice, first and last, to see the drift.
        report["seconds"] = {
            "in_process": timed([*job, "-o", str(work / "process")]),
            "one_by_one": one_by_one(videos, work / "single"),
            "ray_embedded": timed([*job, "-o", str(work / "ray"), "--engine", "ray"]),
            "in_process_again": timed([*job, "-o", str(work / "process-again")]),
        }
        report["seconds"]["rerun_finished_job"] = timed([*job, "-o", str(work / "process")])
        seconds = report["seconds"]
        process = (seconds["in_process"] + seconds["in_process_again"]) / 2
        report["fps"] = {
            name: frames / value for name, value in seconds.items() if name != "rerun_finished_job"
        }
        report["ratios"] = {
            "in_process_vs_one_by_one_throughput": seconds["one_by_one"] / process,
            "ray_vs_in_process_throughput": process / seconds["ray_embedded"],
            "rerun_vs_job_time": seconds["rerun_finished_job"] / process,
        }
        write_json(report, arguments.output)  # after each part: what was measured stays
        if arguments.engines_only:
            return
        report["gaps"] = gaps_in_process(videos_folder, work / "gaps")
        write_json(report, arguments.output)
        report["kills"] = kills(videos_folder, work / "killed", arguments.kills)
        write_json(report, arguments.output)
        report["two_node_cluster"] = two_node_labels(videos[:3], work / "cluster")
        write_json(report, arguments.output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
