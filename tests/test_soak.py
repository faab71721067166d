"""The soak tool's 30-second version: the real window (offscreen) in a child process,
recording on and off, switching models and backends, seeking, pausing and changing
views; it must exit cleanly (also at quit) and every recording must decode."""

import json
import subprocess
import sys
from pathlib import Path

from tests.synthetic import write_checkpoint, write_video

ROOT = Path(__file__).resolve().parent.parent


def test_a_30_second_soak_ends_cleanly_and_every_recording_plays(tmp_path):
    slim = write_checkpoint(tmp_path / "slim.safetensors", "slim", input_size=(96, 128))
    base = write_checkpoint(tmp_path / "base.safetensors", "base", input_size=(96, 128))
    clip = write_video(tmp_path / "clip.mp4", frames=100, fps=25, size=(180, 240))
    report = tmp_path / "soak.json"
    finished = subprocess.run(
        [
            sys.executable,
            "tools/soak_app.py",
            "--seconds",
            "30",
            "--source",
            str(clip),
            "--slim",
            str(slim),
            "--base",
            str(base),
            "--report-seconds",
            "2",
            "--action-seconds",
            "1.5",
            "-o",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    result = json.loads(report.read_text())
    assert finished.returncode == 0, (result["stderr_tail"], result["errors"])
    assert not result["crashed"] and result["exit_code"] == 0 and not result["fatal_lines"]
    assert len(result["recordings"]) >= 2 and result["recordings_ok"]
    assert all(entry["frames"] > 0 for entry in result["recordings"])
    for action in ("record", "view", "seek", "pause", "resume", "model", "backend", "step", "input size"):
        assert result["actions"].get(action, 0) >= 1, action
    assert result["capture_threads_max"] == 1  # never two sources feeding the slot
    assert result["inference_fps"]["max"] > 0
