"""`rtformer segment` on many inputs: an archive of videos and images, resumable.

The job, in four parts, shared by both engines (this process, or Ray: archive_ray.py):

- `collect_inputs`: paths, folders (walked recursively), glob patterns and list files
  become `ArchiveItem`s, each with its output path relative to the job's folder,
  mirroring the inputs' relative paths (a video to .mp4, an image to .png; with labels,
  a video to a folder of label maps).
- `Manifest`: `FOLDER/manifest.jsonl`, one JSON row per finished input, appended as each
  ends. A rerun skips the inputs done with the same weights and options whose output
  exists (`JobSettings.fingerprint`).
- `segment_item`: one input to its output, written under a hidden temporary name and
  renamed when complete, so a kill at any moment leaves no partial file under a final
  name. Never raises for a bad input: the row says "failed" and why.
- `run_archive`: the job in this process, with a bar of files and one of frames.
"""

from __future__ import annotations

import datetime
import fcntl
import functools
import glob
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from engine.commands.segment_files import make_output_folder, segment_image, segment_video
from engine.media import VideoError, is_image, is_video
from engine.runtime.artifacts import file_digest
from engine.runtime.segmenter import Segmenter
from engine.runtime.stabilize import MaskStabilizer

log = logging.getLogger("rtformer.engine")
MANIFEST_NAME = "manifest.jsonl"
# Hidden work names: ".NAME.1a2b3c4d.partial.mp4" while written, ".NAME.1a2b3c4d.old" while replaced.
WORK_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.(partial|old)(\.[A-Za-z0-9]+)?$")
DONE, FAILED = "done", "failed"


@dataclass(frozen=True)
class ArchiveItem:
    """One input of a job: `source` (absolute), `output` (relative to the job's folder,
    POSIX separators), `kind` ("video" or "image", by the name) and its size in bytes."""

    source: str
    output: str
    kind: str
    size: int
    mtime_ns: int


@dataclass
class ArchivePlan:
    items: list[ArchiveItem]
    ignored: list[Path] = field(default_factory=list)  # in folders, neither a video nor an image by name
    missing: list[str] = field(default_factory=list)  # paths and patterns that name nothing


@dataclass
class JobSettings:
    """What a job's workers need to build their Segmenter and write outputs; plain
    values only, so it travels to Ray actors as it is."""

    checkpoint: str
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    calibration: str | None = None
    input_scale: float = 1.0
    streams: int = 2
    cuda_graphs: bool | None = None
    batch_size: int | None = None
    stall_seconds: float | None = None
    view: str = "overlay"
    alpha: float = 0.5
    labels: bool = False
    stabilize: bool = True
    areas: bool = False  # each video's class shares beside its output (areas_name); not an
    # output option: a job that wants them redoes only the videos done without them

    def output_options(self) -> dict:
        """The options that change what is written: a done row with others is redone."""
        return {
            "view": self.view,
            "alpha": self.alpha,
            "labels": self.labels,
            "stabilize": self.stabilize,
            "input_scale": self.input_scale,
        }

    def build_segmenter(self, threads: int | None = None) -> Segmenter:
        return Segmenter(
            self.checkpoint,
            self.backend,
            self.device,
            self.precision,
            calibration=self.calibration,
            threads=threads,
            streams=max(1, min(self.streams, threads or self.streams)),
            cuda_graphs=self.cuda_graphs,
            input_scale=self.input_scale,
        )


# ------------------------------------------------------------------------ inputs


