"""The `rtformer` command line."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

from engine.commands.archive_ray import ClusterError
from engine.media import VideoError, is_video
from engine.model.checkpoint import CheckpointError, read_checkpoint_info
from engine.model.classes import CLASS_SETS
from engine.model.rtformer import VARIANTS, build_model, count_parameters
from engine.resources import shipped_weights
from engine.runtime.segmenter import BACKENDS, DEVICES, PRECISIONS, VIEWS, BackendError, Segmenter
from engine.runtime.watchdog import StallError
from engine.training.data import DatasetError
from engine.training.edgetpu_deeplab import MissingRuntime


def cmd_convert_paddle(args: argparse.Namespace) -> None:
    from engine.model.convert_paddle import convert_paddle

    output = convert_paddle(args.weights, args.output, args.variant, args.num_classes, args.dataset)
    info = read_checkpoint_info(output)
    print(f"wrote {output}: RTFormer-{info.variant}, {info.config.num_classes} {info.dataset} classes")


def cmd_info(args: argparse.Namespace) -> None:
    info = read_checkpoint_info(args.checkpoint)
    summary = {
        "variant": info.variant,
        "dataset": info.dataset,
        "num_classes": info.config.num_classes,
        "class_names": info.class_names,
        "input_size": info.input_size,
        "mean": info.mean,
        "std": info.std,
        "metrics": info.metrics,
        "config": info.config.to_dict(),
        "extra": info.extra,
    }
    print(json.dumps(summary, indent=2))


def cmd_models(args: argparse.Namespace) -> None:
    print(f"{'variant':8} {'channels':>8} {'params (19 classes, aux head)':>30}")
    for name, config in VARIANTS.items():
        parameters = count_parameters(build_model(name, num_classes=19))
        print(f"{name:8} {config.base_channels:>8} {parameters:>30,}")
    print("\nshipped weights:")
    for name, path in shipped_weights().items():
        state = "" if path.is_file() else "  (missing: reinstall the package)"
        print(f"{name:8} {path}{state}")


def cmd_doctor(args: argparse.Namespace) -> None:
    from engine.runtime.doctor import format_system_report, report_json, system_report

    sections = system_report()
    print(report_json(sections) if args.json else format_system_report(sections))


def cmd_train(args: argparse.Namespace) -> None:
    from engine.training.train import Trainer

    Trainer(config_from_args(args)).run()


def cmd_pretrain(args: argparse.Namespace) -> None:
    from engine.training.pretrain import pretrain

    metrics = pretrain(config_from_args(args))
    print(json.dumps(metrics))


def cmd_eval(args: argparse.Namespace) -> None:
    from engine.model.checkpoint import load_checkpoint
    from engine.training.data import open_dataset
    from engine.training.evaluate import evaluate
    from engine.training.loop import pick_device

    dataset = open_dataset(args.dataset, args.data_root, args.split)
    info = read_checkpoint_info(args.checkpoint)
    if dataset.classes.num_classes != info.config.num_classes:
        raise ValueError(
            f"{args.checkpoint} predicts {info.config.num_classes} classes, "
            f"{args.dataset} has {dataset.classes.num_classes}"
        )
    if args.backend:  # the deployed path: a Segmenter on that backend and precision
        from engine.training.evaluate import evaluate_segmenter

        segmenter = segmenter_from_args(args)
        print(f"evaluating on {segmenter.description} {size_text(segmenter)}", file=sys.stderr)
        report = evaluate_segmenter(segmenter, dataset, exact=args.exact)
    else:  # the research path: PyTorch at full resolution, optional flip and scales
        if args.input_scale != 1.0:
            raise ValueError("--input-scale measures the app's path: add --backend (or use --scales)")
        device = pick_device(args.device, 0)
        model, _ = load_checkpoint(args.checkpoint, device)
        report = evaluate(model, dataset, device, scales=args.scales, flip=args.flip)
    print_report(report, args.output)


def print_report(report, output: str | None) -> None:
    """An evaluation's table, and its JSON written to `output` when given."""
    print(report.table())
    if output:
        report.to_json(output)
        print(f"wrote {output}")


