"""tools/interpolate_weights.py: the WiSE-FT mix a shipped checkpoint is made of."""

import subprocess
import sys

import torch

from engine.model.checkpoint import load_checkpoint, save_checkpoint
from tests.synthetic import write_checkpoint


def run_tool(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "tools/interpolate_weights.py", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_no_eval_writes_the_mix_at_each_alpha_with_the_mix_in_its_metadata(tmp_path):
    before = write_checkpoint(tmp_path / "before.safetensors")
    model, info = load_checkpoint(before)  # a fine-tune of it: every weight moved
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    after = save_checkpoint(tmp_path / "after.safetensors", model, info)
    result = run_tool(
        str(before), str(after), "--alphas", "0.25", "0.5", "--no-eval", "-o", str(tmp_path / "mix")
    )
    assert result.returncode == 0, result.stderr

    first, _ = load_checkpoint(before)
    second, _ = load_checkpoint(after)
    for alpha in (0.25, 0.5):
        mixed, info = load_checkpoint(tmp_path / "mix" / f"alpha-{alpha:g}.safetensors")
        assert info.extra["interpolation"]["alpha"] == alpha
        weight = "head.conv2.weight"
        expected = (1 - alpha) * first.state_dict()[weight] + alpha * second.state_dict()[weight]
        assert not torch.equal(first.state_dict()[weight], second.state_dict()[weight])
        torch.testing.assert_close(mixed.state_dict()[weight], expected, atol=2e-3, rtol=2e-3)  # float16


def test_evaluating_needs_the_data_and_says_which(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "model.safetensors")
    result = run_tool(str(checkpoint), str(checkpoint), "-o", str(tmp_path / "mix"))
    assert result.returncode == 2
    assert "--data-root, --frames and --teacher" in result.stderr
    assert not (tmp_path / "mix").exists()
