"""Two known faults on the demo drive, counted for each checkpoint side by side in one run,
on the app's path:

- the shadowed road: the share of Road and of Car in the lower third of frames 190-235
  (every 5th), which hold nothing but road and verge, under trees;
- the hills: the share of Building, and of people (Pedestrian and Bicyclist), in the whole
  of frames 160-400 (every 10th), a stretch of hillsides, trees, cars and road with no
  person and no building but a low wall on the left at 240-280.

    .venv/bin/python tools/demo_faults.py weights/rtformer-slim-camvid.safetensors \\
        runs/slim-new.safetensors -o runs/demo-faults.json \\
        --image weights/demo-hills-before-after.jpg

The demo clip is held out: this looks at it, nothing trains on it. With no labels, the
figures are counts of known faults, not accuracies: Car on that road, and Building and
people on those hills, are (nearly) always wrong; Road is what a driver sees (the verges are
Pavement, Tree or Fence).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import cv2
import numpy as np

DEMO = "assets/demo-udacity-hmb-20fps.mp4"
ROAD_FRAMES = list(range(190, 236, 5))
HILL_FRAMES = list(range(160, 401, 10))


def frames_at(video: str, indices: set[int]) -> dict[int, np.ndarray]:
    """BGR frames of `video` at `indices`, decoded by the project's reader up to the last one."""
    from engine.media import read_frames

    decoded = itertools.islice(read_frames(video), max(indices) + 1)
    frames = {index: frame for index, (frame, _) in enumerate(decoded) if index in indices}
    if len(frames) < len(indices):
        raise SystemExit(f"{video}: has {len(frames)} of the frames asked for ({sorted(indices)})")
    return frames


def share(labels: np.ndarray, classes: int | list[int]) -> float:
    """Percent of `labels` in `classes` (one index or several)."""
    return float(np.isin(labels, classes).mean()) * 100


def shadowed_road(labels: dict[int, np.ndarray], names: list[str], frames: list[int]) -> dict:
    road, car = names.index("Road"), names.index("Car")
    lower = {index: labels[index][2 * labels[index].shape[0] // 3 :] for index in frames}
    per_frame = [(share(lower[index], road), share(lower[index], car)) for index in frames]
    road_share, car_share = np.mean(per_frame, axis=0)
    return {"road": round(road_share, 1), "car": round(car_share, 1), "per_frame": per_frame}


def hills(labels: dict[int, np.ndarray], names: list[str], frames: list[int]) -> dict:
    building, tree = names.index("Building"), names.index("Tree")
    people = [names.index("Pedestrian"), names.index("Bicyclist")]
    per_frame = [
        (
            share(labels[index], building),
            share(labels[index], people),
            share(labels[index], tree),
        )
        for index in frames
    ]
    building_share, people_share, tree_share = np.mean(per_frame, axis=0)
    return {
        "building": round(building_share, 2),
        "people": round(people_share, 2),
        "tree": round(tree_share, 1),
        "per_frame": per_frame,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--video", default=DEMO)
    parser.add_argument("--road-frames", type=int, nargs="+", default=ROAD_FRAMES)
    parser.add_argument("--hill-frames", type=int, nargs="+", default=HILL_FRAMES)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--image", help="write frame --image-frame for every checkpoint side by side")
    parser.add_argument("--image-frame", type=int, default=240)
    parser.add_argument("-o", "--output")
    args = parser.parse_args()
    from engine.runtime import Segmenter

    frames = frames_at(args.video, set(args.road_frames) | set(args.hill_frames) | {args.image_frame})
    results, tiles = {}, []
    for path in args.checkpoints:
        segmenter = Segmenter(path, args.backend, "cpu", args.precision)
        names = list(segmenter.class_names)
        labels = {index: segmenter.predict(frame) for index, frame in frames.items()}
        road = shadowed_road(labels, names, args.road_frames)
        stretch = hills(labels, names, args.hill_frames)
        results[path] = {"shadowed_road": road, "hills": stretch}
        print(
            f"{Path(path).name:<44} shadowed road: Road {road['road']:5.1f}%  Car {road['car']:5.1f}%"
            f"   hills: Building {stretch['building']:5.2f}%  people {stretch['people']:5.2f}%"
            f"  Tree {stretch['tree']:5.1f}%",
            flush=True,
        )
        if args.image:
            tiles.append(segmenter.overlay(frames[args.image_frame], labels[args.image_frame]))
    if args.image:
        cv2.imwrite(args.image, np.concatenate(tiles, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if args.output:
        frames_used = {"shadowed_road": args.road_frames, "hills": args.hill_frames}
        Path(args.output).write_text(json.dumps({"frames": frames_used, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
