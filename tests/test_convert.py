"""Converting official .pdparams: safe unpickling, name mapping, the CLI."""

import pickle
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

from engine.commands.cli import main
from engine.model.checkpoint import CheckpointError, load_checkpoint
from engine.model.convert_paddle import paddle_name_to_ours, read_pdparams
from tests.synthetic import calibrated_model

# Ours -> official, only to write official-format files for the tests.
OURS_TO_PADDLE = (
    (r"^stem\.", "conv1."),
    (r"^layer3_high\.", "layer3_."),
    (r"^block(\d)\.low_shortcut\.", r"layer\1.attn_shortcut_l."),
    (r"^block(\d)\.low_attention\.", r"layer\1.attn_l."),
    (r"^block(\d)\.low_ffn\.", r"layer\1.mlp_l."),
    (r"^block(\d)\.cross_attention\.", r"layer\1.attn_h."),
    (r"^block(\d)\.high_ffn\.", r"layer\1.mlp_h."),
    (r"^block(\d)\.injection\.", r"layer\1.down."),
    (r"^block(\d)\.", r"layer\1."),
    (r"^dappm\.", "spp."),
    (r"^aux_head\.", "seghead_extra."),
    (r"^head\.", "seghead."),
    (r"\.running_mean$", "._mean"),
    (r"\.running_var$", "._variance"),
)


def official_arrays(model) -> dict[str, np.ndarray]:
    arrays = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        official = name
        for pattern, replacement in OURS_TO_PADDLE:
            official = re.sub(pattern, replacement, official)
        assert paddle_name_to_ours(official) == name
        arrays[official] = tensor.numpy().copy()
    return arrays


@pytest.fixture(scope="module")
def slim_cityscapes():
    return calibrated_model("slim", num_classes=19)


def write_pickle(path, value):
    path.write_bytes(pickle.dumps(value, protocol=4))
    return path


def test_cli_converts_official_weights(tmp_path, slim_cityscapes, capsys):
    source = write_pickle(tmp_path / "rtformer_slim.pdparams", official_arrays(slim_cityscapes))
    output = tmp_path / "slim.safetensors"
    code = main(
        [
            "convert-paddle",
            str(source),
            "--variant",
            "slim",
            "--num-classes",
            "19",
            "--dataset",
            "cityscapes",
            "-o",
            str(output),
        ]
    )
    assert code == 0, capsys.readouterr().err
    model, info = load_checkpoint(output)
    assert (
        info.dataset == "cityscapes" and info.class_names[0] == "road" and info.palette[0] == [128, 64, 128]
    )
    assert info.input_size == (1024, 2048)
    images = torch.randn(1, 3, 128, 256)
    with torch.inference_mode():
        torch.testing.assert_close(model(images), slim_cityscapes(images), rtol=0, atol=0)
    assert main(["info", str(output)]) == 0
    assert '"variant": "slim"' in capsys.readouterr().out


def test_older_formats_with_name_pairs_and_name_table_are_read(tmp_path, slim_cityscapes):
    arrays = official_arrays(slim_cityscapes)
    legacy = OrderedDict((name, (f"param_{i}", array)) for i, (name, array) in enumerate(arrays.items()))
    legacy["StructuredToParameterName@@"] = {name: f"param_{i}" for i, name in enumerate(arrays)}
    read = read_pdparams(write_pickle(tmp_path / "legacy.pdparams", legacy))
    assert read.keys() == arrays.keys()
    np.testing.assert_array_equal(read["conv1.0.weight"], arrays["conv1.0.weight"])


class RunsCode:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = write_pickle(tmp_path / "evil.pdparams", {"conv1.0.weight": RunsCode()})
    with pytest.raises(CheckpointError, match=r"refusing to load.*builtins\.exec"):
        read_pdparams(source)
    assert not (tmp_path / "PWNED").exists()
    code = main(
        [
            "convert-paddle",
            str(source),
            "--variant",
            "slim",
            "--num-classes",
            "19",
            "--dataset",
            "cityscapes",
            "-o",
            str(tmp_path / "out.safetensors"),
        ]
    )
    assert code == 1
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"garbage bytes, not a pickle", "not a readable Paddle weights file"),
        (pickle.dumps([1, 2, 3]), "holds a list, not a dict"),
        (pickle.dumps({"conv1.0.weight": "text"}), "not a named numpy array"),
    ],
)
def test_unreadable_weights_are_reported(tmp_path, content, message):
    path = tmp_path / "bad.pdparams"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        read_pdparams(path)


def test_missing_weights_file_is_reported(tmp_path, capsys):
    code = main(
        [
            "convert-paddle",
            str(tmp_path / "none.pdparams"),
            "--variant",
            "slim",
            "--num-classes",
            "19",
            "--dataset",
            "cityscapes",
            "-o",
            str(tmp_path / "o.safetensors"),
        ]
    )
    assert code == 1
    assert "weights file not found" in capsys.readouterr().err


def test_wrong_variant_or_class_count_is_reported(tmp_path, slim_cityscapes, capsys):
    source = write_pickle(tmp_path / "slim.pdparams", official_arrays(slim_cityscapes))
    common = [str(source), "-o", str(tmp_path / "o.safetensors"), "--dataset", "cityscapes"]
    assert main(["convert-paddle", *common, "--variant", "base", "--num-classes", "19"]) == 1
    assert "does not fit RTFormer-base" in capsys.readouterr().err
    assert main(["convert-paddle", *common, "--variant", "slim", "--num-classes", "150"]) == 1
    assert "predicts 19 classes but --num-classes is 150" in capsys.readouterr().err
