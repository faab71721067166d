"""`rtformer segment` on an archive: many inputs, the manifest, resuming after kills, and
the Ray engine on a real local Ray (embedded, and a two-node cluster on this machine),
every Ray node listening on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

# Ray reads it when imported: its servers then bind the loopback address, not the network.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from engine.commands.archive import MANIFEST_NAME, WORK_NAME, Manifest
from engine.commands.cli import main
from engine.media import read_frames
from tests.synthetic import synthetic_frame, write_checkpoint, write_video

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = {"cam1/a.mp4": 12, "cam2/a.mp4": 8, "b.mov": 6}  # the same name in two folders
IMAGES = ["cam1/pic.png", "cam2/deep/pic2.jpg"]
BAD = {  # input -> words its failure must say
    "corrupt.mp4": "cannot open corrupt.mp4 as a video",
    "empty.mp4": "empty.mp4 is empty",
    "fake.png": "cannot read fake.png as an image",
}
GOOD_OUTPUTS = ["b", "cam1/a", "cam1/pic.png", "cam2/a", "cam2/deep/pic2.png"]  # with --labels


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive") / "footage"
    for name, frames in VIDEOS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / name, frames=frames, fps=12)
    for index, name in enumerate(IMAGES):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), synthetic_frame(96, 128, seed=index))
    (root / "corrupt.mp4").write_bytes((root / "cam1/a.mp4").read_bytes()[:300])
    (root / "empty.mp4").write_bytes(b"")
    (root / "fake.png").write_text("a text file named as an image")
    (root / "notes.txt").write_text("a text file")
    (root / ".hidden.mp4").write_bytes(b"hidden files are left out")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.safetensors", input_size=(96, 128))


def segment(*arguments, checkpoint: Path) -> int:
    return main(["segment", *map(str, arguments), "--checkpoint", str(checkpoint), "--backend", "torch"])


def rows_of(folder: Path) -> list[dict]:
    return Manifest(folder).rows()


def label_maps(folder: Path) -> dict[str, np.ndarray]:
    """Every label map under `folder` by its relative path."""
    return {
        path.relative_to(folder).as_posix(): cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        for path in sorted(folder.rglob("*.png"))
    }


def outputs_of(folder: Path) -> list[str]:
    return sorted({row["output"] for row in rows_of(folder) if row["status"] == "done"})


def no_work_names(folder: Path) -> bool:
    return not any(WORK_NAME.match(path.name) for path in folder.rglob("*"))


@pytest.fixture(scope="module")
def in_process_labels(tree, checkpoint, tmp_path_factory) -> Path:
    """The in-process engine's label maps of the tree: what the other engines must equal."""
    output = tmp_path_factory.mktemp("labels") / "out"
    assert segment(tree, "-o", output, "--labels", checkpoint=checkpoint) == 1  # the bad files failed
    return output


def test_an_archive_mirrors_its_paths_records_each_input_and_says_what_failed(
    tree, checkpoint, in_process_labels, tmp_path, capsys
):
    rows = rows_of(in_process_labels)
    assert sorted(row["output"] for row in rows) == sorted([*GOOD_OUTPUTS, "corrupt", "empty", "fake.png"])
    done = {row["output"]: row for row in rows if row["status"] == "done"}
    assert sorted(done) == GOOD_OUTPUTS
    assert done["cam1/a"]["frames"] == 12 and done["cam2/a"]["frames"] == 8
    assert len(list((in_process_labels / "cam1/a").glob("frame_*.png"))) == 12
    row = done["cam1/a"]
    assert row["input"] == str(tree / "cam1/a.mp4")
    assert (
        len(row["weights"]) == 64 and row["backend"].startswith("PyTorch CPU") and row["precision"] == "fp32"
    )
    assert row["options"]["labels"] is True and row["host"] and row["seconds"] > 0
    failed = {Path(row["input"]).name: row["error"] for row in rows if row["status"] == "failed"}
    for name, words in BAD.items():
        assert words in failed[name]
    assert no_work_names(in_process_labels)

    # The same through main, to read what the user is told: the summary, no traceback, exit 1.
    capsys.readouterr()
    assert segment(tree, "-o", tmp_path / "colours", checkpoint=checkpoint) == 1
    captured = capsys.readouterr()
    assert "5 done, 3 failed, 0 done before" in captured.out
    assert "left out 1 file(s) neither a video nor an image by name" in captured.err
    assert "notes.txt" in captured.err and "Traceback" not in captured.err
    assert sorted(
        p.relative_to(tmp_path / "colours").as_posix() for p in (tmp_path / "colours").rglob("*.*")
    ) == [
        "b.mp4",
        "cam1/a.mp4",
        "cam1/pic.png",
        "cam2/a.mp4",
        "cam2/deep/pic2.png",
        "manifest.jsonl",
    ]
    assert len(list(read_frames(tmp_path / "colours/cam1/a.mp4"))) == 12


