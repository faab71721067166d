"""tools/interpolate_weights.py: the WiSE-FT mix a shipped checkpoint is made of."""

import json
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


def test_a_mix_of_mixes_names_every_ingredient_and_ships_with_its_own_figures(tmp_path):
    from tests.synthetic import make_camvid

    ingredients = []
    for seed in range(3):
        model, info = load_checkpoint(write_checkpoint(tmp_path / f"start{seed}.safetensors"))
        torch.manual_seed(seed)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
        info.metrics = {"test_miou": 99.0, "step": 10 + seed}  # the figures of one ingredient alone
        ingredients.append(save_checkpoint(tmp_path / f"run{seed}.safetensors", model, info))
    first = run_tool(
        str(ingredients[0]), str(ingredients[1]), "--alphas", "0.5", "--no-eval", "-o", str(tmp_path / "a")
    )
    assert first.returncode == 0, first.stderr
    pair = tmp_path / "a" / "alpha-0.5.safetensors"
    soup = run_tool(
        str(pair), str(ingredients[2]), "--alphas", "0.333333", "--no-eval", "-o", str(tmp_path / "b")
    )
    assert soup.returncode == 0, soup.stderr
    mixed = tmp_path / "b" / "alpha-0.333333.safetensors"
    _, info = load_checkpoint(mixed)
    assert "test_miou" not in info.metrics and info.metrics["evaluation"].startswith("none yet")
    assert "step" not in info.metrics  # one ingredient's step count
    record = info.extra["interpolation"]
    assert record["after"] == str(ingredients[2]) and record["before"] == str(pair)
    assert record["before_mix"]["before"] == str(ingredients[0])
    assert record["before_mix"]["after"] == str(ingredients[1])

    root = make_camvid(tmp_path / "CamVid", {"test": 2, "train": 2, "val": 1})
    shipped = tmp_path / "shipped.safetensors"
    command = [sys.executable, "tools/ship_weights.py", str(mixed), str(shipped), "--data-root", str(root)]
    result = subprocess.run([*command, "--keep-bn", "--half"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    _, shipped_info = load_checkpoint(shipped)
    report = json.loads(shipped.with_suffix(".eval.json").read_text())
    assert shipped_info.metrics["test_miou"] == round(report["miou"], 2) != 99.0  # its own evaluation
    assert shipped_info.extra["interpolation"] == record
