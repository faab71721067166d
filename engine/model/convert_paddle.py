"""Convert official PaddleSeg RTFormer weights (.pdparams) to our checkpoint.

A .pdparams file is a pickle of {parameter name: numpy array} (some Paddle
versions store each value as a (name, array) pair, and add a
"StructuredToParameterName@@" entry). A pickle can run any code, so it is read
with an unpickler that admits only dicts, tuples, strings and numpy arrays.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from engine.model.checkpoint import CheckpointError, CheckpointInfo, load_weights, save_checkpoint
from engine.model.classes import class_set
from engine.model.rtformer import RTFormer, RTFormerConfig, variant_config

# Official name -> ours, applied in order to each key (regex on the whole name).
NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"^conv1\.", "stem."),
    (r"^layer3_\.", "layer3_high."),
    (r"^layer([45])\.attn_shortcut_l\.", r"block\1.low_shortcut."),
    (r"^layer([45])\.attn_l\.", r"block\1.low_attention."),
    (r"^layer([45])\.mlp_l\.", r"block\1.low_ffn."),
    (r"^layer([45])\.attn_h\.", r"block\1.cross_attention."),
    (r"^layer([45])\.mlp_h\.", r"block\1.high_ffn."),
    (r"^layer([45])\.down\.", r"block\1.injection."),
    (r"^layer([45])\.", r"block\1."),
    (r"^spp\.", "dappm."),
    (r"^seghead_extra\.", "aux_head."),
    (r"^seghead\.", "head."),
    (r"\._mean$", ".running_mean"),
    (r"\._variance$", ".running_var"),
)
PADDLE_NAME_TABLE = "StructuredToParameterName@@"
DATASET_INPUT_SIZES = {"cityscapes": (1024, 2048), "ade20k": (512, 512), "camvid": (360, 480)}

# The only globals a weights pickle may name: numpy's array rebuilders, and
# tuple/OrderedDict for the containers some Paddle versions write.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "tuple"),
    ("collections", "OrderedDict"),
}


class _WeightsUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise CheckpointError(
                f"refusing to load: the file asks for '{module}.{name}', which is not part of a "
                "weights file (only dicts, strings and numpy arrays are accepted)"
            )
        if module == "numpy.core.multiarray":  # numpy 1 name; numpy 2 moved it
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_pdparams(path: str | Path) -> dict[str, np.ndarray]:
    """Read a .pdparams file safely into {official name: array}."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        loaded = _WeightsUnpickler(io.BytesIO(path.read_bytes())).load()
    except CheckpointError:
        raise
    except Exception as error:  # a damaged pickle raises many kinds of error
        raise CheckpointError(f"{path} is not a readable Paddle weights file ({error})") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a dict of weights")
    arrays = {}
    for name, value in loaded.items():
        if name == PADDLE_NAME_TABLE:
            continue
        if isinstance(value, tuple) and len(value) == 2:
            value = value[1]  # (name, array) as older Paddle versions store tensors
        if not isinstance(name, str) or not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: entry {name!r} is not a named numpy array")
        arrays[name] = value
    return arrays


def paddle_name_to_ours(name: str) -> str:
    for pattern, replacement in NAME_RULES:
        name = re.sub(pattern, replacement, name)
    return name


def model_from_paddle(arrays: dict[str, np.ndarray], config: RTFormerConfig, source: str) -> RTFormer:
    """Build an RTFormer of `config` holding the official weights (eval mode)."""
    state = {paddle_name_to_ours(name): torch.from_numpy(np.array(array)) for name, array in arrays.items()}
    model = RTFormer(config)
    load_weights(model, state, source)
    return model.eval()


def convert_paddle(
    source: str | Path,
    output: str | Path,
    variant: str,
    num_classes: int,
    dataset: str,
) -> Path:
    """Convert an official .pdparams to our checkpoint; returns the output path."""
    arrays = read_pdparams(source)
    head = arrays.get("seghead.conv2.weight")
    if head is not None and head.shape[0] != num_classes:
        raise CheckpointError(f"{source} predicts {head.shape[0]} classes but --num-classes is {num_classes}")
    has_aux_head = any(name.startswith("seghead_extra.") for name in arrays)
    config = variant_config(variant, dataset, num_classes=num_classes, use_aux_head=has_aux_head)
    model = model_from_paddle(arrays, config, str(source))
    classes = class_set(dataset)
    if classes.num_classes != num_classes:
        raise CheckpointError(
            f"{dataset} has {classes.num_classes} classes but --num-classes is {num_classes}"
        )
    info = CheckpointInfo.for_classes(
        config,
        classes,
        input_size=DATASET_INPUT_SIZES[classes.dataset],
        extra={"source": Path(source).name, "converted_from": "PaddleSeg RTFormer"},
    )
    return save_checkpoint(output, model, info)
