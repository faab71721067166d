"""`rtformer segment`: every frame of a video, an image, or a folder of images.

Videos are written as H.264 MP4 with the input's frame rate and timestamps
(same duration), or, with `labels_only`, as a folder of label maps (frame_000000.png,
...); images as PNG colour masks / overlays, or label maps. A video's masks are steady
(engine.runtime.stabilize) unless `stabilize` is off.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from engine.media import DecodeReport, VideoError, VideoWriter, is_image, list_images, probe, read_frames
from engine.runtime.areas import AreasCsv, class_shares
from engine.runtime.confidence import DEFAULT_MEASURE, VIEW_STRIDE, confidence
from engine.runtime.postprocess import labels_at
from engine.runtime.render import render
from engine.runtime.segmenter import Segmenter
from engine.runtime.stabilize import MaskStabilizer
from engine.runtime.watchdog import StallError, StallReport, StallWatchdog

log = logging.getLogger("rtformer.engine")
STAGES = ("decode", "preprocess", "inference", "postprocess", "render", "encode")
QUEUE_SIZE = 8
BATCH_CANDIDATES = (1, 2, 4, 8)
BATCH_TIMING_CALLS = 5
# After a stall, how long to wait for each outer thread to end before leaving it behind.
JOIN_AFTER_STALL_SECONDS = 5.0


@dataclass
class SegmentReport:
    frames: int
    seconds: float
    damaged: bool = False
    error: str = ""
    stage_ms: dict[str, float] = field(default_factory=dict)  # median per stage, videos only
    skipped: list[Path] = field(default_factory=list)  # unreadable images of a folder
    warnings: list[str] = field(default_factory=list)  # for the user, said at the end
    first_frame_seconds: float = 0.0  # from the call to the first frame out of the model, videos only

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def segment_video(
    segmenter: Segmenter,
    source: Path,
    output: Path,
    view: str = "overlay",
    alpha: float = 0.5,
    progress: bool = True,
    batch_size: int | None = None,
    stall_seconds: float | None = None,
    stabilizer: MaskStabilizer | None = None,
    labels_only: bool = False,
    bar_position: int = 0,
    areas: Path | None = None,
) -> SegmentReport:
    """Every frame of `source`, segmented, into `output` with the same timestamps (or,
    `labels_only`, into the folder `output`: frame_000000.png, ... label maps); with
    `areas`, each frame's class shares into that CSV (engine.runtime.areas).

    Three stages overlap: a decoder thread; preprocessing and inference on this thread;
    postprocessing (the `stabilizer`'s steady labels, if any), rendering and encoding on a
    third; bounded queues keep memory flat and the order. `batch_size` frames go to the model
    at once (None: the best, measured). A watchdog ends the run with a StallError naming the
    stuck stage when no frame moves for `stall_seconds` (default: $RTFORMER_STALL_SECONDS or
    300 s); `output` keeps the frames written. The bar of frames is on line `bar_position`."""
    info = probe(source)
    if batch_size is None:
        batch_size = measured_batch_size(segmenter, np.zeros((info.height, info.width, 3), np.uint8))
    table = AreasCsv(areas, segmenter.class_names) if areas else None
    pipeline = _VideoPipeline(stall_seconds, stabilizer, logits=view == "confidence", areas=table)
    decode, first_frame = DecodeReport(), 0.0
    started = time.perf_counter()
    encoding = (output, info, segmenter.lut, view, alpha, labels_only)
    threads = [
        threading.Thread(target=pipeline.decode, args=(source, decode), name="decode", daemon=True),
        threading.Thread(target=pipeline.encode, args=encoding, name="encode", daemon=True),
    ]
    bar = _frames_bar(info.frames, source.name, progress, bar_position)
    with pipeline.watchdog:
        for thread in threads:
            thread.start()
        try:
            for item in _segmented_in_order(segmenter, pipeline, batch_size):
                first_frame = first_frame or time.perf_counter() - started
                if not _put(pipeline.rendered, item, pipeline.stop):
                    break
                bar.update(1)
                bar.set_postfix(fps=f"{bar.n / (time.perf_counter() - started):.1f}")
        except BaseException:
            pipeline.stop.set()  # unblock the decoder and the encoder
            raise
        finally:
            _put(pipeline.rendered, None, pipeline.stop)  # the end, unless stopping already
            for thread in threads:
                # A stage stuck in a native call never returns: it is a daemon, left behind.
                thread.join(None if pipeline.watchdog.report is None else JOIN_AFTER_STALL_SECONDS)
            bar.close()
    pipeline.raise_failure(output)
    medians = {stage: statistics.median(values) for stage, values in pipeline.stages.items() if values}
    seconds = time.perf_counter() - started
    return SegmentReport(decode.frames, seconds, decode.damaged, decode.error, medians, [], [], first_frame)


def _frames_bar(frames: int, name: str, shown: bool, position: int) -> tqdm:
    """A video's bar of frames; on line 1, below a job's bar of files, it goes when done."""
    return tqdm(
        total=frames or None,
        unit="frame",
        disable=not shown,
        desc=name,
        position=position,
        leave=position == 0,
    )


class _VideoPipeline:
    """The queues, stage timings, failures, stop event and watchdog that segment_video's
    three threads share; `decode` and `encode` are the outer two threads' bodies. A
    stage's work on one frame runs inside `watchdog.working(stage)`."""

    def __init__(
        self,
        stall_seconds: float | None = None,
        stabilizer: MaskStabilizer | None = None,
        logits: bool = False,
        areas: AreasCsv | None = None,
    ) -> None:
        self.stages: dict[str, list[float]] = {name: [] for name in STAGES}
        self.stabilizer = stabilizer  # fed in frame order by the encode thread
        # The logits travel with each frame for the stabilizer and the confidence view.
        self.with_logits = stabilizer is not None or logits
        self.areas = areas  # written in frame order by the encode thread, which closes it
        self.decoded: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.rendered: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.failures: list[BaseException] = []
        self.stop = threading.Event()
        # Started by segment_video; `hard_exit`: even a frozen interpreter ends, with stacks.
        self.watchdog = StallWatchdog(self.stalled, stall_seconds, hard_exit=True)

    def stalled(self, report: StallReport) -> None:
        """The watchdog's call (it has logged where, with every stack): stop every stage."""
        self.stop.set()

    def raise_failure(self, output: Path) -> None:
        """Raise what ended the run early: a stall first (the other failures follow from
        it), else the first failure; nothing when the run went through."""
        report = self.watchdog.report
        if report is not None:
            kept = f"{output} keeps the {len(self.stages['encode'])} frame(s) written before it"
            if report.stage == "encode":  # it cannot flush what it holds
                kept = f"{output} keeps the fragments the encoder wrote (a second of video each)"
            raise StallError(report, kept) from None
        if self.failures:
            raise self.failures[0]

    def decode(self, source: Path, report: DecodeReport) -> None:
        try:
            frames = iter(read_frames(source, report))
            while True:
                clock = time.perf_counter()
                with self.watchdog.working("decode"):
                    item = next(frames, None)
                if item is None:
                    break
                self.stages["decode"].append((time.perf_counter() - clock) * 1e3)
                if not _put(self.decoded, item, self.stop):
                    return
        except BaseException as error:  # reported by the main thread
            self.failures.append(error)
        finally:
            _put(self.decoded, None, self.stop)  # skipped when stopping: the main thread checks `stop` too

    def encode(self, output: Path, info, lut, view: str, alpha: float, labels_only: bool = False) -> None:
        # Postprocess, render and encode here, so the main thread only feeds the model.
        # When the pipeline stops, the writer closes with the frames written so far.
        try:
            # Fragmented (crash-safe) MP4: a stage stuck for good, a kill or a crash leaves a
            # file that plays up to its last second, not one without its index.
            sink = (
                LabelFolderWriter(output)
                if labels_only
                else VideoWriter(output, fps=info.fps, time_base=info.time_base, crash_safe=True)
            )
            with sink as writer:
                while (item := _get(self.rendered, self.stop)) is not None:
                    with self.watchdog.working("encode"):
                        self._encode_one(writer, item, lut, view, alpha, labels_only)
        except BaseException as error:
            self.failures.append(error)
            self.stop.set()  # the decoder and the main thread both watch it
        finally:
            if self.areas is not None:
                self.areas.close()

    def _encode_one(self, writer, item: tuple, lut, view: str, alpha: float, labels_only: bool) -> None:
        frame, inferred, seconds = item
        clock = time.perf_counter()
        labels = self._labels(inferred)  # at the model's size: render scales the colours
        if self.areas is not None:
            self.areas.write(self.areas.rows, seconds, class_shares(labels, self.areas.classes))
        drawn = time.perf_counter()
        sure = (
            confidence(inferred[1][0].numpy(), DEFAULT_MEASURE, VIEW_STRIDE) if view == "confidence" else None
        )
        picture = (
            labels_at(labels, frame.shape[:2])
            if labels_only
            else render(view, frame, labels, lut, alpha, (), None, sure)
        )
        encoding = time.perf_counter()
        writer.write(picture, seconds)
        self.stages["postprocess"].append((drawn - clock) * 1e3)
        self.stages["render"].append((encoding - drawn) * 1e3)
        self.stages["encode"].append((time.perf_counter() - encoding) * 1e3)

    def _labels(self, inferred) -> np.ndarray:
        """The labels (h, w) uint8 of one frame from what inference gave: its labels
        (1, h, w), or (model input, logits, labels) for the stabilizer or the confidence view."""
        if not self.with_logits:
            return inferred[0].numpy()
        image, logits, labels = inferred
        if self.stabilizer is None:
            return labels[0].numpy()
        return self.stabilizer(image, logits[0].numpy(), labels[0].numpy())


class LabelFolderWriter:
    """`segment --labels` on a video: each frame's label map (uint8 class ids, at the
    frame's size) as `frame_000000.png`, `frame_000001.png`, ... in frame order, in a
    folder that is created; what is there already of that name is overwritten."""

    def __init__(self, folder: Path) -> None:
        make_output_folder(folder)
        self.folder, self.count = folder, 0

    def write(self, labels: np.ndarray, seconds: float) -> None:
        path = self.folder / f"frame_{self.count:06d}.png"
        if not cv2.imwrite(str(path), labels):
            raise VideoError(f"cannot write {path}")
        self.count += 1

    def __enter__(self) -> LabelFolderWriter:
        return self

    def __exit__(self, *exc) -> None:
        return None


class _DaemonWorkers:
    """`count` daemon threads running submitted calls, in the style of a thread pool.
    Not concurrent.futures' pool: its workers are joined at interpreter exit, so one
    stuck in a native call would keep `rtformer segment` alive after a stall."""

    def __init__(self, count: int, name: str) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True) for index in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, function, *args) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((future, function, args))
        return future

    def close(self, wait: bool = True) -> None:
        """Cancel the jobs not started and end the workers after their current job; wait
        for them unless `wait` is False (after a stall: a stuck one is left behind). Why
        wait: a daemon thread still inside the runtime when the interpreter exits took
        the process down ("terminate called without an active exception", status 134)."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, function, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args))
            except BaseException as error:
                future.set_exception(error)


def _result(future: concurrent.futures.Future, stop: threading.Event):
    """The future's result, or None as soon as the pipeline is stopping."""
    while not stop.is_set():
        try:
            return future.result(timeout=0.1)
        except concurrent.futures.TimeoutError:
            continue
    return None


