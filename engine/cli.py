"""The `rtformer` command line."""

from __future__ import annotations

import argparse
import json
import sys

from engine.checkpoint import CheckpointError, read_checkpoint_info
from engine.classes import CLASS_SETS
from engine.data import DatasetError
from engine.rtformer import VARIANTS, build_model, count_parameters


def cmd_convert_paddle(args: argparse.Namespace) -> None:
    from engine.convert_paddle import convert_paddle

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


def cmd_train(args: argparse.Namespace) -> None:
    from engine.train import TrainConfig, Trainer

    config = TrainConfig()
    if args.config:
        config = config.replace(**TrainConfig.from_file(args.config))
    overrides = {name: getattr(args, name) for name in TRAIN_FIELDS if getattr(args, name, None) is not None}
    config = config.replace(**overrides)
    Trainer(config).run()


def cmd_eval(args: argparse.Namespace) -> None:
    from engine.checkpoint import load_checkpoint
    from engine.data import open_dataset
    from engine.evaluate import evaluate
    from engine.train import _pick_device

    device = _pick_device(args.device, 0)
    model, info = load_checkpoint(args.checkpoint, device)
    dataset = open_dataset(args.dataset, args.data_root, args.split)
    if dataset.classes.num_classes != info.config.num_classes:
        raise ValueError(
            f"{args.checkpoint} predicts {info.config.num_classes} classes, "
            f"{args.dataset} has {dataset.classes.num_classes}"
        )
    report = evaluate(model, dataset, device, scales=args.scales, flip=args.flip)
    print(report.table())
    if args.output:
        report.to_json(args.output)
        print(f"wrote {args.output}")


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field (defaults in the help), plus --config FILE."""
    import dataclasses

    from engine.train import TrainConfig

    defaults = TrainConfig()
    parser.add_argument("--config", help="a .toml or .json file of TrainConfig fields")
    for spec in dataclasses.fields(TrainConfig):
        default = getattr(defaults, spec.name)
        option = "--" + spec.name.replace("_", "-")
        help_text = f"default: {default!r}"
        if isinstance(default, bool):
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif isinstance(default, tuple):
            kind = type(default[0])
            parser.add_argument(option, type=kind, nargs=len(default), default=None, help=help_text)
        elif isinstance(default, dict):
            parser.add_argument(option, type=json.loads, default=None, help=help_text + " (JSON)")
        else:
            parser.add_argument(option, type=type(default), default=None, help=help_text)
        TRAIN_FIELDS.append(spec.name)


TRAIN_FIELDS: list[str] = []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtformer", description="RTFormer Studio engine")
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser(
        "convert-paddle", help="convert official PaddleSeg RTFormer weights (.pdparams)"
    )
    convert.add_argument("weights", help="the official .pdparams file")
    convert.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    convert.add_argument("--num-classes", type=int, required=True)
    convert.add_argument("--dataset", choices=sorted(CLASS_SETS), required=True)
    convert.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    convert.set_defaults(run=cmd_convert_paddle)

    info = commands.add_parser("info", help="print a checkpoint's metadata")
    info.add_argument("checkpoint")
    info.set_defaults(run=cmd_info)

    train = commands.add_parser("train", help="train RTFormer (official recipe by default)")
    add_train_options(train)
    train.set_defaults(run=cmd_train)

    evaluation = commands.add_parser("eval", help="evaluate a checkpoint (mIoU, per-class IoU)")
    evaluation.add_argument("checkpoint")
    evaluation.add_argument("--dataset", default="camvid")
    evaluation.add_argument("--data-root", required=True)
    evaluation.add_argument("--split", default="test")
    evaluation.add_argument("--scales", type=float, nargs="+", default=[1.0])
    evaluation.add_argument("--flip", action="store_true")
    evaluation.add_argument("--device", default="auto")
    evaluation.add_argument("-o", "--output", help="write the report as JSON")
    evaluation.set_defaults(run=cmd_eval)

    models = commands.add_parser("models", help="list the model variants")
    models.set_defaults(run=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (CheckpointError, DatasetError, ValueError) as error:
        print(f"rtformer {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