def read_list_file(path: str | Path) -> list[str]:
    """The paths of a list file, one a line; blank lines and lines starting with # are skipped."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise VideoError(f"cannot read the list file {path}: {error}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def collect_inputs(entries: Iterable[str], folder: Path, labels: bool = False) -> ArchivePlan:
    """The job's inputs from `entries` (files, folders, glob patterns), outputs under
    `folder`. Folders are walked recursively, hidden names and `folder` itself left out;
    there a file counts when its name says video or image. A file named directly is
    always tried. Outputs mirror the inputs' paths relative to the nearest folder that
    holds them all (the folder itself when one folder is given)."""
    folder = Path(folder).absolute()
    plan = ArchivePlan([])
    found: list[tuple[Path, Path]] = []  # (file, the folder its relative path starts from)
    for entry in entries:
        matches = [entry] if Path(entry).exists() or not glob.has_magic(entry) else sorted(glob.glob(entry))
        if not matches or not Path(matches[0]).exists():
            plan.missing.append(entry)
            continue
        for match in matches:
            path = Path(match).absolute()
            if path == folder and match == entry:
                raise VideoError(f"the output folder {folder} is an input: choose another output folder")
            if path == folder or (folder in path.parents and match != entry):
                continue  # the job's own outputs, matched by a pattern
            if path.is_dir():
                files, ignored = walk_media(path, folder)
                found += [(file, path) for file in files]
                plan.ignored += ignored
            else:
                found.append((path, path.parent))
    if found:
        plan.items = _items(found, folder, labels)
    return plan


def walk_media(root: Path, leave_out: Path) -> tuple[list[Path], list[Path]]:
    """(videos and images, other files) under `root`, sorted, hidden names and the
    folder `leave_out` (a job's output inside its input) not entered."""
    media, others = [], []
    for directory, folders, files in os.walk(root):
        here = Path(directory)
        folders[:] = sorted(
            name for name in folders if not name.startswith(".") and (here / name).absolute() != leave_out
        )
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = here / name
            (media if is_video(path) or is_image(path) else others).append(path)
    return media, others


def _items(found: list[tuple[Path, Path]], folder: Path, labels: bool) -> list[ArchiveItem]:
    base = Path(os.path.commonpath([str(root) for _, root in found]))
    unique: dict[Path, Path] = {}
    for path, _ in found:
        unique.setdefault(path.resolve(), path)
    relatives = {path: path.relative_to(base) for path in unique.values()}
    outputs = {path: output_name(relative, is_image(path), labels) for path, relative in relatives.items()}
    counts: dict[str, int] = {}
    for name in outputs.values():
        counts[name] = counts.get(name, 0) + 1
    for path, name in outputs.items():
        if counts[name] > 1:  # "a.mov" and "a.mp4" side by side: keep the input's suffix
            outputs[path] = output_name(relatives[path], is_image(path), labels, keep_suffix=True)
    inputs = {str(path.resolve()) for path in unique.values()}
    items = []
    for path, name in outputs.items():
        if str((folder / name).resolve()) in inputs:
            raise VideoError(
                f"the output {folder / name} would overwrite the input {path}: choose another output folder"
            )
        stat = path.stat()
        kind = "image" if is_image(path) else "video"
        items.append(ArchiveItem(str(path), name, kind, stat.st_size, stat.st_mtime_ns))
    return items


def output_name(relative: Path, image: bool, labels: bool, keep_suffix: bool = False) -> str:
    """An input's output path relative to the job's folder: images to .png, videos to
    .mp4, or with `labels` to a folder of label maps (no suffix)."""
    suffix = ".png" if image else ("" if labels else ".mp4")
    if keep_suffix:
        return (relative.as_posix() + suffix) if suffix else relative.as_posix() + "-labels"
    return relative.with_suffix(suffix).as_posix()


# ---------------------------------------------------------------------- manifest


class Manifest:
    """FOLDER/manifest.jsonl, held by one job at a time (a lock on the file, released by the
    system even when the job is killed). Rows are appended and flushed one by one; a row
    cut short by a kill is ignored when read."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / MANIFEST_NAME
        self._file = None  # open for the job: its lock is the job's, and rows go through it

    def __enter__(self) -> Manifest:
        self._file = open(self.path, "a+b")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise VideoError(
                f"another rtformer segment job is writing to {self.path.parent}: "
                "wait for it to end or choose another output folder"
            ) from None
        if self._file.seek(0, os.SEEK_END):
            self._file.seek(-1, os.SEEK_END)
            if self._file.read(1) != b"\n":
                self._file.write(b"\n")  # after a row cut short by a kill: a line of our own
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        rows = []
        for number, line in enumerate(self.path.read_text(errors="replace").splitlines(), 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning(
                    "%s: line %d is not a whole row (a job killed while writing it); ignored",
                    self.path,
                    number,
                )
                continue
            if isinstance(row, dict) and "output" in row:
                rows.append(row)
        return rows

    def latest(self) -> dict[str, dict]:
        """The last row of each output."""
        return {row["output"]: row for row in self.rows()}

    def append(self, row: dict) -> None:
        """Add a row while the job holds the manifest (inside `with`)."""
        self._file.write((json.dumps(row) + "\n").encode())
        self._file.flush()
        os.fsync(self._file.fileno())


def same_input(row: dict, item: ArchiveItem) -> bool:
    """Whether `row` is about `item` as it is now (same path, size and modification time)."""
    return (
        row.get("input") == item.source
        and row.get("input_bytes") == item.size
        and row.get("input_mtime_ns") == item.mtime_ns
    )


def is_finished(
    row: dict | None, item: ArchiveItem, fingerprint: dict, folder: Path, areas: bool = False
) -> bool:
    """Whether `row` says `item` is done as this job would do it, and its output is there
    (and, for a video of a job that wants `areas`, its class shares too)."""
    return (
        row is not None
        and row.get("status") == DONE
        and same_input(row, item)
        and all(row.get(key) == value for key, value in fingerprint.items())
        and (folder / item.output).exists()
        and (not areas or item.kind != "video" or _has_areas(row, folder))
    )


def _has_areas(row: dict, folder: Path) -> bool:
    return bool(row.get("areas")) and (folder / row["areas"]).exists()


def fingerprint(settings: JobSettings) -> dict:
    """What a done row must match to be skipped: the weights' SHA-256 and the output options."""
    return {"weights": weights_digest(settings.checkpoint), "options": settings.output_options()}


def weights_digest(checkpoint: str | Path) -> str:
    """The checkpoint's SHA-256, read once per version of the file (66 ms for Base's 36 MB)."""
    stat = Path(checkpoint).stat()
    return _digest(str(Path(checkpoint).absolute()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path, 64)


# ----------------------------------------------------------------- one input


def areas_name(output: str) -> str:
    """Where a video's class shares go beside its output: "a/drive.mp4" -> "a/drive.areas.csv"
    (a `--labels` folder "a/drive" -> "a/drive.areas.csv")."""
    path = PurePosixPath(output)
    return str(path.with_name(f"{path.stem if path.suffix else path.name}.areas.csv"))


def segment_item(
    segmenter: Segmenter, item: ArchiveItem, folder: Path, settings: JobSettings, progress: bool = False
) -> dict:
    """Segment one input into FOLDER/item.output; the manifest row that says how it went.
    A bad input (corrupt, empty, not media, unreadable) gives a "failed" row, not an error."""
    started = time.perf_counter()
    row = failed_row(item, "")
    row.update(
        weights=weights_digest(segmenter.checkpoint),
        backend=segmenter.description,
        precision=segmenter.precision,
        options=settings.output_options(),
    )
    try:
        row.update(_write(segmenter, item, Path(folder), settings, progress), status=DONE)
    except Exception as error:  # one input's failure is recorded in its row; the job goes on
        row["error"] = describe_failure(error)
        log.info("%s failed: %s", item.source, row["error"])
    row["seconds"] = round(time.perf_counter() - started, 3)
    row["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return row


def failed_row(item: ArchiveItem, error: str) -> dict:
    """A manifest row for `item` that failed with `error`: the fields every row has."""
    return {
        "input": item.source,
        "output": item.output,
        "status": FAILED,
        "error": error,
        "warning": "",
        "frames": 0,
        "seconds": 0.0,
        "first_frame_seconds": 0.0,
        "input_bytes": item.size,
        "input_mtime_ns": item.mtime_ns,
        "host": socket.gethostname(),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }


def describe_failure(error: Exception) -> str:
    if isinstance(error, VideoError | ValueError):
        return str(error)
    if isinstance(error, OSError):
        return f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    return f"{type(error).__name__}: {error}"


def _write(
    segmenter: Segmenter, item: ArchiveItem, folder: Path, settings: JobSettings, progress: bool
) -> dict:
    """Write the output under its final name; the row's frames, warning and first frame time."""
    source, final = Path(item.source), folder / item.output
    _check_readable(source)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = work_name(final, "partial")
    areas = areas_name(item.output) if item.kind == "video" and settings.areas else None
    work_areas = work_name(folder / areas, "partial") if areas else None
    try:
        if item.kind == "image":
            segment_image(segmenter, source, work, settings.view, settings.alpha, settings.labels)
            written = {"frames": 1}
        else:
            written = _write_video(segmenter, source, work, settings, progress, work_areas)
        if areas:  # first: a done row needs both, and the output comes last
            publish(work_areas, folder / areas)
            written["areas"] = areas
        publish(work, final)
    finally:
        _remove(work)
        if work_areas:
            _remove(work_areas)
    return written


def _write_video(
    segmenter: Segmenter,
    source: Path,
    work: Path,
    settings: JobSettings,
    progress: bool,
    areas: Path | None = None,
) -> dict:
    stabilizer = MaskStabilizer() if settings.stabilize else None
    report = segment_video(
        segmenter,
        source,
        work,
        settings.view,
        settings.alpha,
        progress,
        settings.batch_size,
        settings.stall_seconds,
        stabilizer,
        settings.labels,
        bar_position=1,
        areas=areas,
    )
    if report.frames == 0:
        raise VideoError(
            f"no frame of {source.name} could be decoded" + (f": {report.error}" if report.error else "")
        )
    warning = (
        f"damaged: segmented the {report.frames} frames before it ({report.error})" if report.damaged else ""
    )
    return {
        "frames": report.frames,
        "warning": warning,
        "first_frame_seconds": round(report.first_frame_seconds, 3),
    }


def _check_readable(source: Path) -> None:
    """Say plainly what is wrong with a file nothing can be read from."""
    with open(source, "rb") as file:  # PermissionError, IsADirectoryError: said as they are
        if not file.read(1):
            raise VideoError(f"{source.name} is empty (0 bytes)")


def work_name(final: Path, role: str) -> Path:
    """A hidden name beside `final` for it while written ("partial") or replaced ("old");
    the suffix stays, since encoders choose the format by it."""
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}.{role}{final.suffix}")


def publish(work: Path, final: Path) -> None:
    """Put a complete `work` file or folder under its `final` name, replacing what is there."""
    if final.is_dir() and not final.is_symlink():
        old = work_name(final, "old")
        final.rename(old)
        work.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, final)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_work_names(folder: Path) -> int:
    """Remove what killed jobs left under hidden work names in `folder`; how many."""
    removed = 0
    for directory, folders, files in os.walk(folder):
        for name in [*files, *folders]:
            if WORK_NAME.match(name):
                _remove(Path(directory) / name)
                removed += 1
        folders[:] = [name for name in folders if not WORK_NAME.match(name)]
    return removed


# ----------------------------------------------------------------------- the job


@dataclass
class ArchiveReport:
    """What a job did: the rows written by this run, and the inputs done before it."""

    rows: list[dict] = field(default_factory=list)
    skipped_done: int = 0  # done by an earlier run with the same weights and options
    skipped_failed: list[dict] = field(default_factory=list)  # failed earlier, not retried
    seconds: float = 0.0

    @property
    def done(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == DONE]

    @property
    def failed(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == FAILED] + self.skipped_failed

    @property
    def frames(self) -> int:
        return sum(row["frames"] for row in self.rows)


# An engine: (inputs to do, output folder, settings, a call per finished row, progress bars?)
Engine = Callable[[list[ArchiveItem], Path, JobSettings, Callable[[dict], None], bool], None]


@dataclass
class ArchiveJob:
    """The inputs still to do, after the manifest and `retry_failed` had their say."""

    todo: list[ArchiveItem]
    report: ArchiveReport


def plan_job(plan: ArchivePlan, manifest: Manifest, settings: JobSettings, retry_failed: bool) -> ArchiveJob:
    latest = manifest.latest()
    wanted = fingerprint(settings)
    report, todo = ArchiveReport(), []
    for item in plan.items:
        row = latest.get(item.output)
        if is_finished(row, item, wanted, manifest.path.parent, settings.areas):
            report.skipped_done += 1
        elif row is not None and row.get("status") == FAILED and not retry_failed and same_input(row, item):
            report.skipped_failed.append(row)
        else:
            todo.append(item)
    return ArchiveJob(todo, report)


def run_archive(
    plan: ArchivePlan,
    folder: Path,
    settings: JobSettings,
    retry_failed: bool = False,
    progress: bool = True,
    engine: Engine | None = None,
) -> ArchiveReport:
    """Segment the plan's inputs into `folder`, each once: those finished by an earlier run
    are skipped, those that failed are tried again only with `retry_failed`. `engine`
    runs the inputs to do and calls back with each row as it ends (default: this process,
    one input after the other, the model loaded once)."""
    folder = Path(folder)
    _make_folder(folder)
    started = time.perf_counter()
    with Manifest(folder) as manifest:
        _sweep(folder)
        job = plan_job(plan, manifest, settings, retry_failed)
        files = tqdm(total=len(job.todo), unit="file", disable=not (progress and job.todo), desc="files")
        frames = 0

        def finished(row: dict) -> None:
            nonlocal frames
            manifest.append(row)
            job.report.rows.append(row)
            frames += row["frames"]
            files.update(1)
            files.set_postfix(frames=frames, failed=len(job.report.failed), refresh=True)

        try:
            (engine or in_process)(job.todo, folder, settings, finished, progress)
        finally:
            files.close()
        # Again at the end: a Ray worker of a killed job can write on for a second or so
        # until Ray ends it, and what it left after the first sweep is no one's.
        _sweep(folder)
    job.report.seconds = time.perf_counter() - started
    return job.report


def _sweep(folder: Path) -> None:
    swept = sweep_work_names(folder)
    if swept:
        log.info("removed %d partial output(s) a stopped job left in %s", swept, folder)


def in_process(
    items: list[ArchiveItem],
    folder: Path,
    settings: JobSettings,
    finished: Callable[[dict], None],
    progress: bool,
) -> None:
    """The default engine: one input after the other in this process, the model loaded once."""
    if not items:
        return
    segmenter = settings.build_segmenter()
    for item in items:
        finished(segment_item(segmenter, item, folder, settings, progress))


def _make_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise VideoError(f"the output {folder} is a file: several inputs need an output folder")
    make_output_folder(folder)
