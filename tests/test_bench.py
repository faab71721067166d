"""`rtformer bench` runs every available runner side by side and reports ratios."""

import json

import cv2
import pytest
import torch

from engine.commands.bench import interleaved, run_bench
from engine.commands.cli import main
from tests.synthetic import synthetic_frame, write_video


def test_interleaved_times_each_runner_every_round():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    assert [len(v) for v in times.values()] == [3, 3]


def test_bench_reports_all_cpu_runners_and_the_end_to_end_path(tmp_path):
    frames = tmp_path / "calibration"
    frames.mkdir()
    for seed in range(2):
        cv2.imwrite(str(frames / f"{seed}.png"), synthetic_frame(64, 96, seed=seed))
    video = write_video(tmp_path / "clip.mp4", frames=6, fps=10, size=(64, 96))
    report = run_bench(("slim",), ((64, 96),), calibration=frames, video=video, rounds=2, threads=1)
    runners = {r["runner"]: r for r in report["results"]}
    expected = {"torch eager fp32", "onnxruntime fp32", "onnxruntime int8", "openvino fp32", "openvino int8"}
    assert expected <= set(runners)
    assert runners["torch eager fp32"]["ratio_to_torch"] == 1.0
    assert all(r["median_ms"] > 0 and r["p95_ms"] >= r["median_ms"] for r in runners.values())
    e2e = report["end_to_end"]
    assert e2e["frames"] == 6 and e2e["end_to_end_fps"] > 0 and e2e["model_only_fps"] > 0
    assert set(e2e["stage_median_ms"]) == {
        "decode",
        "preprocess",
        "inference",
        "postprocess",
        "render",
        "encode",
    }
    assert report["machine"]["cores"] >= 1


def test_bench_cli_writes_json(tmp_path, monkeypatch):
    import engine.commands.bench

    monkeypatch.setattr(engine.commands.bench, "DEFAULT_SIZES", ((64, 64),))
    output = tmp_path / "bench.json"
    assert main(["bench", "--variants", "slim", "--rounds", "2", "--threads", "1", "-o", str(output)]) == 0
    report = json.loads(output.read_text())
    runners = [r["runner"] for r in report["results"]]
    assert runners[:3] == ["torch eager fp32", "onnxruntime fp32", "openvino fp32"]
    assert "onnxruntime int8" not in runners  # INT8 only with calibration frames


def test_gpu_only_bench_says_when_there_is_no_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="no CUDA device"):
        main(["bench", "--gpu-only", "--variants", "slim"])
