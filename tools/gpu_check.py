"""One prepared session on a lent GPU machine: CUDA checks, the GPU benchmark, and
time-boxed training of RTFormer-Slim and RTFormer-Base side by side.

Run from the repository root on the GPU machine, with CamVid packed beside the code
(the machine reaches nothing else; PyAV is not needed on this path):

    python tools/gpu_check.py pack data/CamVid .gpu/CamVid   # here, once
    python3 tools/gpu_check.py --data .gpu/CamVid --out $OUT --seconds 540  # there

`--recipe distill` continues the shipped lineage instead (configs/distill-drive-distrust.toml
from the shipped weights, with the ESPNetv2 teacher run online on every crop in place of
the cached committee, whose members do not all run on the GPU machine), at the GPU's
batch 16; its extra data travels packed too (`pack-distill`, 26 MB):

    python tools/gpu_check.py pack-distill . .gpu/distill                # here, once
    python3 tools/gpu_check.py --recipe distill --data .gpu/CamVid --distill-data .gpu/distill \
        --no-checks --out $OUT --seconds 540                              # there

Everything lands in --out in at most 8 files of at most 15 MiB each (the device
tool's limits): gpu_report.json, logs.tar.gz, and each trained model as float16
safetensors, cut into numbered parts when larger. `tools/gpu_check.py join` puts
the parts back together and restores float32 on this side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

PART_BYTES = 15 * 1024 * 1024
VARIANTS = ("slim", "base")
DISTILL_TEACHER = "espnetv2_s_2.0_city_1024x512.pth"
SHUTDOWN_MARGIN_S = 45  # after training: fp16 conversion, packing, transfer start
STARTUP_S = 30  # a training process's start before its clock runs: CUDA, data, workers


def environment() -> dict:
    import onnxruntime

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpus": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
    }


def segmenter_checks(checkpoint: Path, frame_path: Path, device: str) -> dict:
    """The Segmenter's CUDA paths against its CPU path on one real frame, at two sizes."""
    import cv2

    from engine.runtime.segmenter import Segmenter

    results: dict = {"auto": Segmenter(checkpoint).description}
    for size in ((360, 480), (720, 960)):
        frame = cv2.resize(cv2.imread(str(frame_path)), size[::-1])
        reference = Segmenter(checkpoint, backend="torch", device="cpu").predict(frame)
        for precision, graphs in ((p, g) for p in ("fp32", "fp16") for g in (False, True)):
            if device != "cuda" and (precision, graphs) != ("fp32", False):
                continue
            segmenter = Segmenter(
                checkpoint, backend="torch", device=device, precision=precision, cuda_graphs=graphs
            )
            labels = segmenter.predict(frame)
            stages = []
            for _ in range(50):
                segmenter.predict(frame)
                stages.append(segmenter.timings)
            results[f"{size[0]}x{size[1]} {precision}{' graphs' if graphs else ''}"] = {
                "agreement_with_cpu_fp32": float((labels == reference).mean()),
                "median_ms": {
                    stage: float(np.median([getattr(t, stage) for t in stages]))
                    for stage in ("preprocess", "inference", "postprocess")
                },
                "description": segmenter.description,
            }
    return results


def gpu_bench(weights: Path) -> dict:
    from engine.commands.bench import DEFAULT_SIZES, LARGE_SIZE, run_bench

    return run_bench(VARIANTS, (*DEFAULT_SIZES, LARGE_SIZE), {"slim": weights}, rounds=100, cpu=False)


def train_command(
    variant: str, data: Path, output: Path, budget_minutes: float, workers: int, device: str, tuning: dict
) -> list[str]:
    arguments = [variant, data, output, budget_minutes, workers, device, json.dumps(tuning)]
    return [sys.executable, __file__, "train", *map(str, arguments)]


def train(
    variant: str, data: str, output: str, budget_minutes: str, workers: str, device: str, tuning: str
) -> None:
    """One training process (run by the main script, one per variant). `tuning` (JSON) holds
    TrainConfig fields, and "recipe": "camvid" (default) or "distill" with "distill_data"."""
    from engine.training.config import TrainConfig
    from engine.training.train import Trainer

    fields = json.loads(tuning)
    recipe = recipe_fields(variant, fields.pop("recipe", "camvid"), fields.pop("distill_data", ""))
    config = TrainConfig().replace(**recipe)
    config = config.replace(
        data_root=data,
        val_split="",  # CamVid test stays behind: evaluated on the CPU side from the real PNGs
        output=output,
        workers=int(workers),
        checkpoint_interval=10**9,  # only at the end: the state would not come back anyway
        budget_minutes=float(budget_minutes),
        max_minutes=float(budget_minutes) + 0.25,  # a hard stop should the probe have been optimistic
        device=device,
    )
    Trainer(config.replace(**fields)).run()


