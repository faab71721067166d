"""The stall watchdog: a pipeline whose frames stop moving says where it is stuck.

Each stage of a pipeline (decode, inference, encode in `rtformer segment`; inference
in the app) wraps its work on one item in `watchdog.working(stage)`. When no stage has
finished an item for `limit` seconds, the watchdog calls `on_stall` once, from its own
thread, with a `StallReport`: the stage busy longest (or "none: every stage is waiting"
when they all wait on each other), how long, and every thread's stack, so the report
shows the native call or lock a stage sits in. The pipeline then stops with a
`StallError` and keeps what it wrote; it never waits for ever.

Why: two `segment` runs on a loaded 2-core machine sat at "0/12 frames" until
killed after 180 s, with nothing said about where. The limit is generous: OpenVINO has
been seen to take about 150 s compiling one new input shape on an oversubscribed
machine, and that is slow, not stuck.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger("rtformer.engine")
STALL_LIMIT_VARIABLE = "RTFORMER_STALL_SECONDS"
DEFAULT_STALL_SECONDS = 300.0
NO_STAGE = "none (every stage is waiting for another)"


def stall_limit(seconds: float | None = None) -> float:
    """`seconds` if given, else $RTFORMER_STALL_SECONDS, else DEFAULT_STALL_SECONDS."""
    if seconds is not None:
        return float(seconds)
    try:
        return float(os.environ.get(STALL_LIMIT_VARIABLE, DEFAULT_STALL_SECONDS))
    except ValueError:
        return DEFAULT_STALL_SECONDS


@dataclass(frozen=True)
class StallReport:
    stage: str  # the stage busy longest, or NO_STAGE
    busy_seconds: float  # how long that stage has been on one item (0 for NO_STAGE)
    idle_seconds: float  # since any stage last finished an item
    limit: float  # the watchdog's limit, seconds
    stacks: str  # every thread's stack, the stuck stage's first

    def summary(self) -> str:
        if self.stage == NO_STAGE:
            return f"no frame moved for {self.idle_seconds:.0f} s and no stage is working: {NO_STAGE}"
        return f"the {self.stage} stage has been on one frame for {self.busy_seconds:.0f} s"


class StallError(RuntimeError):
    """A pipeline stopped because its frames stopped moving."""

    def __init__(self, report: StallReport, kept: str = "") -> None:
        kept = f"; {kept}" if kept else ""
        super().__init__(
            f"stalled: {report.summary()}; stopped after {report.idle_seconds:.0f} s without a frame "
            f"(the limit, {report.limit:.0f} s, is set by ${STALL_LIMIT_VARIABLE}){kept}"
        )
        self.report = report


class StallWatchdog:
    """Watches the stages of one pipeline; see the module docstring.

    Use as a context manager, or `start` and `stop` its thread, or call `check` yourself.
    Each stall is logged (with the stacks) and `on_stall` called once; `report` keeps what it was given until
    `forget_busy`.
    `waiting_is_stall=False` counts only a stage busy past the limit: in the app, no
    frame for minutes is a paused video, not a stall.

    `hard_exit=True` (for commands, never the app) adds a backstop for a frozen
    interpreter: a native call that deadlocks while holding the GIL stops this thread
    too (seen: OpenVINO's binding, engine.runtime.backends). Python's faulthandler,
    re-armed at every poll from here, then prints every thread's stack and exits the
    process with status 1 once this thread has not run for 2 limits.
    """

    def __init__(
        self,
        on_stall: Callable[[StallReport], None],
        limit: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        waiting_is_stall: bool = True,
        hard_exit: bool = False,
    ) -> None:
        self.limit = stall_limit(limit)
        self.waiting_is_stall = waiting_is_stall
        self.hard_exit = hard_exit
        self.on_stall = on_stall
        self.clock = clock
        self.report: StallReport | None = None
        self._lock = threading.Lock()
        self._busy: dict[int, tuple[str, float]] = {}  # thread ident -> (stage, since)
        self._last_progress = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def working(self, stage: str) -> Iterator[None]:
        """Marks this thread as `stage`, busy on one item, for the `with` block."""
        ident = threading.get_ident()
        with self._lock:
            self._busy[ident] = (stage, self.clock())
        try:
            yield
        finally:
            with self._lock:
                self._busy.pop(ident, None)
                self._last_progress = self.clock()

    def check(self) -> StallReport | None:
        """The report (and `on_stall`, once) when nothing moved for `limit` seconds."""
        if self.report is not None:
            return self.report
        now = self.clock()
        with self._lock:
            idle = now - self._last_progress
            busy = sorted(self._busy.items(), key=lambda item: item[1][1])  # longest first
        if idle < self.limit or not (busy or self.waiting_is_stall):
            return None
        if not self.waiting_is_stall and now - busy[0][1][1] < self.limit:
            return None
        if busy:
            ident, (stage, since) = busy[0]
            report = StallReport(stage, now - since, idle, self.limit, thread_stacks(first=ident))
        else:
            report = StallReport(NO_STAGE, 0.0, idle, self.limit, thread_stacks())
        self.report = report
        log.error("stalled: %s; the threads' stacks:\n%s", report.summary(), report.stacks)
        self.on_stall(report)
        return report

    def forget_busy(self) -> None:
        """Forget the stages busy now and the last stall: their threads were left behind
        (the app goes on without them), and the next stall is reported too."""
        with self._lock:
            self._busy.clear()
            self.report = None
            self._last_progress = self.clock()

    def start(self) -> StallWatchdog:
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.hard_exit:
            faulthandler.cancel_dump_traceback_later()

    def __enter__(self) -> StallWatchdog:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _watch(self) -> None:
        # A quarter of the limit (at most a second): a stall is reported within 1.25 limits.
        while True:
            if self.hard_exit:
                self._arm_backstop()
            if self._stop.wait(min(1.0, self.limit / 4)):
                return
            self.check()

    def _arm_backstop(self) -> None:
        """(Re)arm faulthandler's exit in 2 limits, on the process's own stderr (fd 2: a
        captured sys.stderr has no file descriptor). If it cannot be armed, the watchdog
        goes on without it: the backstop must never cost the watchdog itself."""
        try:
            faulthandler.dump_traceback_later(2 * self.limit, exit=True, file=sys.__stderr__)
        except (AttributeError, OSError, ValueError) as error:  # no stderr; io.UnsupportedOperation
            self.hard_exit = False
            log.warning("the stall backstop is off: %s", error)


def thread_stacks(first: int | None = None) -> str:
    """Every thread's Python stack, named, the thread `first` (an ident) first."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    frames = sys._current_frames()
    order = sorted(frames, key=lambda ident: ident != first)
    blocks = []
    for ident in order:
        stack = "".join(traceback.format_stack(frames[ident]))
        blocks.append(f'Thread "{names.get(ident, ident)}":\n{stack}')
    return "\n".join(blocks)
