"""The documents a newcomer reads: short enough to read, in place, with every relative
link pointing at a file, and the wheel's pictures all used by the model card."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMITS = {"README.md": 200, "weights/README.md": 300, "BENCHMARKS.md": 300}
DOCUMENTS = [
    "README.md",
    "weights/README.md",
    "BENCHMARKS.md",
    "CHANGELOG.md",
    "configs/README.md",
    *(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")),
]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize(("name", "limit"), LIMITS.items())
def test_the_main_documents_stay_short(name, limit):
    assert len((ROOT / name).read_text().splitlines()) <= limit


def test_the_expected_documents_exist():
    for name in ("CHANGELOG.md", "CITATION.cff", "docs/reproduce.md", "docs/cli.md", "docs/training.md"):
        assert (ROOT / name).is_file(), name


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_relative_link_points_at_a_file(name):
    path = ROOT / name
    for target in LINK.findall(path.read_text()):
        if "://" in target:
            continue
        assert (path.parent / target).exists(), f"{name} links to missing {target}"


def test_every_picture_in_the_wheels_weights_folder_is_in_the_model_card():
    card = (ROOT / "weights" / "README.md").read_text()
    pictures = [p for p in (ROOT / "weights").iterdir() if p.suffix in (".jpg", ".png")]
    unused = [p.name for p in pictures if p.name not in card]
    assert not unused
