"""CUDA graph decisions (engine/runtime/graphs.py) on the CPU: capture per shape, replay,
least-recently-used shapes dropped, and the fall back to eager when a capture fails or
its replay disagrees. The CUDA capture itself runs in tools/gpu_check.py on a GPU."""

import numpy as np
import torch

from engine.commands.cli import main
from engine.model.checkpoint import load_checkpoint
from engine.runtime.export import normalise_frames
from engine.runtime.graphs import GraphedForward, cuda_graphs_by_default
from tests.synthetic import write_checkpoint, write_video


class Recorder:
    """A forward function (a real tiny RTFormer on frames) that counts its calls."""

    def __init__(self, checkpoint) -> None:
        self.model, info = load_checkpoint(checkpoint)
        self.model.eval()
        self.mean = torch.tensor(info.mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(info.std).view(1, 3, 1, 1) * 255
        self.calls = 0

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        logits = self.model(normalise_frames(frames, self.mean, self.std))
        return logits, logits.argmax(1).to(torch.uint8)


def static_buffer_capture(captured: list):
    """Like capture_cuda_graph, on the CPU: static input and outputs, overwritten by each
    replay, copies handed out."""

    def capture(forward, example):
        captured.append(tuple(example.shape))
        static_input = example.clone()
        outputs = forward(static_input)

        @torch.inference_mode()  # as TorchBackend runs it
        def replay(frames):
            static_input.copy_(frames)
            for buffer, fresh in zip(outputs, forward(static_input), strict=True):
                buffer.copy_(fresh)
            return tuple(buffer.clone() for buffer in outputs)

        return replay

    return capture


def frames(height=64, width=96, seed=0, count=1) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8))


def test_one_capture_per_shape_then_replays_that_match_eager(tmp_path):
    forward = Recorder(write_checkpoint(tmp_path / "slim.safetensors", "slim"))
    captured: list = []
    graphed = GraphedForward(forward, capture=static_buffer_capture(captured), max_shapes=2)
    first = graphed(frames(seed=1))
    second = graphed(frames(seed=2))
    assert captured == [(1, 64, 96, 3)]  # captured once, replayed after
    assert torch.equal(first[1], forward(frames(seed=1))[1])  # a later replay left it alone
    assert torch.equal(second[1], forward(frames(seed=2))[1])
    graphed(frames(128, 96))
    graphed(frames(64, 128))  # a third shape: the least recently used one goes
    assert captured == [(1, 64, 96, 3), (1, 128, 96, 3), (1, 64, 128, 3)]
    assert list(graphed.graphs) == [((1, 128, 96, 3), torch.uint8), ((1, 64, 128, 3), torch.uint8)]
    assert graphed.active


def test_a_capture_that_fails_turns_graphs_off_and_eager_carries_on(tmp_path):
    forward = Recorder(write_checkpoint(tmp_path / "slim.safetensors", "slim"))
    attempts = []

    def failing(forward, example):
        attempts.append(example.shape)
        raise RuntimeError("operation not permitted when stream is capturing")

    graphed = GraphedForward(forward, capture=failing)
    _, labels = graphed(frames())
    assert not graphed.active and "not permitted" in graphed.fallback_reason
    assert torch.equal(labels, forward(frames())[1])
    graphed(frames(128, 96))
    assert len(attempts) == 1  # off for good: no capture per new shape


def test_a_replay_that_disagrees_with_eager_is_not_trusted(tmp_path):
    forward = Recorder(write_checkpoint(tmp_path / "slim.safetensors", "slim"))

    def wrong(forward, example):
        return lambda batch: (forward(batch)[0], torch.zeros_like(forward(batch)[1]) + 7)

    graphed = GraphedForward(forward, capture=wrong)
    _, labels = graphed(frames())
    assert not graphed.active and "agree" in graphed.fallback_reason
    assert torch.equal(labels, forward(frames())[1])  # the eager answer, not the graph's


