"""Distillation: the loss, teacher targets that follow the crop,
unlabelled folders, and training with a teacher (cached and online, resume, CLI)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.commands.cli import main
from engine.model.checkpoint import read_checkpoint_info
from engine.model.classes import CAMVID
from engine.training.config import TrainConfig
from engine.training.data import (
    IGNORE_INDEX,
    DatasetError,
    TrainTransform,
    unlabelled_folder,
)
from engine.training.distill import class_weight_vector, distillation_loss, distrust_dark_answers
from engine.training.espnetv2 import ESPNetv2Segmentation
from engine.training.loop import read_log
from engine.training.train import Trainer, labelled_cross_entropy
from tests.synthetic import TINY_MODEL, block_scene, make_camvid, write_checkpoint, write_png


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "espnetv2.pth"
    torch.save(ESPNetv2Segmentation().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def camvid_root(tmp_path_factory):
    return make_camvid(tmp_path_factory.mktemp("camvid") / "CamVid", {"train": 4, "test": 2})


@pytest.fixture(scope="module")
def unlabelled_root(tmp_path_factory):
    """Frames of another size and aspect (16:9, larger), without labels."""
    root = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(5)
    for index in range(3):
        image, _ = block_scene(rng, size=(108, 192), num_classes=11)
        write_png(root / f"frame_{index}.jpg", image, rgb=True)
    return root


def distill_config(camvid_root, output, teacher_file, **values) -> TrainConfig:
    return TrainConfig(
        model_overrides=dict(TINY_MODEL),
        data_root=str(camvid_root),
        train_split="train",
        val_split="test",
        output=str(output),
        iters=4,
        batch_size=2,
        crop_size=(64, 64),
        warmup_iters=1,
        workers=0,
        log_interval=1,
        eval_interval=0,
        checkpoint_interval=100,
        teacher=str(teacher_file),
        teacher_cache=str(output.parent / "cache"),
    ).replace(**values)


# ---------------------------------------------------------------- the loss


def test_distillation_loss_is_zero_when_the_student_agrees_and_grows_with_disagreement():
    torch.manual_seed(0)
    teacher = torch.randn(2, 4, 8, 8).softmax(dim=1)
    agreeing = distillation_loss(teacher.log(), teacher)
    assert agreeing.item() == pytest.approx(0.0, abs=1e-5)
    close = distillation_loss(teacher.log() + 0.1 * torch.randn(2, 4, 8, 8), teacher)
    far = distillation_loss(torch.randn(2, 4, 8, 8) * 3, teacher)
    assert 0 < close.item() < far.item()


def test_distillation_loss_matches_kl_divergence_with_temperature():
    torch.manual_seed(1)
    teacher_logits, student_logits = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    temperature = 2.0
    loss = distillation_loss(student_logits, teacher_logits.softmax(dim=1), temperature)
    expected = (
        F.kl_div(
            F.log_softmax(student_logits / temperature, dim=1),
            F.log_softmax(teacher_logits / temperature, dim=1),
            log_target=True,
            reduction="none",
        )
        .sum(dim=1)
        .mean()
        * temperature**2
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_uint8_targets_are_renormalised_and_padding_is_left_out():
    torch.manual_seed(2)
    probabilities = torch.randn(1, 3, 4, 4).softmax(dim=1)
    # The teacher's background share is dropped: the CamVid classes sum to 0.8 here.
    as_bytes = (probabilities * 0.8 * 255).round().to(torch.uint8)
    student = torch.randn(1, 3, 4, 4)
    full = distillation_loss(student, probabilities)
    assert distillation_loss(student, as_bytes).item() == pytest.approx(full.item(), rel=0.05)
    padded_targets = torch.cat([as_bytes, torch.zeros_like(as_bytes)], dim=3)  # right half: padding
    padded_student = torch.cat([student, torch.randn(1, 3, 4, 4) * 10], dim=3)
    assert distillation_loss(padded_student, padded_targets).item() == pytest.approx(
        distillation_loss(student, as_bytes).item(), rel=1e-5
    )
    nothing = distillation_loss(student.requires_grad_(), torch.zeros_like(as_bytes))
    assert nothing.item() == 0.0
    nothing.backward()  # still part of the graph


def test_class_weights_follow_the_teachers_class_and_reach_void_pixels():
    teacher = torch.zeros(1, 3, 1, 2)
    teacher[0, 0, 0, 0] = 1.0  # pixel 0: class 0
    teacher[0, 2, 0, 1] = 1.0  # pixel 1: class 2 (a weak class)
    student = torch.zeros(1, 3, 1, 2, requires_grad=True)
    weights = class_weight_vector(["a", "b", "c"], {"c": 0.0})
    distillation_loss(student, teacher, class_weights=weights).backward()
    assert student.grad[0, :, 0, 0].abs().sum() > 0
    assert student.grad[0, :, 0, 1].abs().sum() == 0
    with pytest.raises(ValueError, match="unknown classes"):
        class_weight_vector(["a", "b"], {"Sky": 0.5})


def test_cross_entropy_of_a_batch_without_labels_is_zero_not_nan():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.full((2, 4, 4), IGNORE_INDEX)
    loss = labelled_cross_entropy(logits, labels)
    assert loss.item() == 0.0
    loss.backward()
    labels[0, 0, 0] = 1
    assert labelled_cross_entropy(logits, labels).item() == pytest.approx(
        F.cross_entropy(logits[:1, :, :1, :1], labels[:1, :1, :1]).item()
    )


# ---------------------------------------------------------------- data


def test_teacher_targets_get_the_same_scale_crop_and_flip_as_the_image():
    rng = np.random.default_rng(0)
    image, label = block_scene(rng, size=(96, 128), num_classes=5, block=32)
    soft = np.eye(11, dtype=np.uint8)[label] * 255  # the label, as one-hot targets
    transform = TrainTransform((80, 112), (0.5, 2.0), seed=3, stretch=0.3, hue_prob=1, jpeg_prob=1)
    for key in range(6):
        _, crop_label, targets = transform(image, label, key, soft)
        assert targets.shape == (11, 80, 112) and targets.dtype == torch.uint8
        padding = crop_label == IGNORE_INDEX
        assert (targets.sum(dim=0)[padding] == 0).all()
        agree = (targets.argmax(dim=0) == crop_label)[~padding].float().mean()
        assert agree > 0.95  # bilinear targets differ only along block edges


def test_look_changes_leave_the_geometry_as_it_was():
    rng = np.random.default_rng(1)
    image, label = block_scene(rng, size=(96, 128), num_classes=3)
    plain = TrainTransform((64, 64), seed=7)
    changed = TrainTransform(
        (64, 64), seed=7, sky_prob=1, hue_prob=1, gamma_prob=1, blur_prob=1, noise_prob=1
    )
    for key in range(4):
        image_a, label_a = plain(image, label, key)
        image_b, label_b = changed(image, label, key)
        assert torch.equal(label_a, label_b)
        assert not torch.equal(image_a, image_b)


def test_sky_replacement_paints_only_the_sky_and_makes_it_blue():
    image = np.full((60, 80, 3), 128, np.uint8)  # an overcast grey
    label = np.full((60, 80), 1, np.uint8)
    label[:25] = 0  # sky on top
    transform = TrainTransform((60, 80), (1.0, 1.0), flip=False, jitter=0, sky_prob=1.0, sky_class=0)
    out, _ = transform(image, label, 0)
    pixels = out.numpy()  # normalised RGB: blue above red in the sky, grey left alone below
    assert (pixels[2, 2:20] > pixels[0, 2:20]).mean() > 0.9
    ground = pixels[:, 30:]
    assert np.allclose(ground[0], ground[0, 0, 0], atol=1e-5)


def test_dark_pixels_lose_only_the_distrusted_classes_targets():
    image = np.full((4, 6, 3), 200, np.uint8)
    image[:, :3] = 20  # the left half is dark
    soft = np.zeros((4, 6, 3), np.uint8)
    soft[:2, :, 2] = 250  # top rows: the teacher says class 2 ("Car")
    soft[2:, :, 0] = 250  # bottom rows: class 0
    transform = TrainTransform((4, 6), (1.0, 1.0), flip=False, jitter=0, dark_level=40)
    label = np.full((4, 6), IGNORE_INDEX, np.uint8)
    _, _, cached, dark = transform(image, label, 0, soft)  # cached targets, then the dark pixels
    targets = distrust_dark_answers(cached[None], dark[None], (2,))[0]
    out = targets.permute(1, 2, 0).numpy()
    assert (out[:2, :3] == 0).all()  # dark and class 2: no teacher
    assert np.array_equal(out[:2, 3:], soft[:2, 3:])  # class 2 where lit: kept
    assert np.array_equal(out[2:], soft[2:])  # dark but another class: kept
    assert (targets.sum(dim=0) == 0).sum() == 6


def test_an_online_teachers_answers_lose_the_distrusted_classes_on_the_crops_dark_pixels():
    image = np.full((4, 6, 3), 200, np.uint8)
    image[:, :3] = 20  # the left half is dark
    label = np.full((4, 6), IGNORE_INDEX, np.uint8)
    transform = TrainTransform((4, 6), (1.0, 1.0), flip=False, jitter=0, dark_level=40)
    _, _, dark = transform(image, label, 0)  # no cached targets: the crop's dark pixels instead
    assert dark.dtype == torch.bool and dark[:, :3].all() and not dark[:, 3:].any()
    answers = torch.zeros(1, 3, 4, 6)
    answers[0, 2, :2] = 0.9  # top rows: the teacher says class 2 ("Car")
    answers[0, 0, 2:] = 0.9  # bottom rows: class 0
    kept = distrust_dark_answers(answers, dark[None], (2,))
    assert (kept[0, :, :2, :3] == 0).all()  # dark and class 2: no teacher
    assert torch.equal(kept[0, :, :2, 3:], answers[0, :, :2, 3:])  # class 2 where lit: kept
    assert torch.equal(kept[0, :, 2:], answers[0, :, 2:])  # dark but another class: kept
    assert (
        len(TrainTransform((4, 6), (1.0, 1.0), flip=False, jitter=0)(image, label, 0)) == 2
    )  # no rule, no mask


def test_the_trainer_applies_the_dark_rule_to_an_online_teacher(
    camvid_root, teacher_file, tmp_path, monkeypatch
):
    everything = tuple(CAMVID.names)  # every class distrusted, every pixel dark (< 256): nothing is taught
    config = distill_config(
        camvid_root,
        tmp_path / "online",
        teacher_file,
        teacher_targets="online",
        distill_dark_distrust=everything,
        distill_dark_level=256,
    )
    trainer = Trainer(config)
    seen = []
    original = trainer.distill

    def spy(outputs, labels, targets):
        seen.append(float(targets.sum()))
        return original(outputs, labels, targets)

    monkeypatch.setattr(trainer, "distill", spy)
    trainer.run(until=1)
    assert seen == [0.0]


def test_the_dark_rule_is_refused_where_it_could_not_act(camvid_root, teacher_file, tmp_path):
    config = distill_config(
        camvid_root, tmp_path / "run", teacher_file, distill_dark_distrust=("Car",), teacher=""
    )
    with pytest.raises(ValueError, match="needs --teacher"):
        Trainer(config)
    with pytest.raises(ValueError, match="unknown classes"):
        Trainer(distill_config(camvid_root, tmp_path / "run", teacher_file, distill_dark_distrust=("Lorry",)))


def test_unlabelled_folder_fits_frames_to_the_model_size_with_every_pixel_ignored(unlabelled_root, tmp_path):
    frames = unlabelled_folder(unlabelled_root, CAMVID, (54, 72))
    image, label = frames.load(0)
    assert image.shape == (40, 72, 3)  # 108x192 fitted into 54x72, aspect kept
    assert label.shape == (40, 72) and (label == IGNORE_INDEX).all()
    with pytest.raises(DatasetError, match="no images"):
        unlabelled_folder(tmp_path, CAMVID, None)


# ---------------------------------------------------------------- training


def test_training_with_cached_targets_and_unlabelled_frames_resumes_exactly(
    camvid_root, unlabelled_root, teacher_file, tmp_path
):
    values = dict(unlabelled=(str(unlabelled_root),), distill_class_weights={"Pole": 0.5}, sky_prob=0.5)
    straight = Trainer(distill_config(camvid_root, tmp_path / "straight", teacher_file, **values))
    assert len(straight.train_set) == 4 + 3
    cache = straight.cached_targets
    assert not cache.missing()  # computed once, for the labelled and the unlabelled images
    # An unlabelled 108x192 frame, fitted into the 72x96 test images' size as the app would
    assert np.load(cache.path(5)).shape == (54, 96, 11)
    straight.run()
    interrupted = Trainer(distill_config(camvid_root, tmp_path / "resumed", teacher_file, **values))
    interrupted.run(until=2)
    resumed = Trainer(distill_config(camvid_root, tmp_path / "resumed", teacher_file, resume=True, **values))
    resumed.run()
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert (tmp_path / "straight" / "last.safetensors").is_file()


def test_the_distillation_term_changes_training(camvid_root, teacher_file, tmp_path):
    plain = Trainer(distill_config(camvid_root, tmp_path / "plain", teacher_file, teacher="", iters=2))
    plain.run()
    taught = Trainer(
        distill_config(camvid_root, tmp_path / "taught", teacher_file, iters=2, distill_weight=5.0)
    )
    taught.run()
    plain_loss = [e["loss"] for e in read_log(tmp_path / "plain" / "log.jsonl") if "loss" in e]
    taught_loss = [e["loss"] for e in read_log(tmp_path / "taught" / "log.jsonl") if "loss" in e]
    assert taught_loss[0] > plain_loss[0]  # the same first batch, plus the teacher's term


def test_online_teacher_runs_on_the_crop_the_student_sees(camvid_root, teacher_file, tmp_path, monkeypatch):
    trainer = Trainer(
        distill_config(camvid_root, tmp_path / "online", teacher_file, teacher_targets="online")
    )
    assert trainer.cached_targets is None and trainer.teacher is not None
    seen = []
    original = trainer.teacher.probabilities

    def spy(images):
        seen.append(images.shape)
        return original(images)

    monkeypatch.setattr(trainer.teacher, "probabilities", spy)
    trainer.run(until=2)
    assert seen == [(2, 3, 64, 64)] * 2


def test_unlabelled_frames_need_a_teacher_and_teacher_modes_are_checked(
    camvid_root, unlabelled_root, teacher_file, tmp_path
):
    with pytest.raises(ValueError, match="need a teacher"):
        Trainer(
            distill_config(
                camvid_root, tmp_path, teacher_file, teacher="", unlabelled=(str(unlabelled_root),)
            )
        )
    with pytest.raises(ValueError, match="cached' or 'online"):
        Trainer(distill_config(camvid_root, tmp_path, teacher_file, teacher_targets="sometimes"))


def test_cli_takes_the_distillation_options(camvid_root, unlabelled_root, teacher_file, tmp_path):
    output = tmp_path / "cli"
    main([
        "train", "--data-root", str(camvid_root), "--train-split", "train", "--val-split", "",
        "--output", str(output), "--iters", "2", "--batch-size", "2", "--crop-size", "64", "64",
        "--warmup-iters", "1", "--workers", "0", "--log-interval", "1", "--model-overrides", '{"base_channels": 4, '
        '"head_channels": 4, "spp_channels": 8, "cross_size": 2}',
        "--teacher", str(teacher_file), "--teacher-cache", str(tmp_path / "cache"),
        "--unlabelled", str(unlabelled_root), "--distill-temperature", "2",
        "--distill-class-weights", '{"Bicyclist": 0.25}', "--sky-prob", "0.5",
    ])  # fmt: skip
    assert [e["step"] for e in read_log(output / "log.jsonl")] == [1, 2]
    recorded = read_checkpoint_info(output / "last.safetensors").extra["train_config"]
    assert recorded["unlabelled"] == [str(unlabelled_root)]
    assert recorded["distill_temperature"] == 2.0
    assert recorded["distill_class_weights"] == {"Bicyclist": 0.25}


def _distill_rank(rank, world_size, port, camvid_root, unlabelled_root, teacher_file, output) -> None:
    import os
    from pathlib import Path

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    torch.set_num_threads(1)
    config = distill_config(
        camvid_root, Path(output), teacher_file, iters=2, val_split="", unlabelled=(str(unlabelled_root),)
    )
    trainer = Trainer(config)
    trainer.run()
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    torch.save(flat, f"{output}/params-rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_distill_in_sync(camvid_root, unlabelled_root, teacher_file, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    output = tmp_path / "ddp"
    output.mkdir()
    arguments = (2, port, str(camvid_root), str(unlabelled_root), str(teacher_file), str(output))
    mp.start_processes(_distill_rank, args=arguments, nprocs=2, start_method="spawn")
    rank0 = torch.load(output / "params-rank0.pt", weights_only=True)
    assert torch.equal(rank0, torch.load(output / "params-rank1.pt", weights_only=True))
    assert len(list((tmp_path / "cache").glob("*/*.npy"))) == 4 + 3  # computed once, by rank 0


def test_a_committee_teaches_each_footage_with_its_own_members(
    camvid_root, unlabelled_root, teacher_file, tmp_path
):
    """Labelled CamVid frames get the "camvid-trained" members (CGNet silent), unlabelled
    frames the "other" ones; the targets are cached per committee and training runs on them."""
    from engine.training.cgnet import CGNet, CGNetTeacher
    from engine.training.committee import CommitteeSpec, load_camvid_teacher
    from engine.training.data import CombinedDataset, normalize, open_dataset
    from engine.training.distill import TeacherTargets

    torch.manual_seed(3)
    cgnet_path = tmp_path / "cgnet.pth"
    torch.save({"epoch": 1, "model": CGNet().state_dict()}, cgnet_path)
    ones = [1.0] * 11
    spec = CommitteeSpec(
        {"espnetv2": str(teacher_file), "cgnet": str(cgnet_path)},
        {"camvid-trained": {"espnetv2": ones, "cgnet": [0.0] * 11}, "other": {"cgnet": ones}},
    )
    spec.to_file(tmp_path / "committee.json")
    labelled = open_dataset("camvid", camvid_root, "train")
    dataset = CombinedDataset([labelled, unlabelled_folder(unlabelled_root, CAMVID, (64, 64))])
    targets = TeacherTargets(dataset, tmp_path / "committee.json", tmp_path / "cache", fit_size=(64, 64))
    assert targets.compute(progress=False) == len(dataset)
    with torch.inference_mode():
        for index, teacher in (
            (0, load_camvid_teacher(teacher_file)),
            (len(labelled), CGNetTeacher(CGNet())),
        ):
            if index == len(labelled):
                teacher.network.load_state_dict(torch.load(cgnet_path, weights_only=True)["model"])
                teacher.eval()
            image, _ = dataset.load(index)
            expected = teacher.probabilities(normalize(image)[None])[0].permute(1, 2, 0).numpy()
            expected /= expected.sum(axis=2, keepdims=True)  # the committee renormalises
            cached = np.load(targets.path(index)).astype(np.float32) / 255
            assert np.abs(cached - expected).max() < 0.01
    spec.weights["other"]["cgnet"] = [0.5] * 11  # new weights: a new cache
    spec.to_file(tmp_path / "committee.json")
    assert TeacherTargets(
        dataset, tmp_path / "committee.json", tmp_path / "cache", fit_size=(64, 64)
    ).missing()

    config = distill_config(camvid_root, tmp_path / "run", tmp_path / "committee.json", iters=2)
    config = config.replace(unlabelled=(str(unlabelled_root),), teacher_cache=str(tmp_path / "cache2"))
    Trainer(config).run()
    assert (tmp_path / "run" / "last.safetensors").is_file()
    with pytest.raises(ValueError, match="cached"):
        Trainer(config.replace(teacher_targets="online", output=str(tmp_path / "online")))


def test_a_committee_with_our_own_checkpoint_gets_new_targets_when_it_is_replaced(
    camvid_root, unlabelled_root, tmp_path
):
    """Shipped weights are replaced under the same name: the targets follow their contents."""
    from engine.training.committee import CommitteeSpec
    from engine.training.data import CombinedDataset, open_dataset
    from engine.training.distill import TeacherTargets

    tutor = tmp_path / "rtformer-base-camvid.safetensors"
    write_checkpoint(tutor, seed=1)
    CommitteeSpec({"rtformer": str(tutor)}, {"camvid-trained": {"rtformer": [1.0] * 11}}).to_file(
        tmp_path / "committee.json"
    )
    dataset = CombinedDataset([open_dataset("camvid", camvid_root, "train")])
    targets = TeacherTargets(dataset, tmp_path / "committee.json", tmp_path / "cache")
    assert targets.compute(progress=False) == len(dataset)
    assert not TeacherTargets(dataset, tmp_path / "committee.json", tmp_path / "cache").missing()
    write_checkpoint(tutor, seed=2)  # a new Base shipped under the same name
    assert TeacherTargets(dataset, tmp_path / "committee.json", tmp_path / "cache").missing()
