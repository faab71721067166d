"""Training: schedule, exact resume, two-process gloo run, CLI, curves, backbone loading."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import engine.training.train
from engine.commands.cli import main
from engine.model.checkpoint import read_checkpoint_info
from engine.model.rtformer import build_model
from engine.training.config import TrainConfig
from engine.training.data import IGNORE_INDEX
from engine.training.loop import read_log
from engine.training.train import (
    Trainer,
    crop_warning,
    labelled_cross_entropy,
    learning_rate,
    load_backbone,
    segmentation_loss,
)
from tests.synthetic import TINY_MODEL, make_folder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "folder"
    make_folder(root, "train", count=8)
    make_folder(root, "val", count=2, seed=1)
    return root


def tiny_config(data_root, output, **values) -> TrainConfig:
    return TrainConfig(
        model_overrides=dict(TINY_MODEL),
        dataset="folder",
        data_root=str(data_root),
        train_split="train",
        val_split="val",
        output=str(output),
        iters=6,
        batch_size=2,
        crop_size=(64, 64),
        warmup_iters=2,
        workers=0,
        log_interval=1,
        eval_interval=3,
        checkpoint_interval=100,
    ).replace(**values)


def test_learning_rate_warms_up_then_decays_linearly():
    config = TrainConfig(iters=1000, warmup_iters=100, lr=4e-4, warmup_start_lr=1e-6, min_lr=1e-6)
    assert learning_rate(config, 0) == pytest.approx(1e-6)
    assert learning_rate(config, 50) == pytest.approx((1e-6 + 4e-4) / 2)
    assert learning_rate(config, 100) == pytest.approx(4e-4)
    assert learning_rate(config, 550) == pytest.approx((4e-4 + 1e-6) / 2)
    assert learning_rate(config, 1000) == pytest.approx(1e-6)


def test_resume_gives_the_same_result_as_an_uninterrupted_run(data_root, tmp_path):
    straight = Trainer(tiny_config(data_root, tmp_path / "straight"))
    straight.run()
    interrupted = Trainer(tiny_config(data_root, tmp_path / "resumed"))
    interrupted.run(until=4)
    resumed = Trainer(tiny_config(data_root, tmp_path / "resumed", resume=True))
    assert resumed.step == 4
    resumed.run()
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    # The log of the resumed run reads like one run: each step once.
    steps = [e["step"] for e in read_log(tmp_path / "resumed" / "log.jsonl") if "loss" in e]
    assert steps == list(range(1, 7))


def test_training_writes_weights_log_and_curves(data_root, tmp_path):
    Trainer(tiny_config(data_root, tmp_path / "run")).run()
    run = tmp_path / "run"
    entries = read_log(run / "log.jsonl")
    assert [e["step"] for e in entries if "val_miou" in e] == [3, 6]
    assert all({"loss", "lr", "images_per_s"} <= set(e) for e in entries if "loss" in e)
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    info = read_checkpoint_info(run / "last.safetensors")
    assert info.metrics["step"] == 6 and info.class_names == ["background", "thing", "stuff"]
    assert read_checkpoint_info(run / "best.safetensors").metrics["val_split"] == "val"


def test_intervals_of_zero_mean_only_at_the_end(data_root, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(data_root, run, log_interval=0, eval_interval=0, checkpoint_interval=0)).run()
    entries = read_log(run / "log.jsonl")
    assert [e["step"] for e in entries if "loss" in e] == [6]  # logged once, at the end
    assert [e["step"] for e in entries if "val_miou" in e] == [6]  # validated once, at the end
    assert (run / "train_state.pt").is_file() and (run / "last.safetensors").is_file()


def test_cli_train_reads_a_config_file_and_overrides(data_root, tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text(
        f'dataset = "folder"\ndata_root = "{data_root}"\nval_split = ""\niters = 50\n'
        f"batch_size = 2\ncrop_size = [64, 64]\nworkers = 0\n"
        f"model_overrides = {json.dumps(TINY_MODEL).replace(':', ' =')}\n"
    )
    output = tmp_path / "cli"
    code = main(
        ["train", "--config", str(config_file), "--iters", "2", "--output", str(output), "--lr", "1e-3"]
    )
    assert code == 0
    info = read_checkpoint_info(output / "last.safetensors")
    assert info.metrics["step"] == 2
    assert info.extra["train_config"]["lr"] == 1e-3 and info.extra["train_config"]["iters"] == 2


def test_cli_train_reports_a_missing_dataset(tmp_path, capsys):
    code = main(["train", "--data-root", str(tmp_path / "none"), "--output", str(tmp_path / "o")])
    assert code == 1
    assert "root folder not found" in capsys.readouterr().err


def test_backbone_loading_matches_names_and_shapes(tmp_path):
    from safetensors.torch import save_file

    source = build_model("slim", num_classes=19)
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "backbone.safetensors")
    )
    target = build_model("slim", num_classes=11)
    copied = load_backbone(target, tmp_path / "backbone.safetensors")
    assert "stem.0.weight" in copied and "head.conv2.weight" not in copied
    assert torch.equal(target.stem[0].weight, source.stem[0].weight)
    assert torch.equal(target.head.conv1.weight, source.head.conv1.weight)  # same shape: copied


def changed_by_a_fine_tune(data_root, tmp_path, **options) -> tuple[set[str], torch.nn.Module]:
    """Names of the tensors a short run from trained weights changed, with `options`."""
    start = Trainer(tiny_config(data_root, tmp_path / "start", iters=2, val_split=""))
    start.run()
    run = Trainer(
        tiny_config(
            data_root,
            tmp_path / "fine-tune",
            val_split="",
            pretrained_backbone=str(tmp_path / "start" / "last.safetensors"),
            **options,
        )
    )
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.run()
    after = run.model.state_dict()
    return {name for name in before if not torch.equal(before[name], after[name])}, run.model


def test_frozen_bn_keeps_every_running_statistic_while_weights_and_bn_scales_train(data_root, tmp_path):
    with pytest.raises(ValueError, match="pretrained_backbone"):
        Trainer(tiny_config(data_root, tmp_path / "none", frozen_bn=True))
    changed, model = changed_by_a_fine_tune(data_root, tmp_path, frozen_bn=True)
    statistics = {name for name in model.state_dict() if name.endswith(("running_mean", "running_var"))}
    assert statistics and not changed & statistics  # normalised with, never updated
    assert {"stem.0.weight", "stem.1.weight", "stem.1.bias"} <= changed  # BN's scale and shift learn


def test_ema_weights_are_validated_saved_and_resumed(data_root, tmp_path):
    config = tiny_config(data_root, tmp_path / "ema", ema_decay=0.9, eval_interval=0)
    straight = Trainer(config)
    start = {k: v.clone() for k, v in straight.model.state_dict().items()}
    straight.run()
    live, kept = straight.model.state_dict(), straight.kept_model.state_dict()
    name = "stem.0.weight"
    # The average lags the live weights: between where training started and where it is.
    assert not torch.equal(kept[name], live[name]) and not torch.equal(kept[name], start[name])
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(tmp_path / "ema" / "last.safetensors"))[name], kept[name])
    interrupted = Trainer(config.replace(output=str(tmp_path / "ema-resumed")))
    interrupted.run(until=3)
    resumed = Trainer(config.replace(output=str(tmp_path / "ema-resumed"), resume=True))
    resumed.run()
    assert torch.equal(resumed.kept_model.state_dict()[name], kept[name])


def _train_rank(rank: int, world_size: int, port: int, data_root: str, output: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    torch.set_num_threads(1)
    trainer = Trainer(tiny_config(data_root, output, iters=3, val_split="", seed=rank * 0))
    trainer.run()
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    torch.save(flat, f"{output}/params-rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_stay_in_sync(data_root, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    output = tmp_path / "ddp"
    output.mkdir()
    mp.start_processes(
        _train_rank, args=(2, port, str(data_root), str(output)), nprocs=2, start_method="spawn"
    )
    rank0 = torch.load(output / "params-rank0.pt", weights_only=True)
    rank1 = torch.load(output / "params-rank1.pt", weights_only=True)
    assert torch.equal(rank0, rank1)
    initial = torch.cat([p.detach().flatten() for p in build_model("slim", 3, **TINY_MODEL).parameters()])
    assert not torch.equal(rank0, initial)  # they trained
    assert (output / "last.safetensors").is_file() and not (output / "params-rank2.pt").exists()


def test_batchnorm_recalibration_averages_over_the_dataset(data_root):
    from engine.training.data import open_dataset
    from engine.training.train import recalibrate_batchnorm

    dataset = open_dataset("folder", data_root, "train")
    model = build_model("slim", 3, **TINY_MODEL).eval()
    batch_means = []
    hook = model.stem[1].register_forward_pre_hook(
        lambda module, args: batch_means.append(args[0].mean((0, 2, 3)))
    )
    recalibrate_batchnorm(model, dataset, batch_size=4)
    hook.remove()
    assert len(batch_means) == 2 and not model.training
    torch.testing.assert_close(model.stem[1].running_mean, torch.stack(batch_means).mean(0))
    assert model.stem[1].momentum == 0.9 and model.block4.drop_path.rate == 0.2


def test_time_budget_fits_the_schedule_and_survives_resume(data_root, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(data_root, tmp_path / "fit", iters=1000, budget_minutes=1.0))
    # 0.1 s a step and 10 s gone: 50 s left of the minute buys 500 more steps.
    assert trainer.fit_to_budget({50: 5.0, 150: 15.0}, elapsed_s=10.0).iters == 500
    capped = Trainer(tiny_config(data_root, tmp_path / "cap", iters=100, budget_minutes=1.0))
    assert capped.fit_to_budget({50: 5.0, 150: 15.0}, elapsed_s=10.0).iters == 100

    # The trainer's clock, made to advance 10 ms per reading, so that the fitted schedule
    # does not depend on how busy this machine is.
    readings = iter(range(10**9))
    monkeypatch.setattr(engine.training.train.time, "monotonic", lambda: next(readings) * 0.01)
    output = tmp_path / "budget"
    run = Trainer(tiny_config(data_root, output, iters=100000, budget_minutes=0.15, eval_interval=0))
    run.run()
    assert 150 < run.step == run.config.iters < 100000
    last_lr = [e["lr"] for e in read_log(output / "log.jsonl") if "lr" in e][-1]
    assert last_lr < 0.05 * run.config.lr  # decayed over the fitted schedule, not cut off early
    resumed = Trainer(tiny_config(data_root, output, iters=100000, budget_minutes=0.15, resume=True))
    assert resumed.config.iters == run.config.iters


def test_fine_tunes_are_warned_off_crops_other_than_the_frame(data_root, tmp_path, capsys):
    assert crop_warning((360, 480), (360, 480)) is None
    message = crop_warning((288, 384), (360, 480))
    assert "288x384" in message and "crop_size = [360, 480]" in message
    Trainer(tiny_config(data_root, tmp_path / "start", iters=1, val_split="")).run()
    capsys.readouterr()
    start = str(tmp_path / "start" / "last.safetensors")
    other = Trainer(tiny_config(data_root, tmp_path / "other", val_split="", pretrained_backbone=start))
    assert "warning: crops of 64x64" in capsys.readouterr().out
    Trainer(
        tiny_config(
            data_root, tmp_path / "same", val_split="", pretrained_backbone=start, crop_size=other.input_size
        )
    )
    assert "warning" not in capsys.readouterr().out


# ---------------------------------------------------------------- the loss


def logits_with_true_probabilities(probabilities: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits (1, 2, 1, P) whose class 0 gets each given probability; labels all 0."""
    p = torch.tensor(probabilities)
    logits = torch.stack([torch.log(p), torch.log1p(-p)]).reshape(1, 2, 1, -1)
    return logits.clone().requires_grad_(True), torch.zeros(1, 1, len(probabilities), dtype=torch.long)


def test_segmentation_loss_weighs_the_aux_head_and_skips_void_pixels():
    main_logits, labels = logits_with_true_probabilities([0.1, 0.9])
    aux_logits, _ = logits_with_true_probabilities([0.9, 0.3])
    total, main_loss = segmentation_loss((main_logits, aux_logits), labels, 0.4)
    expected_main = -torch.log(torch.tensor([0.1, 0.9])).mean().item()
    assert main_loss.item() == pytest.approx(expected_main, rel=1e-5)
    aux_loss = -torch.log(torch.tensor([0.9, 0.3])).mean().item()
    assert total.item() == pytest.approx(main_loss.item() + 0.4 * aux_loss, rel=1e-5)
    labels[0, 0, 0] = IGNORE_INDEX  # void: not counted
    only_second = labelled_cross_entropy(main_logits, labels)
    assert only_second.item() == pytest.approx(-torch.log(torch.tensor(0.9)).item(), rel=1e-5)
    assert labelled_cross_entropy(main_logits, torch.full_like(labels, IGNORE_INDEX)).item() == 0.0
