"""The shipped weights' lineage: every step's recipe is in configs/, each step starts from
the file the step before made, the shipped metadata names recipes and digests (no local
paths), and any start file comes back from git history by its SHA-256."""

import hashlib
import itertools
import json
import subprocess
from pathlib import Path

import pytest

from engine.model.checkpoint import read_checkpoint_info
from engine.resources import shipped_weights
from tests.synthetic import import_tool

ROOT = Path(__file__).resolve().parents[1]
LINEAGE = json.loads((ROOT / "weights" / "lineage.json").read_text())


@pytest.mark.parametrize("variant", ["slim", "base"])
def test_each_step_starts_from_the_file_the_step_before_made(variant):
    steps = LINEAGE[variant]
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    assert steps[0]["start"] is None
    for before, step in itertools.pairwise(steps):
        assert step["start"] == before["result"] and len(step["start"]) == 64
        assert step["recipe"] is None or (ROOT / step["recipe"]).is_file()


@pytest.mark.parametrize("variant", ["slim", "base"])
def test_the_shipped_metadata_names_recipes_and_digests_not_local_paths(variant):
    extra = read_checkpoint_info(shipped_weights()[variant]).extra
    assert extra["lineage"][-1]["start"] == LINEAGE[variant][-1]["start"]
    assert extra["train_config"]["pretrained_backbone"] == "sha256:" + LINEAGE[variant][-1]["start"]
    text = json.dumps(extra)
    assert "runs/" not in text.replace('"runs/train"', "").replace('"runs/teacher-cache"', "")
    assert "/tmp/" not in text and "../shared" not in text


def test_a_start_file_comes_back_from_git_history_by_its_digest(tmp_path):
    tool = import_tool("weights_lineage")
    repo = tmp_path / "repo"
    (repo / "weights").mkdir(parents=True)

    def git(*args):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "test@example.com")
    git("config", "user.name", "test")
    first, second = b"first weights" * 100, b"second weights" * 100
    for content in (first, second):
        (repo / "weights" / "model.safetensors").write_bytes(content)
        git("add", ".")
        git("commit", "-qm", "weights")
    digest = hashlib.sha256(first).hexdigest()
    where = tool.restore(digest[:16], tmp_path / "out" / "start.safetensors", repo=repo)
    assert (tmp_path / "out" / "start.safetensors").read_bytes() == first
    assert where.endswith(":weights/model.safetensors")
    with pytest.raises(FileExistsError):
        tool.restore(digest, tmp_path / "out" / "start.safetensors", repo=repo)
    with pytest.raises(ValueError, match="at least 12"):
        tool.restore(digest[:8], tmp_path / "short.safetensors", repo=repo)
    with pytest.raises(LookupError, match="no weights file"):
        tool.restore("0" * 64, tmp_path / "none.safetensors", repo=repo)