def _segmented_in_order(segmenter: Segmenter, pipeline: _VideoPipeline, batch_size: int = 1):
    """(frame, labels at the model's size (1, h, w), seconds from the first frame) for each
    decoded frame, in order; with the pipeline's stabilizer, (model input (h, w, 3),
    logits (1, C, h, w), labels (1, h, w)) in place of the labels. Preprocessing runs
    here; inference on `backend.parallel` worker threads, `batch_size` frames a call, so
    a backend that takes several frames at once (OpenVINO with streams, PyTorch CUDA
    with batches) gets them, while the results still come out in the input's order. The
    last batch is padded with copies of its last frame: a CUDA graph is captured per
    batch shape. Ends early, without an error, when the pipeline stops (its failures say why)."""
    parallel = max(1, segmenter.backend.parallel)
    stages, stop, watchdog = pipeline.stages, pipeline.stop, pipeline.watchdog
    pending: collections.deque = collections.deque()
    group: list[tuple] = []
    first_timestamp = None

    steady = pipeline.with_logits
    infer = _inference(segmenter, watchdog, steady)

    def submit(workers: _DaemonWorkers) -> None:
        blobs = [blob for _, _, blob, _ in group]
        blobs += blobs[-1:] * (batch_size - len(blobs))
        batch = blobs[0] if len(blobs) == 1 else np.concatenate(blobs)  # no second copy per frame
        future = workers.submit(infer, batch, len(group))
        pending.append(([(frame, seconds, image) for frame, seconds, _, image in group], future))
        group.clear()

    def oldest():
        frames, future = pending.popleft()
        result = _result(future, stop)
        if result is None:
            return
        outputs, milliseconds = result
        for index, (frame, seconds, image) in enumerate(frames):
            stages["inference"].append(milliseconds)
            mine = tuple(output[index : index + 1] for output in outputs)
            yield frame, ((image, *mine) if steady else mine[0]), seconds

    workers = _DaemonWorkers(parallel, "inference")
    try:
        while (item := _get(pipeline.decoded, stop)) is not None:
            frame, seconds = item
            first_timestamp = seconds if first_timestamp is None else first_timestamp
            started = time.perf_counter()
            with watchdog.working("preprocess"):
                blob = segmenter.prepare(frame).copy()  # the preprocessor reuses its buffer
                image = segmenter.preprocessor.resized.copy() if steady else None  # for the flow
            stages["preprocess"].append((time.perf_counter() - started) * 1e3)
            group.append((frame, seconds - first_timestamp, blob, image))
            if len(group) == batch_size:
                submit(workers)
            if len(pending) >= parallel:
                yield from oldest()
        if group and not stop.is_set():
            submit(workers)
        while pending and not stop.is_set():
            yield from oldest()
    finally:
        workers.close(wait=watchdog.report is None)


