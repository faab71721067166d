"""Make the bundled demo video from CamVid test frames (sequence Seq05VD).

    .venv/bin/python tools/make_demo_video.py data/CamVid assets/demo-camvid-seq05vd.mp4

CamVid's test set samples Seq05VD at 1 frame per second; played back at 5 fps
the 171 frames make a 34-second drive. H.264 through PyAV, a few MB. The one CamVid
stretch labelled at video rate, val sequence 0016E5 (15 Hz), makes the steady-mask
benchmark's CamVid clip (BENCHMARKS.md):

    .venv/bin/python tools/make_demo_video.py data/CamVid /tmp/camvid-0016E5-15fps.mp4 \
        --split val --sequence 0016E5 --fps 15 --crf 18
CamVid is CC BY-NC 4.0: so is this video (see weights/README.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import cv2


def make_demo_video(
    camvid_root: Path,
    output: Path,
    sequence: str = "Seq05VD",
    fps: int = 5,
    crf: int = 26,
    split: str = "test",
) -> int:
    frames = sorted((camvid_root / split).glob(f"{sequence}_*.png"))
    if not frames:
        raise SystemExit(f"no {sequence} frames in {camvid_root / split}")
    output.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(output), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        first = cv2.imread(str(frames[0]))
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "slow"}
        for path in frames:
            frame = av.VideoFrame.from_ndarray(cv2.imread(str(path)), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("camvid_root", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--fps", type=int, default=5)
    parser.add_argument("--crf", type=int, default=26)
    parser.add_argument("--split", default="test")
    parser.add_argument("--sequence", default="Seq05VD")
    args = parser.parse_args()
    count = make_demo_video(args.camvid_root, args.output, args.sequence, args.fps, args.crf, args.split)
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output}: {count} frames at {args.fps} fps, {size:.1f} MB")


if __name__ == "__main__":
    main()