def recipe_fields(variant: str, recipe: str, distill_data: str) -> dict:
    """The config file's fields for `recipe`: camvid (configs/camvid-gpu.toml) or distill
    (configs/distill-drive-distrust.toml from the shipped weights, moved to the GPU: the packed
    teacher and frames, the teacher online on the very crop, batch 16)."""
    from engine.resources import shipped_weights
    from engine.training.config import read_config_file

    configs = Path(__file__).resolve().parents[1] / "configs"
    if recipe == "camvid":
        return {**read_config_file(configs / "camvid-gpu.toml"), "variant": variant}
    if recipe != "distill":
        raise ValueError(f"recipe must be camvid or distill, not {recipe!r}")
    packed = Path(distill_data)
    # The shipped recipe owns which teacher answers are not believed: Car on dark pixels
    # and Building, Pedestrian and Bicyclist on the drive (docs/research/distillation.md).
    fields = read_config_file(configs / "distill-drive-distrust.toml")
    return {
        **fields,
        "variant": variant,
        "pretrained_backbone": str(shipped_weights()[variant]),
        "unlabelled": [str(packed / "unlabelled")],
        "teacher": str(packed / DISTILL_TEACHER),
        "teacher_targets": "online",
        # ESPNetv2's weakest classes on CamVid train (IoU: Pole 35, SignSymbol 22; committee.json) count half.
        "distill_class_weights": {**fields["distill_class_weights"], "Pole": 0.5, "SignSymbol": 0.5},
        "batch_size": 16,
        "log_interval": 50,
    }


def half_precision_parts(weights: Path, out: Path, name: str) -> list[str]:
    """Write `weights` as float16 safetensors (metadata kept), cut into parts of PART_BYTES."""
    from engine.model.checkpoint import load_checkpoint, save_checkpoint

    model, info = load_checkpoint(weights)
    half = save_checkpoint(Path("/tmp") / f"{name}.fp16.safetensors", model, info, half=True)
    blob = half.read_bytes()
    names = []
    for index in range(0, len(blob), PART_BYTES):
        part = out / f"{name}.fp16.safetensors.part{index // PART_BYTES}"
        part.write_bytes(blob[index : index + PART_BYTES])
        names.append(part.name)
    return names


def join(parts_folder: Path, name: str, output: Path) -> None:
    """Back on the CPU side: join the parts, restore float32, keep the metadata."""
    from engine.model.checkpoint import load_checkpoint, save_checkpoint

    parts = sorted(parts_folder.glob(f"{name}.fp16.safetensors.part*"), key=lambda p: int(p.suffix[5:]))
    output.write_bytes(b"".join(p.read_bytes() for p in parts))
    model, info = load_checkpoint(output)  # float32 model: saving it again restores float32
    save_checkpoint(output, model, info)
    print(f"wrote {output} from {len(parts)} part(s)")


def pack(source: Path, target: Path, quality: int = 92) -> None:
    """CamVid's train and val splits with JPEG images (labels as they are), small enough to
    travel with the code (the device tool carries 64 MiB in all)."""
    import shutil

    import cv2

    for split in ("train", "val"):
        lines = []
        for line in (source / f"{split}.txt").read_text().split("\n"):
            if not line.strip():
                continue
            image, label = (source / field.lstrip("/") for field in line.split())
            jpeg = target / split / (image.stem + ".jpg")
            copied = target / f"{split}annot" / label.name
            jpeg.parent.mkdir(parents=True, exist_ok=True)
            copied.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(jpeg), cv2.imread(str(image)), [cv2.IMWRITE_JPEG_QUALITY, quality])
            shutil.copy(label, copied)
            lines.append(f"{split}/{jpeg.name} {split}annot/{copied.name}")
        (target / f"{split}.txt").write_text("\n".join(lines) + "\n")
    print(f"packed {target}")