def test_a_rerun_redoes_nothing_and_retries_failures_only_when_asked(tree, checkpoint, tmp_path, capsys):
    output = tmp_path / "out"
    segment(tree, "-o", output, checkpoint=checkpoint)
    rows, stamps = rows_of(output), {p: p.stat().st_mtime_ns for p in output.rglob("*.*")}
    capsys.readouterr()
    assert segment(tree, "-o", output, checkpoint=checkpoint) == 1  # failures said again
    captured = capsys.readouterr()
    assert "0 done, 3 failed, 5 done before (skipped)" in captured.out
    assert "--retry-failed tries again" in captured.err
    assert rows_of(output) == rows
    assert {p: p.stat().st_mtime_ns for p in output.rglob("*.*")} == stamps

    assert segment(tree, "-o", output, "--retry-failed", checkpoint=checkpoint) == 1
    assert len(rows_of(output)) == len(rows) + len(BAD)  # only the failed ones again

    (output / "cam1/a.mp4").unlink()  # an output gone, or other options: done again
    assert segment(tree, "-o", output, "--alpha", "0.5", checkpoint=checkpoint) == 1
    assert rows_of(output)[-1]["output"] == "cam1/a.mp4" and (output / "cam1/a.mp4").is_file()
    count = len(rows_of(output))
    assert segment(tree, "-o", output, "--view", "mask", checkpoint=checkpoint) == 1
    assert len(rows_of(output)) == count + len(GOOD_OUTPUTS)


def test_patterns_lists_and_files_name_inputs_and_the_output_never_overwrites_one(
    tree, checkpoint, tmp_path, capsys
):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# footage\n{tree / 'b.mov'}\n\n{tree / 'cam1/pic.png'}\n")
    output = tmp_path / "out"
    code = segment(str(tree / "cam*" / "a.mp4"), "--list", listing, "-o", output, checkpoint=checkpoint)
    assert code == 0, capsys.readouterr().err
    assert outputs_of(output) == ["b.mp4", "cam1/a.mp4", "cam1/pic.png", "cam2/a.mp4"]

    assert segment(tree / "nothing*.mp4", tree / "b.mov", "-o", tmp_path / "two", checkpoint=checkpoint) == 1
    assert "nothing*.mp4: no such file, folder or match" in capsys.readouterr().err

    copy = tmp_path / "copy"
    shutil.copytree(tree, copy)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert segment(copy, "-o", copy, checkpoint=checkpoint) == 1
    assert "is an input: choose another output folder" in capsys.readouterr().err
    assert segment(copy / "cam1/pic.png", copy / "b.mov", "-o", copy, checkpoint=checkpoint) == 1
    assert "would overwrite the input" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before

    inside = copy / "segmented"  # an output folder inside the input: never read back as input
    segment(copy, "-o", inside, checkpoint=checkpoint)
    segment(copy, "-o", inside, checkpoint=checkpoint)
    segment(copy / "*", "-o", inside, checkpoint=checkpoint)  # the pattern matches the output folder too
    assert capsys.readouterr().out.count("5 done before") == 2
    assert not any(row["input"].startswith(str(inside)) for row in rows_of(inside))

    (tmp_path / "no-media").mkdir()
    (tmp_path / "no-media/readme.txt").write_text("no footage here")
    assert segment(tmp_path / "no-media", "-o", tmp_path / "none", checkpoint=checkpoint) == 1
    assert "no video or image in" in capsys.readouterr().err


def test_a_row_cut_short_is_ignored_and_a_second_job_on_the_folder_is_refused(
    tree, checkpoint, tmp_path, capsys
):
    output = tmp_path / "out"
    output.mkdir()
    (output / MANIFEST_NAME).write_text('{"input": "cut short by a kill", "outp')
    segment(tree / "b.mov", tree / "cam1/pic.png", "-o", output, checkpoint=checkpoint)
    lines = (output / MANIFEST_NAME).read_text().splitlines()
    assert len(lines) == 3 and [json.loads(line)["output"] for line in lines[1:]] == ["b.mp4", "cam1/pic.png"]
    with Manifest(output):
        assert segment(tree, "-o", output, checkpoint=checkpoint) == 1
    assert "another rtformer segment job is writing to" in capsys.readouterr().err


