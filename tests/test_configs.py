"""The recipes in configs/: one base file that each recipe includes and amends, every file
a valid training config, fine-tunes cropping the frame the model runs at, and a README
that names every file."""

from pathlib import Path

import pytest

from engine.training.config import TrainConfig, read_config_file
from engine.training.train import crop_warning

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(CONFIGS.glob("*.toml"))


def test_an_included_file_is_read_first_and_the_including_file_wins(tmp_path):
    (tmp_path / "base.toml").write_text('variant = "base"\nlr = 1e-3\ncrop_size = [64, 64]\n')
    (tmp_path / "middle.toml").write_text('include = "base.toml"\nlr = 5e-4\n')
    (tmp_path / "top.json").write_text('{"include": "middle.toml", "seed": 3}')
    values = read_config_file(tmp_path / "top.json")
    assert values == {"variant": "base", "lr": 5e-4, "crop_size": [64, 64], "seed": 3}
    config = TrainConfig().replace(**values)
    assert config.crop_size == (64, 64) and config.lr == 5e-4


def test_include_cycles_and_missing_files_are_refused_by_name(tmp_path):
    (tmp_path / "a.toml").write_text('include = "b.toml"\n')
    (tmp_path / "b.toml").write_text('include = "a.toml"\n')
    with pytest.raises(ValueError, match=r"cycle: a\.toml -> b\.toml -> a\.toml"):
        read_config_file(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('include = "nowhere.toml"\n')
    with pytest.raises(ValueError, match=r"'nowhere\.toml' not found"):
        read_config_file(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text('include = ["a.toml", "b.toml"]\n')
    with pytest.raises(ValueError, match="one file name"):
        read_config_file(tmp_path / "d.toml")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_is_a_valid_training_config(path):
    config = TrainConfig().replace(**read_config_file(path))
    assert config.variant in ("slim", "base") and config.dataset == "camvid"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_fine_tunes_crop_the_frame_the_model_runs_at(path):
    config = TrainConfig().replace(**read_config_file(path))
    if config.frozen_bn:
        assert config.ema_decay > 0 and crop_warning(config.crop_size, (360, 480)) is None


def test_recipes_list_only_what_differs_from_what_they_include():
    for path in RECIPES:
        own = read_config_file_without_include(path)
        if "include" not in own:
            continue
        inherited = read_config_file(CONFIGS / own["include"])
        repeated = [key for key, value in own.items() if key != "include" and inherited.get(key) == value]
        assert not repeated, f"{path.name} repeats {repeated}"


def test_the_readme_names_every_file_in_configs():
    readme = (CONFIGS / "README.md").read_text()
    for path in CONFIGS.iterdir():
        if path.name != "README.md":
            assert f"`{path.name}`" in readme, path.name


def read_config_file_without_include(path: Path) -> dict:
    import tomllib

    return tomllib.loads(path.read_text())