def _inference(segmenter: Segmenter, watchdog: StallWatchdog, steady: bool):
    """The workers' call: (batch, count) -> (outputs of the first `count` frames, ms per
    frame); outputs are (labels,), or (logits, labels) for the stabilizer."""

    def infer(batch: np.ndarray, count: int):
        started = time.perf_counter()
        with watchdog.working("inference"):
            if steady:
                outputs = tuple(output[:count] for output in segmenter.backend.infer_both(batch))
            else:
                outputs = (segmenter.backend.infer_labels(batch)[:count],)
        return outputs, (time.perf_counter() - started) * 1e3 / count

    return infer


def measured_batch_size(segmenter: Segmenter, frame: np.ndarray, candidates=BATCH_CANDIDATES) -> int:
    """The batch size with the least time per frame on this backend, timed on `frame`
    (a few calls each after a warm-up that also captures its CUDA graph); 1 for backends
    that gain nothing from batches (the CPU ones)."""
    if not getattr(segmenter.backend, "batches", False):
        return 1
    blob = segmenter.prepare(frame).copy()
    per_frame = {}
    for size in candidates:
        batch = np.concatenate([blob] * size)
        for _ in range(2):
            segmenter.backend.infer_labels(batch)
        started = time.perf_counter()
        for _ in range(BATCH_TIMING_CALLS):
            segmenter.backend.infer_labels(batch)
        per_frame[size] = (time.perf_counter() - started) * 1e3 / (BATCH_TIMING_CALLS * size)
    chosen = min(per_frame, key=per_frame.get)
    log.info(
        "batch size %d; ms per frame by batch size: %s",
        chosen,
        {k: round(v, 2) for k, v in per_frame.items()},
    )
    return chosen