def cmd_eval_teacher(args: argparse.Namespace) -> None:
    import torch

    from engine.training.committee import Committee, CommitteeSpec, load_camvid_teacher
    from engine.training.data import open_dataset
    from engine.training.evaluate import evaluate

    if bool(args.weights) == bool(args.committee):
        raise ValueError("give a teacher's weights or --committee FILE (one of them)")
    if args.committee:
        teacher = Committee(CommitteeSpec.from_file(args.committee), footage=args.footage)
    else:
        teacher = load_camvid_teacher(args.weights, args.kind)
    dataset = open_dataset("camvid", args.data_root, args.split)
    with torch.inference_mode():
        report = evaluate(teacher, dataset)
    print_report(report, args.output)


def cmd_probe(args: argparse.Namespace) -> None:
    from engine.training.probe import TeacherReference, list_frames, probe, side_by_side_writer

    segmenter = segmenter_from_args(args)
    reference = TeacherReference(args.teacher)
    names = segmenter.class_names
    if list(names) != list(CLASS_SETS["camvid"].names):
        raise ValueError(
            f"{args.checkpoint} predicts {len(names)} classes; the teacher's reference is CamVid's 11"
        )
    overlays = side_by_side_writer(args.overlays, segmenter.info.palette) if args.overlays else None
    report = probe(
        segmenter.predict,
        reference,
        list_frames(args.frames),
        names,
        model_name=f"{Path(args.checkpoint).name} on {segmenter.description}",
        reference_name=reference.name,
        overlays=overlays,
    )
    print_report(report, args.output)


def cmd_segment(args: argparse.Namespace) -> int:
    if is_archive_job(args):
        return segment_archive(args)
    from engine.commands.archive import areas_name
    from engine.commands.segment_files import segment_path

    if args.areas_beside and not args.areas and is_video(args.inputs[0]):
        args.areas = str(Path(args.output).with_name(areas_name(Path(args.output).name)))

    segmenter = segmenter_from_args(
        args, streams=args.streams, cuda_graphs=False if args.no_cuda_graphs else None
    )
    print(
        f"segmenting with RTFormer-{segmenter.info.variant} on {segmenter.description} {size_text(segmenter)}",
        file=sys.stderr,
    )
    report = segment_path(
        segmenter,
        args.inputs[0],
        args.output,
        args.view,
        args.alpha,
        args.labels,
        batch_size=args.batch_size,
        stall_seconds=args.stall_limit,
        stabilize=not args.no_stabilize,
        areas=args.areas,
    )
    if args.areas:
        print(f"wrote each frame's class shares to {args.areas}", file=sys.stderr)
    print(f"{report.frames} frame(s) in {report.seconds:.1f} s ({report.fps:.1f} FPS) -> {args.output}")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if report.stage_ms:
        stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in report.stage_ms.items())
        print(f"median ms per frame: {stages}")
    return 0


def is_archive_job(args: argparse.Namespace) -> bool:
    """One video or image file with -o FILE is segmented as it always was; anything more
    (several inputs, a folder, a pattern, a list, the Ray engine) is an archive job."""
    if args.list or args.engine == "ray" or len(args.inputs) != 1:
        return True
    path = Path(args.inputs[0])
    return path.is_dir() or (not path.exists() and glob.has_magic(args.inputs[0]))


