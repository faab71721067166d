"""Crash reporting: `faulthandler` writes every fatal error (a segfault, an abort, a
refcount error found by the interpreter in a C extension) with the stacks of all
threads to `crash.log` in the app's data folder. The next start finds it, keeps it
under a dated name and tells the user where it is; a session that ended without a
trace (SIGKILL, power loss) is noticed by the marker it leaves behind.
"""

from __future__ import annotations

import faulthandler
import os
import time
from pathlib import Path
from typing import TextIO

CRASH_LOG = "crash.log"
RUNNING_MARK = "session.running"


class CrashReporter:
    """`start()` at launch, `stop()` at a clean exit. Between the two a crash leaves
    `crash.log` (non-empty) and the running mark behind."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.log_path = self.folder / CRASH_LOG
        self._file: TextIO | None = None

    def start(self) -> str | None:
        """Turn crash logging on; returns a message about the previous session if it crashed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        message = self._previous_session()
        self._file = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - open for the whole session
        faulthandler.enable(self._file, all_threads=True)
        (self.folder / RUNNING_MARK).write_text(str(os.getpid()))
        return message

    def stop(self) -> None:
        """A clean exit: no crash log and no running mark are left."""
        if self._file is None:
            return
        faulthandler.disable()
        self._file.close()
        self._file = None
        if self.log_path.is_file() and self.log_path.stat().st_size == 0:
            self.log_path.unlink()
        (self.folder / RUNNING_MARK).unlink(missing_ok=True)

    def _previous_session(self) -> str | None:
        marked = (self.folder / RUNNING_MARK).exists()
        if self.log_path.is_file() and self.log_path.stat().st_size > 0:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.log_path.stat().st_mtime))
            kept = self.log_path.with_name(f"crash-{stamp}.log")
            self.log_path.replace(kept)
            return f"The last session crashed. What happened is in {kept}; please attach it to a bug report."
        if marked:
            return "The last session did not close normally (killed, or the machine stopped); no crash log was written."
        return None
