"""How much of the shadowed road on the demo drive each checkpoint draws as Car, side by
side in one run: the share of Road and of Car in the lower third of chosen frames (where
the demo's frames 190-235 hold nothing but road and verge, under trees), on the app's path.

    .venv/bin/python tools/shadowed_road.py weights/rtformer-slim-camvid.safetensors \\
        runs/slim-shadows.safetensors -o runs/s17/shadowed-road.json \\
        --image weights/demo-0m11-shadows-before-after.jpg

The demo clip is held out: this looks at it, nothing trains on it. With no labels, the
figure is a count of one known fault, not an accuracy: Car there is always wrong, Road is
what a driver sees (the verges are Pavement, Tree or Fence).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import cv2
import numpy as np

DEMO = "assets/demo-udacity-hmb-20fps.mp4"


def frames_at(video: str, indices: set[int]) -> dict[int, np.ndarray]:
    """BGR frames of `video` at `indices`, decoded by the project's reader up to the last one."""
    from engine.media import read_frames

    decoded = itertools.islice(read_frames(video), max(indices) + 1)
    frames = {index: frame for index, (frame, _) in enumerate(decoded) if index in indices}
    if len(frames) < len(indices):
        raise SystemExit(f"{video}: has {len(frames)} of the frames asked for ({sorted(indices)})")
    return frames


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--video", default=DEMO)
    parser.add_argument("--frames", type=int, nargs="+", default=list(range(190, 236, 5)))
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--image", help="write frame --image-frame for every checkpoint side by side")
    parser.add_argument("--image-frame", type=int, default=220)
    parser.add_argument("-o", "--output")
    args = parser.parse_args()
    from engine.runtime import Segmenter

    frames = frames_at(args.video, set(args.frames) | {args.image_frame})
    results, tiles = {}, []
    for path in args.checkpoints:
        segmenter = Segmenter(path, args.backend, "cpu", args.precision)
        road, car = segmenter.class_names.index("Road"), segmenter.class_names.index("Car")
        labels = {index: segmenter.predict(frame) for index, frame in frames.items()}
        shares = []
        for index in args.frames:
            lower = labels[index][2 * labels[index].shape[0] // 3 :]
            shares.append((float(np.mean(lower == road)) * 100, float(np.mean(lower == car)) * 100))
        road_share, car_share = np.mean(shares, axis=0)
        results[path] = {"road": round(road_share, 1), "car": round(car_share, 1), "per_frame": shares}
        print(
            f"{Path(path).name:<44} lower third: Road {road_share:5.1f}%  Car {car_share:5.1f}%", flush=True
        )
        if args.image:
            tiles.append(segmenter.overlay(frames[args.image_frame], labels[args.image_frame]))
    if args.image:
        cv2.imwrite(args.image, np.concatenate(tiles, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if args.output:
        Path(args.output).write_text(json.dumps({"frames": args.frames, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
