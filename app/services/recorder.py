"""The recording service: encodes what the view shows to H.264 MP4 on its own thread."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.services.metrics import RollingStats
from engine.media import VideoWriter

log = logging.getLogger("rtformer.app")


class RecorderService:
    """Writes pictures to H.264 MP4 on its own thread. Timestamps are wall-clock
    time since recording started, so the file lasts as long as the recording.

    The MP4 is fragmented (engine.media.CRASH_SAFE_MP4): if the app is killed or the
    disk fills up, the file still plays up to its last second. The first picture fixes
    the size; pictures of another size (a view change) are letterboxed into it. Any
    failure sets `failed`, is reported once, and never blocks `stop`.
    """

    def __init__(
        self, path: Path, stats: RollingStats, on_error: Callable[[str], None], max_queue: int = 64
    ) -> None:
        self.path, self.stats, self.on_error = path, stats, on_error
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.started = time.monotonic()
        self.failed = False
        self._stopping = threading.Event()
        self._hold_until = 0.0
        self._writer = VideoWriter(path, fps=30, crash_safe=True)  # opens the file now: errors show at once
        self.codec = self._writer.codec
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def frames(self) -> int:
        return self._writer.frames

    def push(self, picture: np.ndarray) -> None:
        if self.failed or self._stopping.is_set():
            return
        try:
            self._queue.put_nowait((picture, self.elapsed))
        except queue.Full:
            self.stats.drop("encode")

    def stop(self, timeout: float = 30.0) -> Path | None:
        """Write what is queued, hold the last picture until now (so the file lasts
        as long as the recording did), then close the file cleanly. Returns the file,
        or None when no frame was written (then no file is left)."""
        self._hold_until = self.elapsed
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.on_error(f"the recorder did not finish within {timeout:.0f} s; {self.path} may be cut short")
            return self.path
        return self.path if self.frames else None

    def _run(self) -> None:
        last = None
        try:
            while True:
                try:
                    picture, seconds = self._queue.get(timeout=0.05)
                except queue.Empty:
                    if self._stopping.is_set():
                        break
                    continue
                self._write(picture, seconds)
                last = picture
            if last is not None:  # repeat the last picture at the stop time
                self._write(last, self._hold_until)
        except Exception as error:  # any failure: say so once; the file keeps what was written
            self.failed = True
            log.exception("recording %s failed", self.path)
            self.on_error(f"recording stopped: {error}. {self.path.name} keeps what was written.")
        finally:
            self._close()

    def _write(self, picture: np.ndarray, seconds: float) -> None:
        started = time.perf_counter()
        self._writer.write(picture, seconds)
        self.stats.add("encode", (time.perf_counter() - started) * 1e3)

    def _close(self) -> None:
        try:
            self._writer.close()
        except Exception as error:  # a full disk can fail the final flush too
            self.on_error(f"closing the recording failed: {error}")
        if not self._writer.frames:
            self.path.unlink(missing_ok=True)  # nothing recorded: leave no empty file behind