def test_one_file_with_an_output_file_is_segmented_as_before(tree, checkpoint, tmp_path):
    assert segment(tree / "cam1/a.mp4", "-o", tmp_path / "one.mp4", checkpoint=checkpoint) == 0
    assert len(list(read_frames(tmp_path / "one.mp4"))) == 12
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_areas_beside_write_each_videos_shares_and_a_rerun_redoes_only_what_lacks_them(
    tree, checkpoint, tmp_path
):
    output = tmp_path / "out"
    assert segment(tree, "-o", output, checkpoint=checkpoint) == 1  # first without the areas
    assert not list(output.rglob("*.csv"))
    assert segment(tree, "-o", output, "--areas-beside", checkpoint=checkpoint) == 1
    tables = {path.relative_to(output).as_posix(): path for path in output.rglob("*.areas.csv")}
    assert sorted(tables) == ["b.areas.csv", "cam1/a.areas.csv", "cam2/a.areas.csv"]  # videos only
    for name, frames in VIDEOS.items():
        table = np.loadtxt(tables[str(Path(name).with_suffix(".areas.csv"))], delimiter=",", skiprows=1)
        assert table.shape[0] == frames and list(table[:, 0]) == list(range(frames))
        np.testing.assert_allclose(table[:, 2:].sum(axis=1), 1, atol=1e-3)
    rows = rows_of(output)
    redone = [row["output"] for row in rows[-3:] if row["status"] == "done"]
    assert sorted(redone) == ["b.mp4", "cam1/a.mp4", "cam2/a.mp4"]  # the images were not redone
    assert rows[-1]["areas"].endswith(".areas.csv")

    (output / "cam2/a.areas.csv").unlink()
    before = len(rows_of(output))
    assert segment(tree, "-o", output, "--areas-beside", checkpoint=checkpoint) == 1
    assert [row["output"] for row in rows_of(output)[before:]] == ["cam2/a.mp4"]
    assert (output / "cam2/a.areas.csv").exists() and no_work_names(output)
    before = len(rows_of(output))
    assert segment(tree, "-o", output, checkpoint=checkpoint) == 1  # without: nothing to redo
    assert len(rows_of(output)) == before


def test_areas_beside_one_video_goes_beside_its_output_file(tree, checkpoint, tmp_path):
    assert (
        segment(tree / "cam1/a.mp4", "-o", tmp_path / "one.mp4", "--areas-beside", checkpoint=checkpoint) == 0
    )
    assert len((tmp_path / "one.areas.csv").read_text().splitlines()) == 1 + 12


# ------------------------------------------------------------------------ kills


def run_and_kill(arguments: list[str], output: Path, moment: float) -> None:
    """Run the job in a child process and SIGKILL it `moment` seconds after it finished
    one more input (so every run gets somewhere whatever this machine's speed), or
    let it end if it ends first."""
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.commands.cli", "segment", *arguments],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = len(rows_of(output)) if output.exists() else 0
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if output.exists() and len(rows_of(output)) > rows:
            break
        time.sleep(0.05)
    try:
        process.wait(timeout=moment)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()


def assert_each_input_done_once(output: Path, expected_frames: dict[str, int]) -> None:
    rows = rows_of(output)
    done = [row["output"] for row in rows if row["status"] == "done"]
    assert sorted(done) == sorted(expected_frames), "an input done twice, or not at all"
    for name, frames in expected_frames.items():
        assert len(list(read_frames(output / name))) == frames
    assert no_work_names(output)


def test_a_job_killed_five_times_finishes_each_input_once(checkpoint, tmp_path):
    footage = tmp_path / "footage"
    expected = {}
    for index in range(4):
        write_video(footage / f"drive{index}.mp4", frames=90, fps=30)
        expected[f"drive{index}.mp4"] = 90
    output = tmp_path / "out"
    arguments = [str(footage), "-o", str(output), "--checkpoint", str(checkpoint), "--backend", "torch"]
    moments = random.Random(41)  # mid-file: an input takes about 2 s here
    for _ in range(5):
        run_and_kill(arguments, output, moments.uniform(0.0, 1.5))
    before = len([row for row in rows_of(output) if row["status"] == "done"])
    assert main(["segment", *arguments]) == 0
    assert_each_input_done_once(output, expected)
    assert before >= 1  # the kills left finished work, and it was not done again


# -------------------------------------------------------------------------- Ray