def segment_archive(args: argparse.Namespace) -> int:
    """An archive job (engine.commands.archive): 1 when any input failed, now or before."""
    from engine.commands.archive import JobSettings, collect_inputs, read_list_file, run_archive

    if args.areas:
        raise VideoError(
            "--areas takes one video (and -o FILE): it writes one table; "
            "--areas-beside writes one beside each video's output"
        )
    entries = [*args.inputs, *(read_list_file(args.list) if args.list else [])]
    if not entries:
        raise VideoError("no input: name files, folders or patterns, or --list FILE")
    folder = Path(args.output)
    plan = collect_inputs(entries, folder, args.labels)
    if not plan.items:  # nothing to do: say why, and leave no output folder behind
        if plan.missing:
            raise VideoError(f"input not found: {', '.join(plan.missing)}")
        raise VideoError(f"no video or image in {', '.join(entries)}")
    for entry in plan.missing:
        print(f"rtformer segment: error: {entry}: no such file, folder or match", file=sys.stderr)
    if plan.ignored:
        names = ", ".join(str(path) for path in plan.ignored[:5]) + (", ..." if len(plan.ignored) > 5 else "")
        print(
            f"left out {len(plan.ignored)} file(s) neither a video nor an image by name: {names}",
            file=sys.stderr,
        )
    settings = JobSettings(
        checkpoint=str(Path(args.checkpoint).absolute()),
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        calibration=str(Path(args.calibration).absolute()) if args.calibration else None,
        input_scale=args.input_scale,
        streams=args.streams,
        cuda_graphs=False if args.no_cuda_graphs else None,
        batch_size=args.batch_size,
        stall_seconds=args.stall_limit,
        view=args.view,
        alpha=args.alpha,
        labels=args.labels,
        stabilize=not args.no_stabilize,
        areas=args.areas_beside,
    )
    engine = None
    if args.engine == "ray":
        from engine.commands.archive_ray import RayOptions, ray_engine

        engine = ray_engine(
            RayOptions(args.workers, args.cpus_per_worker, args.gpus_per_worker, args.ray_address)
        )
    print(f"{len(plan.items)} input(s) -> {folder} on the {args.engine} engine", file=sys.stderr)
    report = run_archive(plan, folder, settings, args.retry_failed, progress=True, engine=engine)
    print_archive_summary(report, folder)
    return 1 if report.failed or plan.missing else 0


def print_archive_summary(report, folder: Path) -> None:
    fps = report.frames / report.seconds if report.seconds else 0.0
    print(
        f"{len(report.done)} done, {len(report.failed)} failed, {report.skipped_done} done before "
        f"(skipped); {report.frames} frame(s) in {report.seconds:.1f} s ({fps:.1f} FPS) -> {folder}"
    )
    for row in report.failed:
        earlier = " (earlier; --retry-failed tries again)" if row in report.skipped_failed else ""
        print(f"failed: {row['input']}: {row['error']}{earlier}", file=sys.stderr)
    for row in report.done:
        if row.get("warning"):
            print(f"warning: {row['input']}: {row['warning']}", file=sys.stderr)
    print(f"manifest: {folder / 'manifest.jsonl'}", file=sys.stderr)


def cmd_flicker(args: argparse.Namespace) -> None:
    from engine.training.flicker import measure_label_folder, measure_video

    if args.labels:
        names = CLASS_SETS[args.classes].names
        report = measure_label_folder(args.video, args.labels, names)
        print(report.table(Path(args.labels).name))
        if args.output:
            Path(args.output).write_text(
                json.dumps({"video": args.video, "labels": args.labels, **vars(report)}, indent=2) + "\n"
            )
        return
    from engine.training.probe import TeacherReference

    segmenter = segmenter_from_args(args)
    reference = TeacherReference(args.teacher) if args.teacher else None
    result = measure_video(
        segmenter, args.video, reference, args.teacher_every, not args.no_stabilize, args.frames
    )
    print(result.table())
    if args.output:
        result.to_json(args.output)
        print(f"wrote {args.output}")


def cmd_bench(args: argparse.Namespace) -> None:
    from engine.commands.bench import DEFAULT_SIZES, LARGE_SIZE, run_bench, write_json
    from engine.runtime.backends import cuda_available

    sizes = DEFAULT_SIZES + ((LARGE_SIZE,) if args.large else ())
    weights = {variant: path for variant, path in shipped_weights().items() if path.is_file()}
    if args.gpu_only and not cuda_available():
        raise SystemExit("--gpu-only: no CUDA device here")
    report = run_bench(
        args.variants,
        sizes,
        weights,
        args.calibration,
        args.video,
        args.rounds,
        args.threads,
        not args.gpu_only,
        (args.backend, args.precision),
        args.streams,
        on_table=print,
    )
    if report["end_to_end"]:
        e2e = report["end_to_end"]
        print(
            f"segment end to end: {e2e['end_to_end_fps']:.1f} FPS vs model only {e2e['model_only_fps']:.1f} FPS "
            f"({e2e['end_to_end_share']:.0%}); preprocess + postprocess = "
            f"{e2e['pre_post_share_of_inference']:.1%} of inference"
        )
    if args.output:
        write_json(report, args.output)
        print(f"wrote {args.output}")


