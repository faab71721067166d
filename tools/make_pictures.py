"""Every picture the README and the model card show, made anew from the shipped weights so
that none shows superseded ones:

- docs/screenshot.png: the app's real window on the demo drive with RTFormer-Slim, after
  12 seconds of playback (offscreen unless QT_QPA_PLATFORM says otherwise; under Xvfb it
  is the window a user sees);
- weights/failure-shadowed-road.jpg and weights/failure-deep-shade.jpg: the model card's
  known failure modes, demo frames 215 (0:10) and 590 (0:29), Slim left and Base right
  (tools/demo_faults.py, ONNX Runtime fp32, the app's path);
- docs/steady-masks.gif: each frame's own labels beside steady masks (tools/steady_masks_gif.py).

    .venv/bin/python tools/make_pictures.py [--only screenshot failures gif]
    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python tools/make_pictures.py --only screenshot
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = "assets/demo-udacity-hmb-20fps.mp4"
SLIM = "weights/rtformer-slim-camvid.safetensors"
BASE = "weights/rtformer-base-camvid.safetensors"
FAILURES = {"failure-shadowed-road.jpg": 215, "failure-deep-shade.jpg": 590}


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    subprocess.run([sys.executable, *command], cwd=ROOT, check=True, env=env)


def screenshot() -> None:
    run(
        "-m", "app.main", DEMO, "--checkpoint", SLIM, "--seconds", "12", "--screenshot", "docs/screenshot.png"
    )


def failures() -> None:
    for name, frame in FAILURES.items():
        run(
            "tools/demo_faults.py", SLIM, BASE, "--road-frames", str(frame), "--hill-frames", str(frame),
            "--image", f"weights/{name}", "--image-frame", str(frame),
        )  # fmt: skip


def gif() -> None:
    run("tools/steady_masks_gif.py", DEMO, "docs/steady-masks.gif", "--checkpoint", SLIM, "--start", "4")


PICTURES = {"screenshot": screenshot, "failures": failures, "gif": gif}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=sorted(PICTURES), default=list(PICTURES))
    for name in parser.parse_args().only:
        PICTURES[name]()


if __name__ == "__main__":
    main()
