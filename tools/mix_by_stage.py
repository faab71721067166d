"""Where does a fine-tune's new look live? Mix a fine-tuned RTFormer into the weights it
started from, stage by stage, and score each mix on CamVid test and the dashcam probe.

    .venv/bin/python tools/mix_by_stage.py runs/slim-camvid-only.safetensors \
        weights/rtformer-slim-camvid.safetensors --shipped-alpha 0.4 \
        --data-root data/CamVid --frames data/dashcam-probe \
        --teacher teachers/espnetv2-cityscapes/espnetv2_s_2.0_city_1024x512.pth \
        -o runs/mix-by-stage-slim.json

AFTER is either the fine-tuned checkpoint itself or, with `--shipped-alpha A`, a WiSE-FT
mix `(1 - A) * BEFORE + A * fine-tuned` (what weights/ shipped), from which the fine-tuned
weights are recovered as `(MIX - (1 - A) * BEFORE) / A`. From float16 files that recovery
is close, not exact: Slim's recovered fine-tune scored 47.88 on CamVid test against the
47.92 measured on the original run.

Each row mixes the "early" modules (the stem to stage 3, both branches) with one alpha and
the rest (the transformer blocks, DAPPM, the heads) with another. Figures: CamVid test mIoU
on the research path (PyTorch, full resolution) and the probe on the app's path (PyTorch
Segmenter), as `rtformer eval` and `rtformer probe` compute them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from interpolate_weights import interpolate  # tools/, beside this script

from engine.model.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint
from engine.model.rtformer import RTFormer
from engine.runtime.segmenter import Segmenter
from engine.training.data import open_dataset
from engine.training.evaluate import evaluate
from engine.training.probe import TeacherReference, list_frames, probe

EARLY = ("stem", "layer1", "layer2", "layer3", "compression3", "layer3_high")
# (alpha for the early modules, alpha for the rest, which modules count as early);
# "bn" as the early alpha: only the early modules' BN statistics, all of them.
ROWS = [
    (0.0, 0.0, EARLY),
    (1.0, 1.0, EARLY),
    (1.0, 0.0, ("stem", "layer1")),
    (1.0, 0.0, ("stem", "layer1", "layer2")),
    (1.0, 0.0, EARLY),
    (0.7, 0.0, EARLY),
    (0.5, 0.0, EARLY),
    (0.2, 0.7, EARLY),
    ("bn", 0.0, EARLY),
]


def recover_fine_tune(before: dict, mix: dict, alpha: float) -> dict:
    """The fine-tuned weights of a WiSE-FT mix made with `alpha`."""
    return {
        name: (tensor.float() - (1 - alpha) * before[name].float()) / alpha
        if tensor.is_floating_point()
        else tensor
        for name, tensor in mix.items()
    }


def measure(state: dict, info: CheckpointInfo, path: Path, test, reference, frames):
    """Write `state` to `path` as float16 with `info`, then score what was stored: CamVid test
    (research path) and the probe (PyTorch Segmenter, the app's path)."""
    model = RTFormer(info.config)
    model.load_state_dict(state)
    save_checkpoint(path, model.eval(), info, half=True)
    stored, _ = load_checkpoint(path)
    camvid = evaluate(stored, test, progress=False)
    segmenter = Segmenter(path, "torch", "cpu", "fp32")
    seen = probe(segmenter.predict, reference, frames, segmenter.class_names, progress=False)
    return stored, camvid, seen


def score(state: dict, info: CheckpointInfo, test, reference, frames, folder: Path) -> dict:
    _, camvid, seen = measure(state, info, folder / "mix.safetensors", test, reference, frames)
    return {
        "camvid_test_miou": round(camvid.miou, 2),
        "probe_pixel_agreement": round(seen.pixel_agreement, 1),
        "probe_key_class_iou": round(seen.key_class_iou, 1),
        "probe_sky_called_sky": round(seen.sky_called_sky, 1),
    }


def save_mix(state: dict, info: CheckpointInfo, args: argparse.Namespace, test, reference, frames) -> None:
    model, camvid, seen = measure(state, info, args.output, test, reference, frames)
    info.metrics = {
        "test_miou": round(camvid.miou, 2),
        "test_pixel_accuracy": round(camvid.pixel_accuracy, 2),
        "test_class_iou": {k: None if v is None else round(v, 2) for k, v in camvid.class_iou.items()},
        "evaluation": "camvid test, single scale, full resolution, PyTorch fp32",
        "probe_dashcam": {
            "pixel_agreement": round(seen.pixel_agreement, 2),
            "key_class_iou": round(seen.key_class_iou, 2),
            "sky_called_sky": round(seen.sky_called_sky, 2),
            "miou": round(seen.miou, 2),
        },
    }
    info.extra["weights"] = (
        f"stage-wise WiSE-FT (tools/mix_by_stage.py --save {args.save:g}): the stem to stage 3 "
        f"{1 - args.save:g} x {Path(args.before).name} + {args.save:g} x the fine-tune; "
        f"the transformer blocks, DAPPM and the heads as in {Path(args.before).name}"
    )
    save_checkpoint(args.output, model.eval(), info, half=True)
    camvid.to_json(args.output.with_suffix(".eval.json"))
    print(json.dumps(info.metrics))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="the weights the fine-tune started from")
    parser.add_argument("after", help="the fine-tuned weights, or a WiSE-FT mix (--shipped-alpha)")
    parser.add_argument("--shipped-alpha", type=float, help="AFTER is a mix made with this alpha")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--frames", required=True, help="the probe frames")
    parser.add_argument("--teacher", required=True)
    parser.add_argument(
        "-o", "--output", required=True, type=Path, help="the rows' JSON, or with --save the weights"
    )
    parser.add_argument(
        "--early-alphas",
        type=float,
        nargs="+",
        help="instead of the fixed rows: the stem to stage 3 mixed in at each alpha, the rest as BEFORE",
    )
    parser.add_argument(
        "--save",
        type=float,
        metavar="ALPHA",
        help="instead of the rows: write the stem to stage 3 mixed in at ALPHA (the rest as BEFORE) "
        "to OUTPUT, float16, with AFTER's metadata and its own CamVid test and probe figures",
    )
    args = parser.parse_args()

    before = load_checkpoint(args.before)[0].state_dict()
    after_model, info = load_checkpoint(args.after)
    after = after_model.state_dict()
    if args.shipped_alpha:
        after = recover_fine_tune(before, after, args.shipped_alpha)
    test = open_dataset("camvid", args.data_root, "test")
    reference, frames = TeacherReference(args.teacher), list_frames(args.frames)
    if args.save is not None:
        save_mix(interpolate(before, after, args.save, EARLY), info, args, test, reference, frames)
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        rows_asked = [(a, 0.0, EARLY) for a in args.early_alphas] if args.early_alphas else ROWS
        for early_alpha, late_alpha, early in rows_asked:
            if early_alpha == "bn":
                statistics = {k: v for k, v in after.items() if "running_" in k}
                state = interpolate(before, before | statistics, 1.0, early)
            else:
                state = interpolate(before, after, early_alpha, early, rest_alpha=late_alpha)
            row = {"early": list(early), "early_alpha": early_alpha, "late_alpha": late_alpha}
            row |= score(state, info, test, reference, frames, Path(folder))
            print(json.dumps(row), flush=True)
            rows.append(row)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
