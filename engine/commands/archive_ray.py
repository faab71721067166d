"""`rtformer segment --engine ray`: an archive job on Ray Data, on this machine or a cluster.

One Ray Data row per input file, one block per row, so each file is one task; the
largest files go first, so the last to finish are short ones. `map_batches` runs
`FileWorker`, a callable class on an actor pool: each actor builds its Segmenter once and
then segments whole files with `archive.segment_item`, the in-process engine's own code,
writing outputs straight to the shared folder. Only each file's manifest row travels
back; the driver appends it to the manifest as it arrives (archive.run_archive).

Ray is the optional `cluster` extra, imported only here. Without an address Ray starts
embedded on this machine, listening on 127.0.0.1 only; `address` (or $RAY_ADDRESS)
joins an existing cluster, whose nodes must reach the inputs, the output folder and the
checkpoint at the same paths (docs/cluster.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from engine.commands.archive import (
    ArchiveItem,
    JobSettings,
    describe_failure,
    failed_row,
    segment_item,
    weights_digest,
)

log = logging.getLogger("rtformer.engine")
INSTALL_HINT = 'pip install "rtformer-studio[cluster]"'
# The embedded instance carries only manifest rows: a small object store leaves the memory to the model.
EMBEDDED_OBJECT_STORE_BYTES = 256 * 2**20
# Ray's switch for a one-machine instance on the loopback address (its servers bind 127.0.0.1).
LOOPBACK_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class ClusterError(Exception):
    """Ray is not installed here, or its cluster cannot be reached."""


@dataclasses.dataclass
class RayOptions:
    workers: int | None = None  # actors; default: the cluster's CPUs (GPUs) / what each takes
    cpus_per_worker: float = 2
    gpus_per_worker: float = 0
    address: str | None = None  # None: $RAY_ADDRESS, else an embedded instance


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ClusterError(
            f"--engine ray needs Ray, which is not installed: {INSTALL_HINT} (or use the default engine)"
        ) from None
    return ray


class FileWorker:
    """The actor pool's callable: the Segmenter is built once per actor, in its constructor."""

    def __init__(self, settings: dict, folder: str, weights: str, threads: int | None) -> None:
        self.settings = JobSettings(**settings)
        self.folder = Path(folder)
        self.node = import_ray().get_runtime_context().get_node_id()
        self.unusable = ""  # why this actor cannot segment: said in each of its files' rows
        try:
            if weights_digest(self.settings.checkpoint) != weights:
                self.unusable = (
                    f"the checkpoint {self.settings.checkpoint} on {socket.gethostname()} is not the one "
                    "the job started with: every node needs the same file at the same path"
                )
                return
            self.segmenter = self.settings.build_segmenter(threads=threads)
        except Exception as error:  # a constructor that raises would end the whole Ray job
            self.unusable = f"the model cannot be loaded on {socket.gethostname()}: {describe_failure(error)}"

    def __call__(self, batch: dict) -> dict:
        rows = []
        for index in range(len(batch["source"])):
            item = ArchiveItem(**{name: _plain(batch[name][index]) for name in ITEM_FIELDS})
            if self.unusable:
                rows.append(json.dumps({**failed_row(item, self.unusable), "node": self.node}))
                continue
            row = segment_item(self.segmenter, item, self.folder, self.settings)
            rows.append(json.dumps({**row, "node": self.node}))
        return {"row": rows}


ITEM_FIELDS = [field.name for field in dataclasses.fields(ArchiveItem)]


def _plain(value):
    """A numpy scalar from a Ray batch as the Python value it was."""
    return value.item() if hasattr(value, "item") else value


def ray_engine(options: RayOptions) -> Callable:
    """An engine for archive.run_archive that runs the inputs on Ray with `options`; Ray
    is imported now, so a missing install is said before the job starts."""
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        os.environ.setdefault(LOOPBACK_ONLY_VARIABLE, "0")  # read when Ray is imported
    ray = import_ray()

    def run(
        items: list[ArchiveItem],
        folder: Path,
        settings: JobSettings,
        finished: Callable[[dict], None],
        progress: bool,
    ) -> None:
        if not items:
            return
        started_here = not ray.is_initialized()
        if started_here:
            _start(ray, address)
        _configure_ray_data(ray)
        try:
            reported: set[str] = set()
            for row in _rows(ray, items, folder, settings, options):
                reported.add(row["output"])
                finished(row)
            for item in items:  # a worker that died took its file's row with it
                if item.output not in reported:
                    finished(failed_row(item, "its Ray worker ended without a result (see the Ray logs)"))
        finally:
            if started_here:
                ray.shutdown()

    return run


def _start(ray, address: str | None) -> None:
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            object_store_memory=EMBEDDED_OBJECT_STORE_BYTES,
            include_dashboard=False,
            **quiet,
        )
    else:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ClusterError(f"cannot join the Ray cluster at {address}: {error}") from None


def _configure_ray_data(ray) -> None:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the job has its own bar of files
    context.max_errored_blocks = -1  # a crashed worker loses one file, not the job
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _rows(ray, items: list[ArchiveItem], folder: Path, settings: JobSettings, options: RayOptions):
    """Each file's manifest row, as its task ends."""
    largest_first = sorted(items, key=lambda item: item.size, reverse=True)
    workers = options.workers or pool_size(ray, options)
    threads = max(1, int(options.cpus_per_worker))
    dataset = ray.data.from_items(
        [dataclasses.asdict(item) for item in largest_first], override_num_blocks=len(largest_first)
    )
    rows = dataset.map_batches(
        FileWorker,
        batch_size=1,
        # One file in flight per actor: the next largest goes to whichever actor frees first,
        # so the order is kept and no short file waits queued behind a long one on a busy actor.
        compute=ray.data.ActorPoolStrategy(
            size=max(1, min(workers, len(items))), max_tasks_in_flight_per_actor=1
        ),
        num_cpus=options.cpus_per_worker,
        num_gpus=options.gpus_per_worker or None,
        fn_constructor_kwargs={
            "settings": dataclasses.asdict(settings),
            "folder": str(Path(folder).absolute()),
            "weights": weights_digest(settings.checkpoint),
            "threads": threads,
        },
    )
    # Block by block, nothing fetched ahead: iter_rows' prefetch held each row back until the
    # actor's next file ended (2.2 s late on 10 s of video), work a killed driver would redo.
    for batch in rows.iter_batches(batch_size=None, prefetch_batches=0):
        for row in batch["row"]:
            yield json.loads(row)


def pool_size(ray, options: RayOptions) -> int:
    """As many actors as the cluster's CPUs (or GPUs, for GPU workers) hold."""
    resources = ray.cluster_resources()
    if options.gpus_per_worker:
        return max(1, int(resources.get("GPU", 0) // options.gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // options.cpus_per_worker))
