"""The pipeline's services, each on its own thread: capture, inference (with model
loading beside it), recording, and the whole-file areas export; plus the metrics they
share.

Capture -> LatestSlot -> Inference -> (Mailbox -> GUI, Recorder). The slot holds
one frame: a newer frame replaces an unread one and counts as dropped, so latency
never builds up. Errors never kill a thread silently: they reach `on_error`.

The thread rule: no service thread touches a Qt object, and the app never calls a
Signal's `emit()` from Python, on any thread. Services report through plain
callables; the session (app/session.py) hands them a `Mailbox`'s methods, and a QTimer on the GUI
thread drains the mailbox. Qt's own signals (timers, actions, widgets) are fine.

Why: the app died with "Fatal Python error: bool_dealloc: deallocating True or
False" (and, in 30-minute soaks, "none_dealloc: deallocating None"), during
recording and at quit. The cause is not the threads: PySide6 6.12.0 returns `True`
from `SignalInstance.emit()` and `None` from every void method (`update()`,
`setText()`, QPainter calls) without taking a reference, so each such call, on any
thread, takes one reference from the singleton (measured: 100 calls, -100
references; 6.11.3 loses none). On Python 3.11, where they are not immortal, the
count (about 13,000 for True in the running app) reaches zero after as many calls:
two emits a frame (the old signals) killed the app within 6 minutes, and the five
void calls of painting a frame within 25-31 minutes; with fewer, the count reached
zero while the interpreter dropped its own references at exit ("Garbage-collecting").
Python 3.12+ makes them immortal, which hides it. So: pyproject.toml keeps 6.12.0
out, `app.qtcheck` warns at start if the binding leaks, and the app emits no
signal from Python at all, which tests/test_app.py checks.
"""

from app.services.areas_export import AreasExport
from app.services.capture import CaptureService
from app.services.compare import Panel, compose_pair
from app.services.inference import (
    STEADY_GAP_SECONDS,
    InferenceService,
    LoadedModel,
    ModelRequest,
    Result,
    ViewSettings,
    compose,
    draw,
)
from app.services.mailbox import LatestSlot, Mailbox
from app.services.metrics import STAGES, RollingStats
from app.services.recorder import RecorderService

__all__ = [
    "STAGES",
    "STEADY_GAP_SECONDS",
    "AreasExport",
    "CaptureService",
    "InferenceService",
    "LatestSlot",
    "LoadedModel",
    "Mailbox",
    "ModelRequest",
    "Panel",
    "RecorderService",
    "Result",
    "RollingStats",
    "ViewSettings",
    "compose",
    "compose_pair",
    "draw",
]