def test_graphs_can_be_turned_off(monkeypatch, tmp_path):
    assert cuda_graphs_by_default()
    monkeypatch.setenv("RTFORMER_CUDA_GRAPHS", "0")
    assert not cuda_graphs_by_default()
    checkpoint = write_checkpoint(tmp_path / "slim.safetensors", "slim", input_size=(64, 96))
    video = write_video(tmp_path / "clip.mp4", frames=4, fps=10, size=(64, 96))
    out = tmp_path / "out.mp4"
    arguments = ["segment", str(video), "-o", str(out), "--checkpoint", str(checkpoint), "--backend", "torch"]
    assert main([*arguments, "--device", "cpu", "--no-cuda-graphs"]) in (0, None)
    assert out.is_file()


# ---------------------------------------------------------------- "auto" on CUDA, measured


def test_cuda_candidates_follow_the_request_and_the_installed_runtimes(monkeypatch):
    from engine.runtime import availability

    monkeypatch.setattr(availability, "onnxruntime_providers", lambda: ["CPUExecutionProvider"])
    assert availability.cuda_candidates("auto", "auto") == [("torch", "fp32"), ("torch", "fp16")]
    assert availability.cuda_candidates("torch", "fp16") == [("torch", "fp16")]
    monkeypatch.setattr(availability, "onnxruntime_providers", lambda: ["TensorrtExecutionProvider"])
    assert ("onnxruntime", "fp32") in availability.cuda_candidates("auto", "auto")


def test_auto_on_cuda_takes_the_fastest_precision_that_keeps_the_labels(monkeypatch, tmp_path):
    from engine.runtime import availability

    checkpoint = write_checkpoint(tmp_path / "slim.safetensors", "slim")
    monkeypatch.setattr(availability.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(availability.torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
    monkeypatch.setattr(availability, "onnxruntime_providers", lambda: ["CPUExecutionProvider"])
    agreement = {("torch", "fp32"): 1.0, ("torch", "fp16"): 0.998}  # fp16 changes 0.2% of labels
    timed = []

    def fake_timing(checkpoint, candidates, size, calibration, threads, device="cpu", cuda_graphs=False):
        timed.append((tuple(candidates), device))
        return {c: 3.0 if c == ("torch", "fp16") else 5.0 for c in candidates}

    monkeypatch.setattr(availability, "label_agreement", lambda *args, **options: dict(agreement))
    monkeypatch.setattr(availability, "time_candidates", fake_timing)
    assert availability.resolve(checkpoint, "auto", "auto", "auto", (360, 480)) == ("torch", "cuda", "fp32")
    assert timed == [(((("torch", "fp32"),), "cuda"))]  # fp16 was never timed
    agreement[("torch", "fp16")] = 0.9995
    other = write_checkpoint(tmp_path / "other.safetensors", "slim", input_size=(96, 128))  # other digest
    assert availability.resolve(other, "auto", "auto", "auto", (360, 480)) == ("torch", "cuda", "fp16")
    availability.resolve(other, "auto", "auto", "auto", (360, 480))
    assert len(timed) == 2  # remembered
    # INT8 and an explicit ONNX Runtime are not measured.
    assert availability.resolve(other, "auto", "cuda", "int8") == ("onnxruntime", "cuda", "int8")
    assert availability.resolve(other, "onnxruntime", "cuda", "auto") == ("onnxruntime", "cuda", "fp32")


def test_label_agreement_runs_the_backends_on_the_bundled_frames(tmp_path):
    from engine.runtime.availability import label_agreement

    checkpoint = write_checkpoint(tmp_path / "slim.safetensors", "slim")
    shares = label_agreement(checkpoint, [("torch", "fp32"), ("onnxruntime", "fp32")], (96, 128), "cpu")
    assert shares[("torch", "fp32")] == 1.0
    assert shares[("onnxruntime", "fp32")] > 0.99