@pytest.fixture
def ray_temp_dir():
    """A short-named Ray temp folder (its socket paths must stay under 108 bytes); Ray's
    processes left by a killed driver are ended with it."""
    folder = Path(tempfile.mkdtemp(prefix="rt-ray-", dir="/tmp"))
    yield folder
    import psutil

    for process in psutil.process_iter():
        try:  # Ray's processes rename themselves; the folder is in their environment
            if process.environ().get("RAY_TMPDIR") == str(folder):
                process.kill()
        except psutil.Error:
            continue
    shutil.rmtree(folder, ignore_errors=True)


def test_the_ray_engine_writes_what_the_in_process_engine_writes(
    tree, checkpoint, in_process_labels, tmp_path, ray_temp_dir, monkeypatch
):
    monkeypatch.setenv("RAY_TMPDIR", str(ray_temp_dir))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    output = tmp_path / "ray"
    arguments = ["--labels", "--engine", "ray", "--workers", "2", "--cpus-per-worker", "1"]
    assert segment(tree, "-o", output, *arguments, checkpoint=checkpoint) == 1
    assert outputs_of(output) == GOOD_OUTPUTS
    ours, theirs = label_maps(output), label_maps(in_process_labels)
    assert list(ours) == list(theirs) and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    rows = rows_of(output)
    assert {row["status"] for row in rows if Path(row["input"]).name in BAD} == {"failed"}
    assert len({row["worker"] for row in rows if "worker" in row}) <= 2  # the model loaded once per actor
    assert segment(tree, "-o", output, *arguments, checkpoint=checkpoint) == 1
    assert rows_of(output) == rows  # a rerun on Ray redoes nothing either


def test_the_ray_engine_runs_on_a_two_node_cluster(
    tree, checkpoint, in_process_labels, tmp_path, ray_temp_dir
):
    import ray
    from ray.cluster_utils import Cluster

    os.environ["RAY_TMPDIR"] = str(ray_temp_dir)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address)
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
        output = tmp_path / "cluster"
        arguments = [
            "--labels",
            "--engine",
            "ray",
            "--ray-address",
            cluster.address,
            "--cpus-per-worker",
            "1",
        ]
        assert segment(tree, "-o", output, *arguments, checkpoint=checkpoint) == 1
        ours, theirs = label_maps(output), label_maps(in_process_labels)
        assert list(ours) == list(theirs) and all(np.array_equal(ours[k], theirs[k]) for k in ours)
        nodes = {row["node"] for row in rows_of(output) if row["status"] == "done"}
        assert len(nodes) == 2  # one actor a node: each took files
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        os.environ.pop("RAY_TMPDIR", None)


def test_a_killed_ray_driver_resumes_with_nothing_lost_or_doubled(checkpoint, tmp_path, ray_temp_dir):
    footage = tmp_path / "footage"
    expected = {}
    for index in range(4):
        write_video(footage / f"drive{index}.mp4", frames=60 + 10 * index, fps=30)
        expected[f"drive{index}.mp4"] = 60 + 10 * index
    output = tmp_path / "out"
    arguments = [str(footage), "-o", str(output), "--checkpoint", str(checkpoint), "--backend", "torch"]
    env = {**os.environ, "RAY_TMPDIR": str(ray_temp_dir)}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.commands.cli",
            "segment",
            *arguments,
            "--engine",
            "ray",
            "--workers",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not rows_of(output) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = [row["output"] for row in rows_of(output)]
    assert 1 <= len(first) < 4, "the kill came too late to test a resume"
    assert first[0] == "drive3.mp4"  # the largest file first
    assert main(["segment", *arguments]) == 0
    assert_each_input_done_once(output, expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_a_ray_actor_that_cannot_load_the_model_fails_its_files_with_the_reason(
    tree, checkpoint, tmp_path, ray_temp_dir, monkeypatch
):
    monkeypatch.setenv("RAY_TMPDIR", str(ray_temp_dir))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    output = tmp_path / "out"
    arguments = ["--engine", "ray", "--device", "cuda", "--cpus-per-worker", "1"]  # no GPU in this test
    assert segment(tree / "b.mov", tree / "cam1/a.mp4", "-o", output, *arguments, checkpoint=checkpoint) == 1
    rows = rows_of(output)
    assert [row["status"] for row in rows] == ["failed", "failed"]
    assert all("the model cannot be loaded on" in row["error"] for row in rows)


def test_the_ray_engine_says_how_to_install_ray_where_it_is_missing(
    tree, checkpoint, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert segment(tree, "-o", tmp_path / "out", "--engine", "ray", checkpoint=checkpoint) == 1
    err = capsys.readouterr().err
    assert 'pip install "rtformer-studio[cluster]"' in err and "Traceback" not in err
