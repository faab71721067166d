"""Generalization probe: how far a model agrees with a reference model on unlabelled
frames from beyond its training data (e.g. `data/dashcam-probe/`, sunny
highway frames, which CamVid's overcast Cambridge never showed).

The reference is the ESPNetv2 Cityscapes teacher speaking CamVid classes: the argmax
over its 20 channels, mapped to CamVid, with its background answers left out. It
sees each frame as the student is trained to: fitted (aspect kept) into the model's
360x480 input, then resized 2x (sides to multiples of 32), as in
`engine.training.distill.TeacherTargets`. The model under test runs through a `Segmenter`,
the app's own path (its input size, argmax, then labels resized to the frame).

Figures (JSON like the other evaluations): pixel agreement, per-class IoU against the
reference, their mean over Sky/Road/Tree/Car (the classes that fill a road scene),
and the share of the reference's Sky that the model calls Sky.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from engine.media import list_images
from engine.training.data import fit_within, normalize
from engine.training.espnetv2 import OWN_SIZE, load_teacher
from engine.training.evaluate import EvalReport, update_confusion

KEY_CLASSES = ("Sky", "Road", "Tree", "Car")
REFERENCE_FIT = (360, 480)  # what the teacher's training targets were computed on


@dataclass
class ProbeReport:
    pixel_agreement: float  # percent of the pixels the reference labels
    key_class_iou: float  # percent, mean IoU against the reference over KEY_CLASSES
    sky_called_sky: float  # percent of the reference's Sky pixels
    miou: float  # percent, mean IoU against the reference over classes that occur
    class_iou: dict[str, float | None]
    num_images: int
    model: str
    reference: str

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    def table(self) -> str:
        lines = [f"{name:<12} {'-' if v is None else f'{v:6.2f}':>7}" for name, v in self.class_iou.items()]
        return "\n".join(
            [
                f"agreement with {self.reference} on {self.num_images} frames",
                "class        IoU vs reference (%)",
                *lines,
                f"pixels agreeing          {self.pixel_agreement:6.2f} %",
                f"IoU over {'/'.join(KEY_CLASSES)}  {self.key_class_iou:6.2f}",
                f"reference Sky called Sky {self.sky_called_sky:6.2f} %",
                f"mIoU vs reference        {self.miou:6.2f}",
            ]
        )


def list_frames(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"probe folder not found: {folder}")
    frames = list_images(folder)
    if not frames:
        raise FileNotFoundError(f"no images in {folder}")
    return frames


class TeacherReference:
    """frame (BGR uint8) -> reference labels at the frame's size (255 = no answer).

    By default the frame is squashed to `own_size` (H, W), OWN_SIZE, where the teacher
    scores best (60.2 against 54.0 on CamVid test, its README). With `own_size` None it
    is fitted into `fit_size` and resized by `scale`, as the first distillation targets
    were made."""

    def __init__(
        self,
        teacher_path: str | Path,
        scale: float = 2.0,
        fit_size=REFERENCE_FIT,
        own_size: tuple[int, int] | None = OWN_SIZE,
    ) -> None:
        self.teacher = load_teacher(teacher_path, scale, own_size)
        self.fit_size, self.own_size = fit_size, own_size
        at = f" at {own_size[1]}x{own_size[0]}" if own_size else ""
        self.name = f"ESPNetv2 Cityscapes teacher ({Path(teacher_path).name}){at}"

    @torch.inference_mode()
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if not self.own_size:
            image = fit_within(image, self.fit_size)
        labels = self.teacher.labels(normalize(image)[None])[0].numpy()
        return cv2.resize(labels, frame.shape[1::-1], interpolation=cv2.INTER_NEAREST)


def probe(
    predict: Callable[[np.ndarray], np.ndarray],
    reference: Callable[[np.ndarray], np.ndarray],
    frames: Sequence[Path],
    class_names: Sequence[str],
    model_name: str = "model",
    reference_name: str = "reference",
    overlays: Callable[[Path, np.ndarray, np.ndarray, np.ndarray], None] | None = None,
    progress: bool = True,
) -> ProbeReport:
    """Compare `predict(frame)` with `reference(frame)` on every frame (BGR images read
    from `frames`); `overlays(path, frame, ours, reference)` sees each result."""
    num_classes = len(class_names)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for path in tqdm(frames, desc="probe", disable=not progress, leave=False):
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise ValueError(f"cannot read image {path}")
        ours, theirs = predict(frame), reference(frame)
        update_confusion(confusion, ours, theirs)
        if overlays is not None:
            overlays(path, frame, ours, theirs)
    return report_from_confusion(confusion, class_names, len(frames), model_name, reference_name)


def report_from_confusion(
    confusion: np.ndarray, class_names: Sequence[str], num_images: int, model: str, reference: str
) -> ProbeReport:
    """confusion[reference class, our class] -> the probe's figures."""
    summary = EvalReport.from_confusion(confusion, class_names)
    names = list(class_names)
    key = [summary.class_iou[name] for name in KEY_CLASSES if name in names]
    key = [value for value in key if value is not None]
    sky = names.index("Sky") if "Sky" in names else None
    sky_total = confusion[sky].sum() if sky is not None else 0
    return ProbeReport(
        pixel_agreement=summary.pixel_accuracy,
        key_class_iou=float(np.mean(key)) if key else 0.0,
        sky_called_sky=float(confusion[sky, sky] / sky_total * 100) if sky_total else 0.0,
        miou=summary.miou,
        class_iou=summary.class_iou,
        num_images=num_images,
        model=model,
        reference=reference,
    )


def side_by_side_writer(folder: str | Path, palette, alpha: float = 0.5) -> Callable:
    """An `overlays` callback writing `<frame>.png`: our overlay left, the reference's right
    (white where the reference gives no answer), each captioned."""
    from engine.runtime.segmenter import overlay, palette_lut

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lut = palette_lut(palette)
    lut[255] = (255, 255, 255)

    def write(path: Path, frame: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> None:
        panels = []
        for labels, caption in ((ours, "ours"), (theirs, "reference")):
            panel = overlay(frame, labels, lut, alpha)
            cv2.putText(
                panel, caption, (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (255, 255, 255), 3, cv2.LINE_AA
            )
            panels.append(panel)
        cv2.imwrite(str(folder / f"{path.stem}.png"), np.hstack(panels))

    return write
