"""`rtformer doctor`: one report of what this machine has, shared with the app."""

import json

import pytest

import engine.runtime.availability
import engine.runtime.doctor
from engine.commands.cli import main
from engine.runtime.availability import BACKEND_CHOICES, onnxruntime_conflict, why_unavailable
from engine.runtime.doctor import Section, folders, format_system_report, system_report


def test_doctor_names_every_backend_with_its_state_and_every_section(capsys):
    assert main(["doctor", "--json"]) == 0
    sections = {section["title"]: dict(section["rows"]) for section in json.loads(capsys.readouterr().out)}
    assert set(sections) >= {
        "Versions", "CPU", "CUDA", "ONNX Runtime", "Backends", "Cameras (Qt Multimedia)",
        "Video encoding", "Folders", "Tested where",
    }  # fmt: skip
    for choice in BACKEND_CHOICES:
        state = sections["Backends"][choice.label]
        reason = why_unavailable(choice)
        assert state == (f"unavailable: {reason}" if reason else "available")
    assert sections["Backends"]["ONNX Runtime CPU"] == "available"
    assert sections["Video encoding"]["recording"].startswith("H.264 works")
    assert "torch" in sections["Versions"] and "PyAV" in sections["Versions"]


def test_the_backend_section_follows_the_machine(monkeypatch):
    monkeypatch.setattr(engine.runtime.availability.torch.cuda, "is_available", lambda: True)
    rows = dict(engine.runtime.doctor.backends().rows)
    assert rows["PyTorch CUDA (fp16)"] == "available"
    assert rows["default (auto)"].startswith("the fastest CUDA backend whose labels keep 99.9%")
    monkeypatch.setattr(engine.runtime.availability.torch.cuda, "is_available", lambda: False)
    assert dict(engine.runtime.doctor.backends().rows)["PyTorch CUDA (fp16)"].startswith(
        "unavailable: no CUDA"
    )


def test_cpu_and_gpu_onnx_runtime_side_by_side_are_reported(monkeypatch):
    versions = {"onnxruntime": "1.20.0", "onnxruntime-gpu": "1.20.0"}

    def version(name):
        if name in versions:
            return versions[name]
        raise engine.runtime.availability.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(engine.runtime.availability.importlib.metadata, "version", version)
    monkeypatch.setattr(
        engine.runtime.availability, "onnxruntime_providers", lambda: ["CPUExecutionProvider"]
    )
    message = onnxruntime_conflict()
    assert "onnxruntime 1.20.0" in message and "onnxruntime-gpu 1.20.0" in message and "uninstall" in message
    gpu_runtime = next(c for c in BACKEND_CHOICES if c.label == "ONNX Runtime CUDA/TensorRT")
    assert why_unavailable(gpu_runtime) == message
    del versions["onnxruntime"]
    assert onnxruntime_conflict() == ""


def test_folders_that_cannot_be_written_are_named(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RTFORMER_STUDIO_HOME", str(blocker / "home"))
    rows = dict(folders().rows)
    assert "NOT writable" in rows["settings and crash logs"]
    assert str(blocker / "home" / "cache") in rows["caches (ONNX exports, INT8)"]
    monkeypatch.setenv("RTFORMER_STUDIO_HOME", str(tmp_path / "home"))
    assert dict(folders().rows)["settings and crash logs"].endswith("(writable)")


def test_a_failing_check_is_reported_and_the_rest_still_run(monkeypatch):
    def broken():
        raise RuntimeError("no such driver")

    broken.__name__ = "cuda"
    monkeypatch.setattr(
        engine.runtime.doctor,
        "SECTIONS",
        (engine.runtime.doctor.versions, broken, engine.runtime.doctor.backends),
    )
    sections = system_report()
    assert [s.title for s in sections] == ["Versions", "cuda", "Backends"]
    assert sections[1].rows == [("error", "RuntimeError: no such driver")]
    text = format_system_report([Section("A", [("x", "1")]), Section("B", [("longer name", "2")])])
    assert "A\n-\n  x            1" in text


def test_help_menu_shows_the_report_and_copies_it(qtbot, window):
    from PySide6.QtGui import QGuiApplication

    help_menu = window.menuBar().actions()[-1].menu()
    action = next(a for a in help_menu.actions() if a.text().startswith("System report"))
    action.trigger()
    dialog = window.report_dialog
    assert dialog.isVisible() and "Backends" in dialog.text.toPlainText()
    for choice in BACKEND_CHOICES:
        assert choice.label in dialog.text.toPlainText()
    dialog.copy()
    assert QGuiApplication.clipboard().text() == dialog.text.toPlainText()
    dialog.close()


@pytest.mark.parametrize(
    ("flags", "cpu_class"),
    [
        ({"avx512_vnni", "amx_int8", "avx512_bf16"}, "AMX"),
        ({"avx512_vnni", "avx512_bf16"}, "AVX-512 BF16"),
        ({"avx512_vnni"}, "VNNI"),
        (set(), "AVX2"),
    ],
)
def test_int8_advice_and_the_cpu_class_follow_the_cpu_flags(monkeypatch, flags, cpu_class):
    monkeypatch.setattr(engine.runtime.doctor, "cpu_flags", lambda: {"avx2", *flags})
    rows = dict(engine.runtime.doctor.cpu().rows)
    assert rows["INT8"].startswith("fast") == bool(flags)
    assert ("8-bit" in rows["INT8"]) == bool(flags) and ("7-bit" in rows["INT8"]) == (not flags)
    assert rows["class"] == cpu_class
    measured = rows["measured on this class"]
    assert measured == engine.runtime.doctor.measured_on(cpu_class)
    assert ("ms (" in measured) == (cpu_class != "VNNI")  # no machine of that class measured yet
