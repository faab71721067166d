"""A side-by-side GIF for the README: each frame's own labels (left) and steady masks
(right), drawn as masks over a stretch of a video.

    .venv/bin/python tools/steady_masks_gif.py assets/demo-udacity-hmb-20fps.mp4 \\
        docs/steady-masks.gif --start 4 --seconds 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("video")
    parser.add_argument("output")
    parser.add_argument("--checkpoint")
    parser.add_argument("--start", type=float, default=0.0, help="seconds into the video")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--width", type=int, default=320, help="of each half")
    parser.add_argument("--alpha", type=float, default=0.6)
    args = parser.parse_args()

    from engine.media import read_frames
    from engine.resources import shipped_weights
    from engine.runtime import MaskStabilizer, Segmenter, render

    segmenter = Segmenter(args.checkpoint or shipped_weights()["slim"])
    stabilizer = MaskStabilizer()
    pictures = []
    for frame, seconds in read_frames(args.video):
        if seconds > args.start + args.seconds:
            break
        logits, labels = segmenter.infer_both(frame)
        steady = stabilizer(segmenter.preprocessor.resized, logits, labels)  # from the first frame on
        if seconds < args.start:
            continue
        halves = [render("overlay", frame, shown, segmenter.lut, args.alpha) for shown in (labels, steady)]
        pictures.append(side_by_side(halves, args.width))
    frame_ms = round(1000 * args.seconds / max(1, len(pictures)))
    images = [Image.fromarray(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)) for picture in pictures]
    palette = images[len(images) // 2].quantize(colors=128)  # one palette: no colour shimmer of its own
    frames = [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in images]
    frames[0].save(
        args.output, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0, optimize=True
    )
    print(f"{len(frames)} frames -> {args.output} ({Path(args.output).stat().st_size / 1e6:.1f} MB)")


def side_by_side(halves: list[np.ndarray], width: int) -> np.ndarray:
    height = round(halves[0].shape[0] * width / halves[0].shape[1])
    small = [cv2.resize(half, (width, height), interpolation=cv2.INTER_AREA) for half in halves]
    for half, caption in zip(small, ("each frame alone", "steady masks"), strict=True):
        cv2.putText(half, caption, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(half, caption, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return np.hstack([small[0], np.full((height, 4, 3), 255, np.uint8), small[1]])


if __name__ == "__main__":
    main()
