"""A start-up check of the Qt binding's reference counting.

PySide6 6.12.0 returns `None` from every void method and `True` from `Signal.emit()`
without taking a reference. On Python 3.11, where those objects are not immortal,
each call takes one reference from them, and the app died after minutes of playback
("Fatal Python error: none_dealloc" / "bool_dealloc": painting a frame
alone makes about five void calls). pyproject.toml keeps that release out; this check
catches it (or a later release with the same fault) in an environment set up by hand.
"""

from __future__ import annotations

import ctypes
import sys

CALLS = 64


def qt_reference_leak() -> str | None:
    """None when Qt calls keep their references; else a message for the user."""
    import PySide6
    from PySide6.QtCore import QObject, Signal

    class Probe(QObject):
        ping = Signal()

    probe = Probe()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(CALLS):
        probe.setObjectName("probe")  # a void method
        probe.ping.emit()
    lost_none = none_before - sys.getrefcount(None)
    lost_true = true_before - sys.getrefcount(True)
    if max(lost_none, lost_true) < CALLS // 2:
        return None
    _pay_back(None, lost_none)  # the check must not bring the crash closer itself
    _pay_back(True, lost_true)
    return (
        f"PySide6 {PySide6.__version__} loses a reference to None or True on every Qt call: on this "
        f"Python ({sys.version.split()[0]}) the app will crash after some minutes. "
        'Install another release: pip install "PySide6>=6.6,<6.12".'
    )


def _pay_back(singleton: object, references: int) -> None:
    """Give `singleton` back references a faulty binding took. They must be owned by no
    object: one freed at exit would take them again, so they are added as raw counts."""
    for _ in range(max(0, references)):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(singleton))