def pack_distill(shared: Path, target: Path) -> None:
    """What the distill recipe needs beside CamVid: the Udacity frames without labels and
    the teacher's weights (26 MB together)."""
    import shutil

    (target / "unlabelled").mkdir(parents=True, exist_ok=True)
    for frame in sorted((shared / "data" / "udacity-hmb-unlabelled").glob("*.jpg")):
        shutil.copy(frame, target / "unlabelled" / frame.name)
    shutil.copy(shared / "teachers" / "espnetv2-cityscapes" / DISTILL_TEACHER, target / DISTILL_TEACHER)
    print(f"packed {target}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=540, help="all of it, packing included")
    parser.add_argument("--weights", type=Path, default=Path("weights/rtformer-slim-camvid.safetensors"))
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of this script on any machine")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--no-checks", action="store_true", help="train only: no CUDA checks or bench")
    parser.add_argument(
        "--init-from", type=Path, help="a folder of <variant>.fp16.safetensors.part* to fine-tune from"
    )
    parser.add_argument("--recipe", default="camvid", choices=("camvid", "distill"))
    parser.add_argument("--distill-data", type=Path, help="pack-distill's folder (--recipe distill)")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's (a CPU dry run wants 2)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    parser.add_argument("--warmup-iters", type=int, help="default: the recipe's")
    return parser.parse_args()


class Report(dict):
    """gpu_report.json in `folder`, rewritten after every change: a run cut short keeps
    what it measured."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.path = folder / "gpu_report.json"

    def save(self) -> None:
        self.path.write_text(json.dumps(self, indent=2) + "\n")

    def attempt(self, key: str, work) -> None:
        began = time.monotonic()
        try:
            self[key] = work()
        except Exception:  # one failed check must not cost the others
            self[key + "_error"] = traceback.format_exc()
            print(self[key + "_error"], flush=True)
        self.setdefault("seconds", {})[key] = round(time.monotonic() - began, 1)
        self.save()
        print(f"{key}: done in {self['seconds'][key]} s", flush=True)


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out)
    report.attempt("environment", environment)
    if not args.no_checks:
        frame = sorted((args.data / "train").iterdir())[0]
        report.attempt("segmenter", lambda: segmenter_checks(args.weights, frame, args.device))
        report.attempt("bench", lambda: gpu_bench(args.weights))

    runs = Path("/tmp/gpu-runs")
    budget_s = args.seconds - (time.monotonic() - started) - SHUTDOWN_MARGIN_S - STARTUP_S
    workers = max(1, ((os.cpu_count() or 2) - len(args.variants)) // len(args.variants))
    report["training"] = {"budget_minutes": budget_s / 60, "workers_each": workers}
    report.save()
    processes = {
        variant: start_training(args, variant, runs, budget_s, workers, report["training"])
        for variant in args.variants
    }
    deadline = started + args.seconds - SHUTDOWN_MARGIN_S / 3  # past the hard stop: kill only a hung one
    for variant, process in processes.items():
        try:
            process.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
        report["training"][variant] = {"returncode": process.returncode}
        weights = runs / variant / "last.safetensors"
        if weights.is_file():
            report["training"][variant]["parts"] = half_precision_parts(weights, args.out, variant)
    report.save()
    archive_logs(args.out / "logs.tar.gz", runs, args.variants)
    print(json.dumps(report.get("training"), indent=2))
    print(f"total {time.monotonic() - started:.0f} s")


def start_training(
    args: argparse.Namespace, variant: str, runs: Path, budget_s: float, workers: int, record: dict
) -> subprocess.Popen:
    """One variant's training in its own process, its output in /tmp/gpu-train-<variant>.txt."""
    tuning: dict = {"warmup_iters": args.warmup_iters} if args.warmup_iters else {}
    if args.lr:
        tuning["lr"] = args.lr
    if args.batch_size:
        tuning["batch_size"] = args.batch_size
    if args.recipe == "distill":
        if args.distill_data is None:
            raise SystemExit("--recipe distill needs --distill-data (made by pack-distill)")
        tuning.update(recipe="distill", distill_data=str(args.distill_data))
    if args.init_from:
        start = Path("/tmp") / f"init-{variant}.safetensors"
        join(args.init_from, variant, start)
        tuning["pretrained_backbone"] = str(start)
    record[f"{variant}_settings"] = tuning
    log = open(runs.with_name(f"gpu-train-{variant}.txt"), "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        train_command(variant, args.data, runs / variant, budget_s / 60, workers, args.device, tuning),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def archive_logs(archive_path: Path, runs: Path, variants: list[str]) -> None:
    with tarfile.open(archive_path, "w:gz") as archive:
        for variant in variants:
            for path in (runs.with_name(f"gpu-train-{variant}.txt"), runs / variant / "log.jsonl"):
                if path.is_file():
                    archive.add(path, arcname=f"{variant}-{path.name}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "train":
        train(*sys.argv[2:9])
    elif len(sys.argv) > 1 and sys.argv[1] == "pack":
        pack(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "pack-distill":
        pack_distill(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "join":
        join(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
    else:
        main()
