"""Measure the teacher committee's weights and write them as a committee JSON.

Every number comes from frames the member did not train on, and none from CamVid test:
- ESPNetv2 (at its own 1024x512) and EdgeTPU-DeepLab never saw CamVid: their per-class
  IoU is measured on CamVid train; the power that turns IoUs into weights is chosen
  on CamVid val (every candidate scored on the same probabilities).
- CGNet trained on CamVid train+val, so no CamVid frame but test is unseen by it. Its
  per-class IoU comes from its own test report (`rtformer eval-teacher CGNET.pth
  --split test -o cgnet-test.json`, which reproduces its README); it only speaks on
  "camvid" footage, never on the frames the distillation trains on, so this choice
  does not reach a student. The committee's test score is optimistic by that much.
- On "other" footage (sunny highways) DeepLab keeps no weight on Sky: its README measured
  it calling 4-19% of sunny frames Sky where ESPNetv2 calls 12-45% (ESPNetv2 right).
  The Sky shares of both on the unlabelled Udacity drive (training input) are printed
  as a check.

    python tools/committee_weights.py --data-root data/CamVid \
        --espnetv2 teachers/espnetv2-cityscapes/espnetv2_s_2.0_city_1024x512.pth \
        --deeplab teachers/edgetpu-deeplab-cityscapes/deeplab_mobilenet_edgetpu_slim_cityscapes_quant.tflite \
        --cgnet teachers/cgnet-camvid/cgnet_m3n21_camvid.pth --cgnet-report cgnet-test.json \
        --unlabelled data/udacity-hmb-unlabelled -o configs/committee.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.media import list_images
from engine.model.classes import CAMVID
from engine.training.committee import CommitteeSpec, class_weights_from_iou, load_camvid_teacher
from engine.training.data import normalize, open_dataset
from engine.training.evaluate import EvalReport, update_confusion

POWERS = (0.0, 1.0, 2.0, 4.0)  # 0: equal weights
SKY = CAMVID.names.index("Sky")


def member_ious(members: dict, dataset) -> dict[str, list[float]]:
    """Each member's per-class IoU over `dataset`."""
    confusion = {kind: np.zeros((11, 11), np.int64) for kind in members}
    for index in tqdm(range(len(dataset)), desc="members on train"):
        image, label = dataset.load(index)
        for kind, teacher in members.items():
            prediction = teacher.probabilities(normalize(image)[None])[0].argmax(0).numpy()
            update_confusion(confusion[kind], prediction, label)
    return {kind: report_ious(matrix) for kind, matrix in confusion.items()}


def report_ious(confusion: np.ndarray) -> list[float]:
    report = EvalReport.from_confusion(confusion, CAMVID.names, num_images=0)
    return [report.class_iou[name] or 0.0 for name in CAMVID.names]


def choose_power(members: dict, ious: dict, dataset) -> tuple[float, dict[float, float]]:
    """The power whose weights score best on `dataset`, and every power's mIoU."""
    tables = {power: class_weights_from_iou(ious, power) for power in POWERS}
    confusion = {power: np.zeros((11, 11), np.int64) for power in POWERS}
    for index in tqdm(range(len(dataset)), desc="powers on val"):
        image, label = dataset.load(index)
        answers = {kind: t.probabilities(normalize(image)[None])[0] for kind, t in members.items()}
        for power, table in tables.items():
            mixed = sum(answers[k] * torch.tensor(table[k]).view(-1, 1, 1) for k in members)
            update_confusion(confusion[power], mixed.argmax(0).numpy(), label)
    scores = {
        power: EvalReport.from_confusion(m, CAMVID.names, num_images=0).miou for power, m in confusion.items()
    }
    return max(scores, key=scores.get), scores


def sky_shares(members: dict, folder: str, every: int = 25) -> dict[str, float]:
    """The share of pixels each member calls Sky on every `every`th frame of `folder`."""
    import cv2

    frames = list_images(Path(folder))[::every]
    shares = {kind: [] for kind in members}
    for path in frames:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        for kind, teacher in members.items():
            labels = teacher.probabilities(normalize(image)[None])[0].argmax(0)
            shares[kind].append(float((labels == SKY).float().mean()))
    return {kind: round(100 * float(np.mean(values)), 1) for kind, values in shares.items()}


def build_spec(args, ious: dict, power: float, cgnet_iou: list[float]) -> CommitteeSpec:
    cityscapes = class_weights_from_iou(ious, power)
    other = {kind: list(weights) for kind, weights in cityscapes.items()}
    other["espnetv2"][SKY], other["deeplab"][SKY] = 1.0, 0.0
    members = {"espnetv2": args.espnetv2, "deeplab": args.deeplab, "cgnet": args.cgnet}
    weights = {
        "camvid": class_weights_from_iou({**ious, "cgnet": cgnet_iou}, power),
        "camvid-trained": cityscapes,
        "other": other,
    }
    notes = {
        "measured": "tools/committee_weights.py: weight = IoU**power, normalised per class over the members",
        "power": str(power),
        "ious_camvid_train": json.dumps({k: [round(v, 1) for v in values] for k, values in ious.items()}),
        "cgnet_iou_source": f"{args.cgnet_report} (CamVid test: the only CamVid frames CGNet did not train on)",
        "other_sky": "DeepLab silent on Sky on other footage (its README: sunny skies called SignSymbol/Building)",
    }
    return CommitteeSpec(members, weights, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--espnetv2", required=True)
    parser.add_argument("--deeplab", required=True)
    parser.add_argument("--cgnet", required=True)
    parser.add_argument(
        "--cgnet-report", required=True, help="rtformer eval-teacher CGNET --split test -o FILE"
    )
    parser.add_argument("--unlabelled", help="a folder of unlabelled frames of other footage (Sky check)")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    members = {kind: load_camvid_teacher(getattr(args, kind), kind) for kind in ("espnetv2", "deeplab")}
    ious = member_ious(members, open_dataset("camvid", args.data_root, "train"))
    print(
        "IoU on CamVid train:", json.dumps({k: [round(v, 1) for v in values] for k, values in ious.items()})
    )
    power, scores = choose_power(members, ious, open_dataset("camvid", args.data_root, "val"))
    print("mIoU on CamVid val by power:", {p: round(s, 2) for p, s in scores.items()}, "-> power", power)
    if args.unlabelled:
        print("Sky share on the unlabelled frames (%):", sky_shares(members, args.unlabelled))
    report = json.loads(Path(args.cgnet_report).read_text())
    cgnet_iou = [report["class_iou"][name] or 0.0 for name in CAMVID.names]
    spec = build_spec(args, ious, power, cgnet_iou)
    spec.notes["val_miou_by_power"] = json.dumps({str(p): round(s, 2) for p, s in scores.items()})
    spec.to_file(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
