"""Weight-space interpolation between two checkpoints of one architecture (WiSE-FT,
Wortsman et al., CVPR 2022): theta = (1 - alpha) * before + alpha * after, buffers
(BN statistics) included. Fine-tuning for new footage moves a model away from what
it knew; the interpolation keeps much of both.

    .venv/bin/python tools/interpolate_weights.py weights/rtformer-base-camvid.safetensors \
        runs/card/rtformer-base-camvid.safetensors --alphas 0.25 0.5 0.75 \
        --data-root data/CamVid --frames data/udacity-hmb-unlabelled \
        --teacher-cache runs/teacher-cache --teacher TEACHER.pth -o runs/card/base-wise

With `--no-eval` it only writes the mixes, for a recipe whose alpha is fixed in advance
(the committee-distilled Slim: alpha 0.5, the WiSE-FT paper's default, chosen before any figure):

    .venv/bin/python tools/interpolate_weights.py CAMVID_ONLY.safetensors \
        runs/slim-distill-committee/last.safetensors --alphas 0.5 --no-eval -o runs/slim-wise

Alpha is chosen on training data only, never on CamVid test or the probe frames: CamVid
train+val mIoU (every 4th image) for what the labels teach, and agreement with the
teacher's cached answers on the unlabelled training frames (every 10th) for the new
footage. Each alpha's checkpoint is written, with a JSON of both figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from engine.model.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from engine.training.data import normalize, open_dataset, unlabelled_folder
from engine.training.distill import TeacherTargets
from engine.training.evaluate import evaluate, predict_probabilities


def interpolate(
    before: dict, after: dict, alpha: float, modules: tuple[str, ...] = (), rest_alpha: float = 0.0
) -> dict:
    """(1 - alpha) * before + alpha * after, tensor by tensor; with `modules` (top-level
    module names such as "stem", "layer3") only those take `alpha`, the rest `rest_alpha`."""
    mixed = {}
    for name, tensor in after.items():
        weight = alpha if not modules or name.split(".")[0] in modules else rest_alpha
        if tensor.is_floating_point():
            mixed[name] = (1 - weight) * before[name].float() + weight * tensor.float()
        else:
            mixed[name] = tensor if weight else before[name]
    return mixed


@torch.inference_mode()
def teacher_agreement(model, frames, targets: TeacherTargets, every: int = 10) -> float:
    """Percent of pixels where the model's argmax equals the teacher's cached argmax."""
    agree = total = 0
    for index in range(0, len(frames.samples), every):
        image, _ = frames.load(index)
        ours = predict_probabilities(model, normalize(image)[None]).argmax(dim=1)[0].numpy()
        teacher = targets(index, image.shape[:2])
        valid = teacher.sum(axis=2) > 32
        agree += int(((teacher.argmax(axis=2) == ours) & valid).sum())
        total += int(valid.sum())
    return 100.0 * agree / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--data-root", help="CamVid (required unless --no-eval)")
    parser.add_argument("--frames", help="the unlabelled training frames (required unless --no-eval)")
    parser.add_argument("--teacher", help="the teacher of --frames' cached answers (unless --no-eval)")
    parser.add_argument("--teacher-cache", default="runs/teacher-cache")
    parser.add_argument(
        "--modules",
        nargs="+",
        default=[],
        help="mix only these top-level modules (e.g. stem layer1 layer2 layer3 compression3 "
        "layer3_high); the others stay as in BEFORE",
    )
    parser.add_argument(
        "--no-eval", action="store_true", help="write the mixes only (alpha fixed in advance)"
    )
    parser.add_argument("-o", "--output", required=True, type=Path)
    args = parser.parse_args()
    if args.no_eval:
        write_mixes(args)
        return
    if not (args.data_root and args.frames and args.teacher):
        parser.error("--data-root, --frames and --teacher are needed to evaluate (or give --no-eval)")

    before, before_info = load_checkpoint(args.before)
    after, info = load_checkpoint(args.after)
    labelled = open_dataset("camvid", args.data_root, "train+val")
    labelled.samples = labelled.samples[::4]
    frames = unlabelled_folder(args.frames, labelled.classes, (360, 480))
    # The same cache the training filled (keyed by image path, teacher, scale and fit size).
    targets = TeacherTargets(frames, args.teacher, args.teacher_cache, 2.0, (360, 480))
    args.output.mkdir(parents=True, exist_ok=True)
    results = {}
    modules = tuple(args.modules)
    for alpha in [0.0, *args.alphas, 1.0]:
        if alpha == 0.0:
            model = before
        elif alpha == 1.0 and not modules:
            model = after
        else:
            model = load_checkpoint(args.after)[0]
            model.load_state_dict(interpolate(before.state_dict(), after.state_dict(), alpha, modules))
            mixed = mix_info(info, before_info, str(args.before), str(args.after), alpha)
            save_checkpoint(args.output / f"alpha-{alpha:g}.safetensors", model.eval(), mixed, half=True)
        model.eval()
        results[alpha] = {
            "camvid_trainval_miou": round(evaluate(model, labelled, progress=False).miou, 2),
            "teacher_agreement_unlabelled": round(teacher_agreement(model, frames, targets), 2),
        }
        print(alpha, results[alpha], flush=True)
    (args.output / "alphas.json").write_text(json.dumps(results, indent=2) + "\n")


def mix_info(
    info: CheckpointInfo, before_info: CheckpointInfo, before: str, after: str, alpha: float
) -> CheckpointInfo:
    """The mix's metadata: AFTER's, less its run's figures (a mix has not been evaluated:
    `tools/ship_weights.py MIX OUT` measures it), and the mix recorded with what each side
    was mixed from, so that a mix of mixes (a soup) names every ingredient."""
    mixed = {
        "before": before,
        "after": after,
        "alpha": alpha,
        "before_mix": before_info.extra.get("interpolation"),
        "after_mix": info.extra.get("interpolation"),
    }
    # One run's figures (its test scores, its step count, its hours) do not describe a mix.
    metrics = {k: v for k, v in info.metrics.items() if not k.startswith("test_") and k != "step"}
    metrics["evaluation"] = "none yet: a mix of two checkpoints"
    extra = {k: v for k, v in info.extra.items() if k != "training_hours"}
    return dataclasses.replace(info, metrics=metrics, extra={**extra, "interpolation": mixed})


def write_mixes(args) -> None:
    """alpha-A.safetensors for each alpha, float16, with the mix recorded in the metadata."""
    before_model, before_info = load_checkpoint(args.before)
    before = before_model.state_dict()
    model, info = load_checkpoint(args.after)
    after = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    args.output.mkdir(parents=True, exist_ok=True)
    for alpha in args.alphas:  # one model, every tensor replaced at each alpha
        model.load_state_dict(interpolate(before, after, alpha, tuple(args.modules)))
        mixed = mix_info(info, before_info, str(args.before), str(args.after), alpha)
        path = args.output / f"alpha-{alpha:g}.safetensors"
        save_checkpoint(path, model.eval(), mixed, half=True)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