def _get(source: queue.Queue, stop: threading.Event):
    """The next item, or None at the end or as soon as the pipeline is stopping (a failed
    writer stops it, and then the decoder's end marker may never come)."""
    while not stop.is_set():
        try:
            return source.get(timeout=0.1)
        except queue.Empty:
            continue
    return None


def _put(target: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless the pipeline is stopping; False when it is."""
    while not stop.is_set():
        try:
            target.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def segment_image(
    segmenter: Segmenter, source: Path, output: Path, view: str, alpha: float, labels_only: bool
) -> None:
    frame = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if frame is None:
        raise VideoError(f"cannot read {source.name} as an image: it is damaged or not an image")
    write_segmented(segmenter, frame, output, view, alpha, labels_only)


def write_segmented(
    segmenter: Segmenter, frame, output: Path, view: str, alpha: float, labels_only: bool
) -> None:
    """Segment a BGR frame and write the picture (or label map) to `output`, whose folder exists."""
    if view == "confidence" and not labels_only:
        outputs = segmenter.predict_outputs(frame, measure=DEFAULT_MEASURE)
        picture = render(view, frame, outputs.labels, segmenter.lut, alpha, (), None, outputs.confidence)
    else:
        labels = segmenter.predict(frame)
        picture = labels if labels_only else render(view, frame, labels, segmenter.lut, alpha)
    if not cv2.imwrite(str(output), picture):
        raise VideoError(f"cannot write {output}")


def make_output_folder(folder: Path) -> None:
    """Create `folder` (and its parents), or say clearly why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise VideoError(f"cannot create the output folder {folder}: {error.strerror or error}") from None


def check_output(source: Path, output: Path) -> None:
    """Refuse an output that would overwrite the input (the user's video would be lost
    while it is being read), and create its folder or say why it cannot be."""
    if output.resolve() == source.resolve():
        raise VideoError(f"the output {output} is the input: choose another name, the input would be lost")
    make_output_folder(output if source.is_dir() else output.parent)


def segment_path(
    segmenter: Segmenter,
    source: str | Path,
    output: str | Path,
    view: str = "overlay",
    alpha: float = 0.5,
    labels_only: bool = False,
    progress: bool = True,
    batch_size: int | None = None,
    stall_seconds: float | None = None,
    stabilize: bool = True,
    areas: str | Path | None = None,
) -> SegmentReport:
    """Segment a video file, an image, or a folder of images into `output` (`batch_size`,
    `stall_seconds` and `areas`: see `segment_video`). A video's masks are steady
    (engine.runtime.stabilize) unless `stabilize` is False; with `labels_only` a video
    becomes a folder of label maps, one per frame."""
    source, output = Path(source), Path(output)
    started = time.perf_counter()
    if not source.exists():
        raise VideoError(f"input not found: {source}")
    check_output(source, output)
    if areas is not None and (source.is_dir() or is_image(source)):
        raise VideoError(f"--areas takes a video, and {source} is not one")
    if source.is_dir():
        return segment_folder(segmenter, source, output, view, alpha, labels_only, progress)
    if is_image(source):
        if output.suffix.lower() != ".png":
            output = output.with_suffix(".png")
        segment_image(segmenter, source, output, view, alpha, labels_only)
        return SegmentReport(1, time.perf_counter() - started)
    stabilizer = MaskStabilizer() if stabilize else None
    report = segment_video(
        segmenter,
        source,
        output,
        view,
        alpha,
        progress,
        batch_size,
        stall_seconds,
        stabilizer,
        labels_only,
        areas=Path(areas) if areas else None,
    )
    if report.damaged:
        report.warnings.append(
            f"{source} is damaged; segmented the {report.frames} frames before the damage "
            f"({report.error}); {output} holds them and is complete"
        )
    return report


def segment_folder(
    segmenter: Segmenter,
    source: Path,
    output: Path,
    view: str,
    alpha: float,
    labels_only: bool,
    progress: bool,
) -> SegmentReport:
    """Every image of a folder; an image that cannot be read is skipped, and listed in
    the report's `skipped` and `warnings`, instead of stopping the whole folder."""
    started = time.perf_counter()
    images = list_images(source)
    if not images:
        raise VideoError(f"no images in {source}")
    report = SegmentReport(0, 0.0)
    for image in tqdm(images, unit="image", disable=not progress):
        frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if frame is None:  # skip it; a write failure, in contrast, concerns every image and stops
            log.warning("skipping %s: cannot read it as an image", image)
            report.skipped.append(image)
            continue
        write_segmented(segmenter, frame, output / f"{image.stem}.png", view, alpha, labels_only)
        report.frames += 1
    if report.skipped:
        names = ", ".join(path.name for path in report.skipped)
        report.warnings.append(f"skipped {len(report.skipped)} unreadable image(s) of {source}: {names}")
    report.seconds = time.perf_counter() - started
    return report
