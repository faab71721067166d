"""The `rtformer` command line."""

from __future__ import annotations

import argparse
import json
import sys

from engine.checkpoint import CheckpointError, read_checkpoint_info
from engine.classes import CLASS_SETS
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

    models = commands.add_parser("models", help="list the model variants")
    models.set_defaults(run=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (CheckpointError, ValueError) as error:
        print(f"rtformer {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
