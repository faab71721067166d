"""The shipped weights' lineage (weights/lineage.json): restore any start file from git
history by its SHA-256, and stamp the lineage into the shipped files' metadata.

    python tools/weights_lineage.py show slim
    python tools/weights_lineage.py restore 081aad9ab304d664 -o runs/start-slim.safetensors
    python tools/weights_lineage.py stamp     # maintainers: after weights/lineage.json changes

`restore` searches every version of `weights/*.safetensors` in this clone's history (a full
clone, not `--depth 1`) for the file whose SHA-256 starts with the digest given, writes it
and checks the digest again. `stamp` rewrites only the metadata of the shipped files
(the tensors are compared before and after) and moves the accuracy records beside them
to the new file digest.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LINEAGE = ROOT / "weights" / "lineage.json"
MIN_DIGEST = 12  # hex characters a digest must give to pick one file


def git(*args: str, repo: Path = ROOT) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout


def weight_blobs(repo: Path = ROOT) -> dict[str, str]:
    """Every blob that was ever a weights/*.safetensors file: blob id -> 'commit:path'."""
    blobs: dict[str, str] = {}
    log = git("log", "--all", "--format=%H", "--", "weights/*.safetensors", repo=repo).decode().split()
    for commit in log:
        listing = git("ls-tree", "-r", commit, "--", "weights", repo=repo).decode().splitlines()
        for line in listing:
            meta, path = line.split("\t", 1)
            blob = meta.split()[2]
            if path.endswith(".safetensors") and blob not in blobs:
                blobs[blob] = f"{commit[:10]}:{path}"
    return blobs


def restore(digest: str, output: Path, repo: Path = ROOT) -> str:
    """Write the file of git history whose SHA-256 starts with `digest`; returns where it was."""
    digest = digest.lower().removeprefix("sha256:")
    if len(digest) < MIN_DIGEST:
        raise ValueError(f"give at least {MIN_DIGEST} hex characters of the SHA-256, not {digest!r}")
    for blob, where in weight_blobs(repo).items():
        data = git("cat-file", "blob", blob, repo=repo)
        if hashlib.sha256(data).hexdigest().startswith(digest):
            output.parent.mkdir(parents=True, exist_ok=True)
            if output.exists():
                raise FileExistsError(f"{output} exists: give another -o, nothing was overwritten")
            output.write_bytes(data)
            return where
    raise LookupError(
        f"no weights file with SHA-256 {digest}... in this clone's history "
        "(a shallow clone lacks it: git fetch --unshallow)"
    )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lineage_metadata(variant: str, steps: list[dict]) -> dict:
    """The `extra` metadata of a shipped file: its recipe, its lineage, its last run's config."""
    from engine.training.config import TrainConfig, read_config_file

    last = steps[-1]
    config = TrainConfig().replace(**read_config_file(ROOT / last["recipe"]))
    config = config.replace(variant=variant, pretrained_backbone=f"sha256:{last['start']}")
    recipe_steps = [
        {key: step[key] for key in ("step", "what", "recipe", "args", "start", "minutes", "steps", "machine")}
        for step in steps
    ]
    return {
        "recipe": last["recipe"],
        "training_command": training_command(last),
        "lineage": recipe_steps,
        "train_config": json.loads(json.dumps(dataclasses.asdict(config))),
        "lineage_file": "weights/lineage.json; tools/weights_lineage.py restore SHA256 gives any start file",
    }


def training_command(step: dict) -> str:
    """The step's command; a step of several runs (a ';' between their options) says so."""
    command = f"rtformer train --config {step['recipe']}"
    if ";" not in step["args"]:
        return f"{command} {step['args']}"
    return f"{step['what']}: {command} with, run after run, {step['args']}"


def stamp(variant: str, steps: list[dict]) -> Path:
    """Rewrite one shipped file's `extra` metadata; the tensors stay as they are."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from engine.resources import shipped_weights

    path = shipped_weights()[variant]
    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata())
    tensors = load_file(str(path))
    old_digest = file_sha256(path)[:12]
    metadata["extra"] = json.dumps(lineage_metadata(variant, steps))
    save_file(tensors, str(path), metadata=metadata)
    again = load_file(str(path))
    if set(again) != set(tensors) or any(not again[k].equal(tensors[k]) for k in tensors):
        raise RuntimeError(f"{path}: tensors changed while stamping")
    follow_records(path, old_digest)
    return path


def follow_records(weights: Path, old_digest: str) -> None:
    """Accuracy records beside the weights name the file by digest: the tensors are unchanged,
    so the records move to the new digest."""
    new_digest = file_sha256(weights)[:12]
    stem = weights.name.removesuffix(".safetensors")
    for record in weights.parent.glob(f"{stem}.*.json"):
        text = record.read_text()
        if old_digest in text:
            record.write_text(text.replace(old_digest, new_digest))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="print a variant's lineage as the commands that rerun it")
    show.add_argument("variant", choices=("slim", "base"))
    again = commands.add_parser("restore", help="write the file of git history with this SHA-256")
    again.add_argument("digest", help=f"the SHA-256, or its first {MIN_DIGEST}+ hex characters")
    again.add_argument("-o", "--output", type=Path, required=True)
    commands.add_parser("stamp", help="write weights/lineage.json into the shipped files' metadata")
    args = parser.parse_args()
    lineage = json.loads(LINEAGE.read_text())
    if args.command == "restore":
        try:
            where = restore(args.digest, args.output)
        except (ValueError, LookupError, FileExistsError) as error:
            sys.exit(f"weights_lineage restore: error: {error}")
        print(f"wrote {args.output} ({where})")
    elif args.command == "show":
        for step in lineage[args.variant]:
            command = training_command(step) if step["recipe"] else "restored from git history, not rerun"
            print(f"{step['step']}. {step['what']}\n   {command}\n   start: {step['start']}")
    else:
        for variant in ("slim", "base"):
            print(f"stamped {stamp(variant, lineage[variant])}")


if __name__ == "__main__":
    main()
