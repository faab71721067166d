"""What ships speaks to users, not of how it was made: no development diary (numbered work
periods, numbered tickets as history, local run folders) in any tracked file, file name,
the shipped weights' metadata or what `doctor` prints. History belongs in CHANGELOG.md in
release terms, findings in docs/research/."""

import re
import subprocess
from pathlib import Path

import pytest

from engine.model.checkpoint import read_checkpoint_info
from engine.resources import shipped_weights
from engine.runtime.cpu import CPU_CLASSES
from engine.runtime.doctor import measured_on

ROOT = Path(__file__).resolve().parents[1]
# Spelled in parts so that this file does not match itself.
DIARY = re.compile(
    "|".join(
        [
            r"\bsess" + r"ions? \d+",
            r"\bsitt" + r"ings?\b",
            r"\biss" + r"ues? \d+",
            r"\bruns/s" + r"\d+",
            r"-s\d+(?:-s\d+)*\." + r"(?:jpg|png|json|gif)",
        ]
    ),
    re.IGNORECASE,
)
BINARY = {".safetensors", ".png", ".jpg", ".mp4", ".gif", ".ico"}


def tracked_files() -> list[Path]:
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [ROOT / line for line in listing.stdout.splitlines() if (ROOT / line).is_file()]


def diary_words(text: str) -> list[str]:
    return sorted({match.group(0) for match in DIARY.finditer(text)})


def test_the_pattern_catches_diary_words_and_leaves_plain_text_alone():
    assert diary_words("measured in sess" + "ion 14 (iss" + "ue 21), two sitt" + "ings") == [
        "iss" + "ue 21",
        "sess" + "ion 14",
        "sitt" + "ings",
    ]
    assert diary_words("see runs/s" + "19/x.sh and demo-s17-s" + "19.jpg")
    assert not diary_words("an issue tracker; session cookies; runs/slim-camvid; 19 sessions")


def test_no_tracked_file_or_file_name_holds_diary_words():
    found = {}
    for path in tracked_files():
        name = str(path.relative_to(ROOT))
        words = diary_words(name)
        if path.suffix not in BINARY:
            words += diary_words(path.read_text(errors="replace"))
        if words:
            found[name] = words
    assert not found


@pytest.mark.parametrize("variant", ["slim", "base"])
def test_the_shipped_weights_metadata_holds_no_diary_words(variant):
    info = read_checkpoint_info(shipped_weights()[variant])
    assert not diary_words(repr(info.extra) + repr(info.metrics))


def test_what_doctor_says_was_measured_holds_no_diary_words():
    for cpu_class, _flags in CPU_CLASSES:
        assert not diary_words(measured_on(cpu_class))
