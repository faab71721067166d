"""Knowledge distillation from a teacher that speaks the student's classes.

Used for training only. The teacher (`engine.training.espnetv2.CamVidTeacher`, Cityscapes
classes merged to CamVid's) supervises every pixel, including void pixels and
images without labels; labels, where they exist, keep their cross-entropy.

On this 2-core CPU the teacher costs about 1.0 s per 360x480 frame at its 2x input
(7.8 s for a batch of eight 288x384 crops, five times the student's training step),
so by default its answers are computed once per training image and cached
(`TeacherTargets`): the probabilities at the image's size, as uint8, which the
training transform scales, crops and flips exactly like the image. The teacher
then sees the clean frame, not the colour-augmented one: the student learns to
give the clean frame's answer on the altered frame. `online` runs the teacher on
the very tensor the student sees instead (for a GPU).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.runtime.artifacts import file_digest
from engine.training.committee import Committee, CommitteeSpec
from engine.training.data import CombinedDataset, SegmentationDataset, normalize, resize_channels
from engine.training.espnetv2 import load_teacher

# A cached target whose probabilities sum below this (of 255) is padding: no teacher there.
MIN_TARGET_MASS = 32


def distillation_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    class_weights: torch.Tensor | None = None,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean per-pixel KL(teacher || student), scaled by temperature^2 (Hinton et al.).

    logits: student (N, K, H, W). targets: teacher probabilities (N, K, H, W), float
    summing to <= 1 or uint8 summing to <= 255 (renormalised; pixels whose mass is
    below `MIN_TARGET_MASS`/255 are padding and left out). The temperature softens
    both sides (the teacher's as softmax(log p / T)). class_weights (K,) weigh each
    pixel by the teacher's most likely class (less where the teacher is weak);
    pixel_weights (N, H, W) multiply on top. Returns 0 when no pixel has a target.
    """
    probabilities = targets.float() / 255.0 if targets.dtype == torch.uint8 else targets.float()
    mass = probabilities.sum(dim=1)
    valid = mass > MIN_TARGET_MASS / 255.0
    probabilities = probabilities / mass.clamp_min(1e-6).unsqueeze(1)
    log_teacher = probabilities.clamp_min(1e-8).log()
    if temperature != 1.0:
        log_teacher = F.log_softmax(log_teacher / temperature, dim=1)
    log_student = F.log_softmax(logits.float() / temperature, dim=1)
    teacher = log_teacher.exp()
    divergence = (teacher * (log_teacher - log_student)).sum(dim=1)
    weights = valid.float()
    if class_weights is not None:
        weights = weights * class_weights.to(logits.device)[teacher.argmax(dim=1)]
    if pixel_weights is not None:
        weights = weights * pixel_weights
    count = valid.sum()
    if count == 0:
        return logits.sum() * 0.0  # keeps the graph: every rank still runs backward
    return temperature**2 * (divergence * weights).sum() / count


