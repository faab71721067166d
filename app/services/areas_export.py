"""File > Export areas over a whole video file: a model and a decoder of its own, on a
thread of its own, every frame of the file in order.

The live view segments only the frames it keeps up with (where the model is slower
than the source, the newest frame wins), so the shares it saw cover part of a file. This
pass covers all of it, with the running model's checkpoint, backend and input size, and
steady masks as the view has them: the same table `rtformer segment --areas` writes.
The CSV appears under its name only when complete (written under a hidden name, then
renamed); a cancelled or failed pass leaves nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

from engine.media import probe, read_frames
from engine.runtime import AreasCsv, MaskStabilizer, Segmenter, class_shares

log = logging.getLogger("rtformer.app")


class AreasExport:
    """One pass over `source` into the CSV `target`. Reports through plain callables (see
    app/services/__init__.py): `on_progress((frames done, frames declared or 0))`, then
    either `on_done((rows, target))`, `on_done(None)` when cancelled, or `on_error(message)`."""

    def __init__(
        self,
        factory: Callable[[], Segmenter],
        source: str | Path,
        target: str | Path,
        steady: bool,
        on_progress: Callable[[object], None],
        on_done: Callable[[object], None],
        on_error: Callable[[str], None],
    ) -> None:
        self.factory, self.source, self.target, self.steady = factory, Path(source), Path(target), steady
        self.on_progress, self.on_done, self.on_error = on_progress, on_done, on_error
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="areas-export", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self, timeout: float | None = None) -> None:
        """Stop after the frame in hand; with `timeout`, wait that long for the thread."""
        self._cancel.set()
        if timeout is not None and self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        work = self.target.with_name(f".{self.target.name}.{secrets.token_hex(4)}.partial")
        try:
            rows = self._write(work)
            if self._cancel.is_set():
                self.on_done(None)
                return
            os.replace(work, self.target)
            self.on_done((rows, self.target))
        except Exception as error:  # the app says why and keeps running
            log.exception("exporting the areas of %s failed", self.source)
            self.on_error(f"cannot export the areas of {self.source.name}: {error}")
        finally:
            work.unlink(missing_ok=True)

    def _write(self, work: Path) -> int:
        """Every frame's shares into `work`, until the end or a cancel; how many rows."""
        declared = probe(self.source).frames or 0
        segmenter = self.factory()
        stabilizer = MaskStabilizer() if self.steady else None
        with AreasCsv(work, segmenter.class_names) as table:
            for index, (image, seconds) in enumerate(read_frames(self.source)):
                if self._cancel.is_set():
                    break
                labels = segmenter.predict_model_labels(image, stabilizer)
                table.write(index, seconds, class_shares(labels, table.classes))
                self.on_progress((index + 1, declared))
            return table.rows