def cmd_quantize(args: argparse.Namespace) -> None:
    import shutil

    from engine.runtime.artifacts import int8_model

    output = int8_model(args.checkpoint, args.calibration, args.count)
    if args.output:  # a copy where the user wants it; the app and segment use the cached one
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        output = Path(shutil.copyfile(output, args.output))
    print(f"wrote {output}")


def segmenter_from_args(args: argparse.Namespace, **options) -> Segmenter:
    """The Segmenter the common options ask for: checkpoint, backend, device, precision,
    INT8 calibration and input scale."""
    return Segmenter(
        args.checkpoint,
        args.backend,
        args.device,
        args.precision,
        calibration=args.calibration,
        input_scale=args.input_scale,
        **options,
    )


def size_text(segmenter: Segmenter) -> str:
    """The box the segmenter fits frames into, as text: "at most 288x384 (80% of 360x480)"."""
    if segmenter.input_size is None:
        return "at each frame's own size"
    height, width = segmenter.input_size
    if segmenter.input_scale == 1.0:
        return f"at most {height}x{width}"
    full_height, full_width = segmenter.info.input_size
    return f"at most {height}x{width} ({segmenter.input_scale:.0%} of {full_height}x{full_width})"


def add_input_scale(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input-scale",
        type=float,
        default=1.0,
        metavar="S",
        help="fit frames into the model's input size times S (0.8, 0.67: fewer pixels for slow CPUs; "
        "what each costs in accuracy is in BENCHMARKS.md)",
    )