def distrust_dark_answers(targets: torch.Tensor, dark: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Teacher targets (N, K, H, W), cached (uint8) or online (float), with no teacher (all
    zeros, as padding) on the `dark` (N, H, W) pixels whose most likely class is one of
    `classes`. Darkness is judged on the crop before its look changed (`TrainTransform`).

    Why: the committee calls a shadowed road Car. On the drive's 47 frames where Car
    covers over 30% of the road ahead, 76% of its Car pixels are darker than 40 grey
    levels, against 46% on its other frames. Dropping those targets loses
    some true dark cars too; CamVid's labels still teach them. Measured on Slim after a
    shadow run: Car on the demo's shadowed road 43.7% -> 17.7% in 800 steps
    (tools/demo_faults.py), CamVid test level (50.82 -> 50.95).
    """
    wanted = torch.as_tensor(list(classes), dtype=torch.long, device=targets.device)
    doubted = dark.to(targets.device) & torch.isin(targets.argmax(dim=1), wanted)
    return targets * (~doubted).unsqueeze(1).to(targets.dtype)


class TeacherTargets:
    """The teacher's CamVid probabilities for every sample of a training dataset, cached
    as uint8 (H, W, K) .npy files keyed by image path, teacher file and scale.

    Callable as `targets(index, (H, W))` (what `EpochStream` takes); picklable for
    DataLoader workers (it holds paths only).
    """

    def __init__(
        self,
        dataset: SegmentationDataset | CombinedDataset,
        teacher_path: str | Path,
        cache_dir: str | Path,
        scale: float = 2.0,
        fit_size: tuple[int, int] | None = None,
    ) -> None:
        self.dataset = dataset
        self.teacher_path, self.scale = Path(teacher_path), scale
        # fit_size: what unlabelled images were scaled to fit (part of what the teacher saw).
        # A committee's key holds its file's text: new weights, new targets.
        teacher_id = f"{self.teacher_path.resolve()}:{self.teacher_path.stat().st_size}:{scale}:{fit_size}"
        if is_committee(self.teacher_path):
            teacher_id += ":" + committee_identity(self.teacher_path)
        self.folder = Path(cache_dir) / hashlib.sha1(teacher_id.encode()).hexdigest()[:12]

    def path(self, index: int) -> Path:
        sample = self.dataset.samples[index]
        key = str(Path(sample.image).resolve())
        return self.folder / f"{Path(sample.image).stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npy"

    def missing(self) -> list[int]:
        return [index for index in range(len(self.dataset.samples)) if not self.path(index).is_file()]

    @torch.inference_mode()
    def compute(self, progress: bool = True) -> int:
        """Run the teacher on the samples not cached yet; returns how many it computed."""
        indices = self.missing()
        if not indices:
            return 0
        self.folder.mkdir(parents=True, exist_ok=True)
        answer = self.teacher_answers()
        for index in tqdm(indices, desc="teacher targets", disable=not progress, dynamic_ncols=True):
            image, _ = self.dataset.load(index)
            probabilities = answer(normalize(image)[None], self.footage(index))[0]
            target = (probabilities.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
            save_array(np.ascontiguousarray(target.numpy()), self.path(index))
        return len(indices)

    def teacher_answers(self) -> Callable[[torch.Tensor, str], torch.Tensor]:
        """(normalised image, footage) -> CamVid probabilities, from the ESPNetv2 teacher
        or a committee (whose members' weights depend on the footage)."""
        if is_committee(self.teacher_path):
            committee = Committee(CommitteeSpec.from_file(self.teacher_path))
            return committee.probabilities
        teacher = load_teacher(self.teacher_path, self.scale)
        return lambda image, _footage: teacher.probabilities(image)

    def footage(self, index: int) -> str:
        """CamVid's labelled frames are what CGNet trained on; unlabelled folders are other footage."""
        return "other" if self.dataset.samples[index].label is None else "camvid-trained"

    def compute_in_child(self, progress: bool = True) -> None:
        """`compute` in a spawned process. The teacher's inference starts OpenMP's thread
        pool; a process that has one and then forks DataLoader workers deadlocks them
        (seen here: the worker hung in torch.set_num_threads). A child keeps the trainer clean."""
        context = torch.multiprocessing.get_context("spawn")
        child = context.Process(target=_compute_targets, args=(self, progress))
        child.start()
        child.join()
        if child.exitcode != 0 or self.missing():
            raise RuntimeError(f"computing the teacher's targets failed (exit code {child.exitcode})")

    def __call__(self, index: int, size: tuple[int, int]) -> np.ndarray:
        target = np.load(self.path(index))
        if target.shape[:2] != tuple(size):
            target = resize_channels(target, (size[1], size[0]))
        return target


def is_committee(path: str | Path) -> bool:
    """A committee JSON (engine.training.committee) rather than one teacher's weights."""
    return Path(path).suffix == ".json"


def committee_identity(path: str | Path) -> str:
    """What a committee's targets depend on: its file's text and, for members that are our
    own checkpoints, their contents. Shipped weights are replaced under the same name (the
    teachers' files are not), so a new Base gets new targets."""
    text = Path(path).read_text()
    members = json.loads(text)["members"]  # the file's own text, read once
    own = sorted(member for kind, member in members.items() if kind == "rtformer")
    return text + "".join(f":{member}={file_digest(member)}" for member in own)


def _compute_targets(targets: TeacherTargets, progress: bool) -> None:
    targets.compute(progress=progress)


def save_array(array: np.ndarray, path: Path) -> None:
    """np.save through a temporary file: an interrupted run never leaves half a target."""
    temporary = path.with_name(path.stem + ".tmp.npy")
    np.save(temporary, array)
    temporary.replace(path)


def check_class_names(names: Sequence[str], given, option: str) -> None:
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"{option} names unknown classes {unknown}; classes are {list(names)}")


def class_indices(names: Sequence[str], chosen: Sequence[str], option: str) -> list[int]:
    """The positions of the `chosen` class names in `names`; unknown names are errors."""
    check_class_names(names, chosen, option)
    return [list(names).index(name) for name in chosen]


def class_weight_vector(names: Sequence[str], weights: dict[str, float]) -> torch.Tensor:
    """Per-class distillation weights (1 unless named) in `names` order; unknown names are errors."""
    check_class_names(names, weights, "distill_class_weights")
    return torch.tensor([float(weights.get(name, 1.0)) for name in names])
