"""Steady masks against per-frame labels on several clips, for both variants, in one run:
flicker, agreement with the Cityscapes teacher at 1024x512, and the stabilizer's cost.

    .venv/bin/python tools/flicker_table.py --teacher \\
        teachers/espnetv2-cityscapes/espnetv2_s_2.0_city_1024x512.pth \\
        --clip demo-drive=data/udacity-hmb-clip/hmb-first-30s-20fps.mp4 \\
        --clip dashcam=data/dashcam-probe/vd-test_video.mp4 \\
        --clip camvid-0016E5=/tmp/camvid-0016E5-15fps.mp4 -o docs/benchmarks/steady-masks.json

The CamVid clip is val sequence 0016E5 (101 frames labelled at 15 Hz, the only CamVid
stretch that is video-like), made by tools/make_demo_video.py (its docstring has the
command). Prints a Markdown table (BENCHMARKS.md, "Steady masks").
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip", action="append", required=True, metavar="NAME=VIDEO")
    parser.add_argument("--variants", nargs="+", default=["slim", "base"])
    parser.add_argument("--teacher", help="ESPNetv2 weights: agreement at 1024x512")
    parser.add_argument("--teacher-every", type=int, default=4)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("-o", "--output")
    args = parser.parse_args()
    from engine.resources import shipped_weights
    from engine.runtime import Segmenter
    from engine.training.flicker import measure_video
    from engine.training.probe import TeacherReference

    reference = TeacherReference(args.teacher) if args.teacher else None
    results = []
    for variant in args.variants:
        segmenter = Segmenter(shipped_weights()[variant], args.backend, "cpu", args.precision)
        for clip in args.clip:
            name, video = clip.split("=", 1)
            measured = measure_video(segmenter, video, reference, args.teacher_every, progress=False)
            results.append({"clip": name, "variant": variant, **asdict(measured)})
            print(row(results[-1]), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


def row(result: dict) -> str:
    own, steady = result["per_frame"], result["steady"]

    def agreement(report: dict) -> str:
        return "-" if report["agreement"] is None else f"{report['agreement']:.2f}"

    cost = result["stabilizer_ms"]
    return (
        f"| {result['clip']} | {result['variant']} | {own['pairs']} | {own['flicker']:.2f} | "
        f"{steady['flicker']:.2f} | -{result['reduction']:.0f}% | {agreement(own)} | {agreement(steady)} | "
        f"{cost['median']:.2f} / {cost['p95']:.2f} |"
    )


if __name__ == "__main__":
    main()