def add_config_options(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One option per field of the config dataclass, in the groups its fields name (with their
    help sentence and default), plus --config FILE; gathered by `config_from_args`."""
    import dataclasses

    defaults = config_class()
    parser.add_argument(
        "--config", help=f"a .toml or .json file of {config_class.__name__} fields (options given win)"
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in dataclasses.fields(config_class):
        name = spec.metadata.get("group", "options")
        if name not in groups:
            groups[name] = parser.add_argument_group(name)
        add_config_option(groups[name], spec, getattr(defaults, spec.name))
    parser.set_defaults(config_class=config_class)


def add_config_option(group, spec, default) -> None:
    """The option of one config field, typed by its default."""
    option = "--" + spec.name.replace("_", "-")
    sentence = spec.metadata.get("help", spec.name.replace("_", " "))
    help_text = f"{sentence} (default: {default!r})".replace("%", "%%")
    if isinstance(default, bool):
        group.add_argument(option, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif isinstance(default, tuple) and not default:  # a list of any length (folders)
        group.add_argument(option, nargs="*", default=None, help=help_text)
    elif isinstance(default, tuple):
        kind = type(default[0])
        group.add_argument(option, type=kind, nargs=len(default), default=None, help=help_text)
    elif isinstance(default, dict):
        group.add_argument(option, type=json.loads, default=None, help=help_text)
    else:
        group.add_argument(option, type=type(default), default=None, help=help_text)


def config_from_args(args: argparse.Namespace):
    """The config: defaults, then the --config file, then each option given."""
    import dataclasses

    from engine.training.config import read_config_file

    config = args.config_class()
    if args.config:
        config = config.replace(**read_config_file(args.config))
    names = [spec.name for spec in dataclasses.fields(args.config_class)]
    return config.replace(**{name: getattr(args, name) for name in names if getattr(args, name) is not None})


def add_backend_options(
    parser: argparse.ArgumentParser,
    backend: str | None = "auto",
    precision: str = "auto",
    backend_help: str | None = None,
    precision_help: str | None = None,
) -> None:
    """--backend, --device, --precision and --calibration: what runs the model, shared by
    eval, probe, segment and flicker."""
    parser.add_argument("--backend", default=backend, choices=BACKENDS, help=backend_help)
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", default=precision, choices=PRECISIONS, help=precision_help)
    parser.add_argument("--calibration", help="frames for INT8 calibration (folder or video)")


def add_convert_paddle(commands) -> None:
    convert = commands.add_parser(
        "convert-paddle", help="convert official PaddleSeg RTFormer weights (.pdparams)"
    )
    convert.add_argument("weights", help="the official .pdparams file")
    convert.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    convert.add_argument("--num-classes", type=int, required=True)
    convert.add_argument("--dataset", choices=sorted(CLASS_SETS), required=True)
    convert.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    convert.set_defaults(run=cmd_convert_paddle)


def add_doctor(commands) -> None:
    doctor = commands.add_parser(
        "doctor", help="what this machine has: versions, backends, cameras, encoder, folders"
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(run=cmd_doctor)


def add_info(commands) -> None:
    info = commands.add_parser("info", help="print a checkpoint's metadata")
    info.add_argument("checkpoint")
    info.set_defaults(run=cmd_info)


def add_train(commands) -> None:
    from engine.training.config import TrainConfig

    train = commands.add_parser(
        "train",
        help="train RTFormer (official recipe by default; configs/ holds the shipped lineage)",
        description="Train RTFormer. Options come from the defaults, then --config FILE, then each "
        "option given; docs/training.md explains the groups.",
    )
    add_config_options(train, TrainConfig)
    train.set_defaults(run=cmd_train)


def add_pretrain(commands) -> None:
    from engine.training.pretrain import PretrainConfig

    pretrain = commands.add_parser(
        "pretrain", help="pre-train the backbone on ImageNet-style classification (a folder per class)"
    )
    add_config_options(pretrain, PretrainConfig)
    pretrain.set_defaults(run=cmd_pretrain)


def add_eval(commands) -> None:
    evaluation = commands.add_parser("eval", help="evaluate a checkpoint (mIoU, per-class IoU)")
    evaluation.add_argument("checkpoint")
    evaluation.add_argument("--dataset", default="camvid")
    evaluation.add_argument("--data-root", required=True)
    evaluation.add_argument("--split", default="test")
    evaluation.add_argument("--scales", type=float, nargs="+", default=[1.0])
    evaluation.add_argument("--flip", action="store_true")
    add_backend_options(
        evaluation, None, "fp32", backend_help="evaluate the deployed Segmenter on this backend"
    )
    evaluation.add_argument(
        "--exact",
        action="store_true",
        help="with --backend: resize the logits before the argmax (default: the app's path, argmax first)",
    )
    add_input_scale(evaluation)
    evaluation.add_argument("-o", "--output", help="write the report as JSON")
    evaluation.set_defaults(run=cmd_eval)


def add_eval_teacher(commands) -> None:
    from engine.training.committee import FOOTAGE_KINDS, TEACHER_KINDS

    teacher = commands.add_parser(
        "eval-teacher",
        help="evaluate a teacher (ESPNetv2, CGNet, EdgeTPU-DeepLab) or the committee on CamVid",
    )
    teacher.add_argument(
        "weights", nargs="?", help="a teacher's file: ESPNetv2 or CGNet .pth, EdgeTPU-DeepLab .tflite"
    )
    teacher.add_argument("--kind", choices=TEACHER_KINDS, help="the teacher's kind (default: from the file)")
    teacher.add_argument(
        "--committee", help="a committee JSON (configs/committee.json) instead of one teacher"
    )
    teacher.add_argument(
        "--footage", default="camvid", choices=FOOTAGE_KINDS, help="the committee's weights for"
    )
    teacher.add_argument("--data-root", required=True)
    teacher.add_argument("--split", default="test")
    teacher.add_argument("-o", "--output", help="write the report as JSON")
    teacher.set_defaults(run=cmd_eval_teacher)


def add_probe(commands) -> None:
    probing = commands.add_parser(
        "probe", help="agreement with the Cityscapes teacher on unlabelled frames (generalization)"
    )
    probing.add_argument("checkpoint")
    probing.add_argument("--frames", required=True, help="a folder of images (e.g. data/dashcam-probe)")
    probing.add_argument("--teacher", required=True, help="espnetv2_s_2.0_city_1024x512.pth")
    add_backend_options(probing, "auto", "fp32")
    probing.add_argument("--overlays", help="write ours-beside-the-reference images into this folder")
    add_input_scale(probing)
    probing.add_argument("-o", "--output", help="write the report as JSON")
    probing.set_defaults(run=cmd_probe)


def add_segment(commands) -> None:
    segment = commands.add_parser(
        "segment", help="segment videos and images: a file, folders, patterns or a list; resumable"
    )
    segment.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="videos, images, folders or glob patterns"
    )
    segment.add_argument(
        "-o",
        "--output",
        required=True,
        help="for one video or image: the output file (.mp4, .png); for more: a folder that mirrors "
        "the inputs' paths and holds manifest.jsonl",
    )
    segment.add_argument("--checkpoint", default=str(shipped_weights()["slim"]))
    add_backend_options(
        segment,
        precision_help="auto: on the CPU the fastest within the accuracy limits, measured once (default)",
    )
    segment.add_argument(
        "--streams",
        type=int,
        default=2,
        help="frames in flight on OpenVINO (throughput: 19.8 vs 16.1 FPS with 1 on 360x480 video, 2 cores)",
    )
    segment.add_argument(
        "--batch-size",
        type=int,
        help="videos: frames per model call (default: measured on PyTorch CUDA, 1 on the CPU backends)",
    )
    segment.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="PyTorch CUDA: launch kernels one by one (also RTFORMER_CUDA_GRAPHS=0)",
    )
    segment.add_argument(
        "--stall-limit",
        type=float,
        metavar="SECONDS",
        help="videos: stop with an error naming the stuck stage when no frame moves this long "
        "(default: $RTFORMER_STALL_SECONDS or 300)",
    )
    add_output_options(segment)
    add_input_scale(segment)
    add_archive_options(segment)
    segment.set_defaults(run=cmd_segment)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """What `segment` writes: the view, label maps, steady masks, the class shares."""
    parser.add_argument(
        "--view",
        default="overlay",
        choices=VIEWS,
        help="confidence: how sure the model is per pixel, a heat map with its scale (default: overlay)",
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="mask (or heat map) opacity")
    parser.add_argument(
        "--labels",
        action="store_true",
        help="write label maps (class ids) instead of colours; a video becomes a folder of "
        "frame_000000.png, ... one per frame",
    )
    parser.add_argument(
        "--no-stabilize",
        action="store_true",
        help="videos: each frame's own labels, without the steady masks (which cut flicker 44-68%%)",
    )
    parser.add_argument(
        "--areas",
        metavar="FILE.csv",
        help="one video: each frame's class shares as CSV (frame, time, a column per class)",
    )
    parser.add_argument(
        "--areas-beside",
        action="store_true",
        help="each video's class shares as CSV beside its output (drive.mp4 -> drive.areas.csv); "
        "archive jobs too",
    )


def add_archive_options(parser: argparse.ArgumentParser) -> None:
    job = parser.add_argument_group("archive jobs (several inputs; docs/cluster.md)")
    job.add_argument("--list", metavar="FILE", help="also the paths in FILE, one a line")
    job.add_argument(
        "--retry-failed",
        action="store_true",
        help="try again the inputs the manifest says failed (by default a rerun skips them)",
    )
    job.add_argument(
        "--engine",
        choices=("process", "ray"),
        default="process",
        help="process: one file after the other in this process (default); ray: files spread over "
        "Ray actors, on this machine or a cluster (the cluster extra)",
    )
    job.add_argument(
        "--workers", type=int, metavar="N", help="ray: actors (default: the CPUs / --cpus-per-worker)"
    )
    job.add_argument(
        "--cpus-per-worker",
        type=float,
        default=2,
        metavar="K",
        help="ray: CPUs each actor takes; its inference threads follow (default 2)",
    )
    job.add_argument(
        "--gpus-per-worker", type=float, default=0, metavar="G", help="ray: GPUs each actor takes (default 0)"
    )
    job.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="ray: join this cluster (default: $RAY_ADDRESS, else Ray starts on this machine)",
    )


def add_flicker(commands) -> None:
    flicker = commands.add_parser(
        "flicker",
        help="how many pixels change class from frame to frame of a video, motion followed: "
        "per-frame and steady masks side by side",
    )
    flicker.add_argument("video")
    flicker.add_argument("--checkpoint", default=str(shipped_weights()["slim"]))
    add_backend_options(flicker)
    flicker.add_argument("--no-stabilize", action="store_true", help="per-frame labels only")
    flicker.add_argument("--frames", type=int, help="only the first N frames")
    flicker.add_argument(
        "--teacher", help="espnetv2_s_2.0_city_1024x512.pth: agreement with it at 1024x512 (no ghosting)"
    )
    flicker.add_argument(
        "--teacher-every", type=int, default=4, help="judge every N-th frame (the teacher: ~1 s a frame)"
    )
    flicker.add_argument(
        "--labels", help="measure a folder of label maps instead (segment VIDEO -o FOLDER --labels)"
    )
    flicker.add_argument("--classes", default="camvid", choices=sorted(CLASS_SETS), help="with --labels")
    add_input_scale(flicker)
    flicker.add_argument("-o", "--output", help="write the results as JSON")
    flicker.set_defaults(run=cmd_flicker)


def add_quantize(commands) -> None:
    quantize = commands.add_parser("quantize", help="INT8 ONNX model (static QDQ, per-channel)")
    quantize.add_argument("checkpoint")
    quantize.add_argument("--calibration", required=True, help="a folder of images or a video")
    quantize.add_argument("--count", type=int, default=16, help="calibration frames")
    quantize.add_argument("-o", "--output", help="a copy here (the model is cached in the user cache)")
    quantize.set_defaults(run=cmd_quantize)


def add_bench(commands) -> None:
    bench = commands.add_parser("bench", help="latency of every backend side by side, and segment end to end")
    bench.add_argument("--variants", nargs="+", default=["slim", "base"], choices=sorted(VARIANTS))
    bench.add_argument("--large", action="store_true", help="also 1024x2048")
    bench.add_argument("--calibration", type=Path, help="frames for the INT8 runner (none: no INT8)")
    bench.add_argument("--video", type=Path, help="a video for the end-to-end segment run")
    bench.add_argument(
        "--gpu-only",
        action="store_true",
        help="only the CUDA runners; ratios to CUDA fp32 instead of CPU torch",
    )
    bench.add_argument(
        "--rounds", type=int, default=30, help="timed rounds for Slim at 360x480 (fewer when larger)"
    )
    bench.add_argument("--threads", type=int, default=os.cpu_count())
    bench.add_argument("--backend", default="onnxruntime", choices=BACKENDS[1:], help="for the segment run")
    bench.add_argument("--precision", default="fp32", choices=PRECISIONS[1:], help="for the segment run")
    bench.add_argument("--streams", type=int, default=1, help="for the segment run (OpenVINO)")
    bench.add_argument("-o", "--output", help="write the results as JSON")
    bench.set_defaults(run=cmd_bench)


def add_models(commands) -> None:
    models = commands.add_parser("models", help="list the model variants")
    models.set_defaults(run=cmd_models)


COMMAND_BUILDERS = (
    add_convert_paddle,
    add_doctor,
    add_info,
    add_train,
    add_pretrain,
    add_eval,
    add_eval_teacher,
    add_probe,
    add_segment,
    add_flicker,
    add_quantize,
    add_bench,
    add_models,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtformer", description="RTFormer Studio engine")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in COMMAND_BUILDERS:
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
    except (
        CheckpointError,
        DatasetError,
        BackendError,
        VideoError,
        StallError,
        ValueError,
        FileNotFoundError,
        MissingRuntime,
        ClusterError,
    ) as error:
        print(f"rtformer {args.command}: error: {error}", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
