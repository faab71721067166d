"""Soak the real window: play a clip or the fake camera for N minutes while recording
on and off, switching models and backends, seeking, pausing, stepping and changing
views; then quit and decode every recording.

    .venv/bin/python tools/soak_app.py --minutes 30 --source assets/demo-camvid-seq05vd.mp4 --models slim
    .venv/bin/python tools/soak_app.py --seconds 30 --source fake -o soak.json

The window runs in a child process (offscreen unless $DISPLAY is set, e.g. under
xvfb-run), so a crash, also one at quit, is seen from outside: its exit status, and
faulthandler's report on its stderr. The parent samples the child's RSS and thread
count; the child reports its FPS and what it did. Exit status 0 only when the child
exited cleanly and every recording decodes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# One action every --action-seconds, in this order, round and round (models and backends
# only where more than one is given).
ACTIONS = (
    "record",
    "view",
    "seek",
    "pause",
    "resume",
    "model",
    "step",
    "resume",
    "record",
    "backend",
    "view",
)


# ---------------------------------------------------------------- the child: the window


def run_child(args: argparse.Namespace) -> int:
    """The app's window, driven by a timer; prints one JSON line per report interval."""
    import faulthandler

    faulthandler.enable(sys.stderr, all_threads=True)
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from app.sources import FakeCamera
    from app.window import MainWindow
    from engine.runtime.availability import BACKEND_CHOICES, why_unavailable

    application = QApplication.instance() or QApplication(sys.argv[:1])
    settings = QSettings(str(Path(args.home) / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("output_folder", str(Path(args.home) / "recordings"))
    weights = {"slim": Path(args.slim), "base": Path(args.base)}
    window = MainWindow(settings, weights)
    window.resize(1280, 760)
    window.show()
    models = args.models.split(",")
    backends = [
        choice
        for choice in BACKEND_CHOICES
        if choice.label in args.backends.split(",") and not why_unavailable(choice)
    ]
    window.start(None if args.source == "fake" else args.source, str(weights[models[0]]))
    if args.source == "fake":
        window.session.start_source(FakeCamera())
    started = time.monotonic()
    counts: dict[str, int] = {}
    state = {"tick": 0, "errors": 0}
    original_show_error = window.show_error

    def counting_show_error(message: str) -> None:
        state["errors"] += 1
        print(json.dumps({"error": message}), flush=True)
        original_show_error(message)

    window.show_error = counting_show_error
    if hasattr(window, "handlers"):
        window.session.handlers["error"] = counting_show_error

    def act() -> None:
        action = ACTIONS[state["tick"] % len(ACTIONS)]
        state["tick"] += 1
        if action == "record":
            window.session.toggle_recording()
        elif action == "view":
            window.next_view()
        elif action == "seek" and window.session.source is not None and window.session.source.duration:
            window.session.capture.seek((state["tick"] * 0.37 % 1.0) * window.session.source.duration)
        elif action in ("pause", "resume") and window.session.capture.paused == (action == "resume"):
            window.toggle_pause()
        elif action == "step":
            window.step()
        elif action == "model" and len(models) > 1:
            window.session.choose_model(models[(state["tick"] // len(ACTIONS)) % len(models)])
        elif action == "backend" and len(backends) > 1:
            window.session.choose_backend(backends[(state["tick"] // len(ACTIONS)) % len(backends)])
        else:
            return
        counts[action] = counts.get(action, 0) + 1

    def report() -> None:
        capture_threads = getattr(window.session.capture, "live_threads", None)
        print(
            json.dumps(
                {
                    "t": round(time.monotonic() - started, 1),
                    "display_fps": round(window.session.stats.fps("display"), 2),
                    "inference_fps": round(window.session.stats.fps("inferred"), 2),
                    "results": window.session.results_seen,
                    "python_threads": threading.active_count(),
                    "capture_threads": capture_threads,
                    "model": window.session.model_name,
                    "backend": window.session.backend_choice.label,
                    "recording": window.session.recorder is not None,
                    "actions": counts,
                    "errors": state["errors"],
                }
            ),
            flush=True,
        )

    def finish() -> None:
        report()
        window.close()
        application.quit()

    QTimer(window, interval=int(args.action_seconds * 1000), timeout=act).start()
    QTimer(window, interval=int(args.report_seconds * 1000), timeout=report).start()
    QTimer.singleShot(int(args.duration * 1000), finish)
    code = application.exec()
    print(json.dumps({"quit": code}), flush=True)
    return code


# ---------------------------------------------------------------- the parent: watch and check


def proc_status(pid: int) -> dict[str, int]:
    """RSS (MiB) and OS thread count of a running process, from /proc."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "VmRSS":
                values["rss_mib"] = int(value.split()[0]) // 1024
            elif key == "Threads":
                values["os_threads"] = int(value)
    except OSError:
        pass
    return values


def check_recordings(folder: Path) -> list[dict]:
    from engine.media import VideoError, probe, read_frames

    checked = []
    for path in sorted(folder.glob("*.mp4")):
        entry = {"file": path.name, "bytes": path.stat().st_size}
        try:
            frames = sum(1 for _ in read_frames(path))
            entry.update(frames=frames, seconds=round(probe(path).duration, 2), ok=frames > 0)
        except VideoError as error:
            entry.update(ok=False, error=str(error))
        checked.append(entry)
    return checked


def soak(args: argparse.Namespace) -> dict:
    home = Path(tempfile.mkdtemp(prefix="rtformer-soak-"))
    environment = dict(os.environ)
    if not environment.get("DISPLAY"):
        environment["QT_QPA_PLATFORM"] = "offscreen"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--home",
        str(home),
        "--duration",
        str(args.duration),
        "--source",
        args.source,
        "--models",
        args.models,
        "--backends",
        args.backends,
        "--slim",
        args.slim,
        "--base",
        args.base,
        "--report-seconds",
        str(args.report_seconds),
        "--action-seconds",
        str(args.action_seconds),
    ]
    started = time.monotonic()
    child = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    samples: list[dict] = []
    lines: list[dict] = []
    stderr_tail: list[str] = []

    def read_stdout() -> None:
        for line in child.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            record["proc"] = proc_status(child.pid)
            lines.append(record)

    def read_stderr() -> None:
        for line in child.stderr:
            stderr_tail.append(line.rstrip())
            del stderr_tail[:-200]

    readers = [threading.Thread(target=read_stdout), threading.Thread(target=read_stderr)]
    for reader in readers:
        reader.start()
    deadline = started + args.duration + args.grace
    while child.poll() is None and time.monotonic() < deadline:
        samples.append({"t": round(time.monotonic() - started, 1), **proc_status(child.pid)})
        time.sleep(args.report_seconds)
    hung = child.poll() is None
    if hung:
        child.kill()
    code = child.wait()
    for reader in readers:
        reader.join()
    reports = [line for line in lines if "t" in line]
    errors = [line["error"] for line in lines if "error" in line]
    fatal = [line for line in stderr_tail if "Fatal Python error" in line or "Segmentation fault" in line]
    recordings = check_recordings(home / "recordings")
    rss = [sample["rss_mib"] for sample in samples if "rss_mib" in sample]
    steady = rss[len(rss) // 4 :] or rss  # after loading and the first exports
    result = {
        "duration_s": args.duration,
        "wall_s": round(time.monotonic() - started, 1),
        "source": args.source,
        "models": args.models,
        "backends": args.backends,
        "exit_code": code,
        "hung_at_quit": hung,
        "crashed": code != 0 or hung or bool(fatal),
        "fatal_lines": fatal,
        "stderr_tail": stderr_tail[-40:] if code != 0 or fatal else [],
        "rss_mib": {"first": rss[0], "steady_min": min(steady), "max": max(rss), "last": rss[-1]}
        if rss
        else {},
        "os_threads": {
            "max": max((s.get("os_threads", 0) for s in samples), default=0),
            "last": samples[-1].get("os_threads") if samples else None,
        },
        "python_threads_max": max((r["python_threads"] for r in reports), default=0),
        "capture_threads_max": max((r.get("capture_threads") or 0 for r in reports), default=0),
        "display_fps": summary([r["display_fps"] for r in reports[1:]]),
        "inference_fps": summary([r["inference_fps"] for r in reports[1:]]),
        "actions": reports[-1]["actions"] if reports else {},
        "errors": errors[:20],
        "error_count": len(errors),
        "recordings": recordings,
        "recordings_ok": all(entry["ok"] for entry in recordings),
        "timeline": reports,
    }
    result["passed"] = not result["crashed"] and result["recordings_ok"] and bool(recordings)
    return result


def summary(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    return {"min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]}


def main(argv: list[str] | None = None) -> int:
    from engine.resources import camvid_demo_video, shipped_weights

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float)
    length.add_argument("--seconds", type=float)
    parser.add_argument("--source", default=str(camvid_demo_video()), help="a clip, or 'fake'")
    parser.add_argument("--models", default="slim,base", help="switched between, comma-separated")
    parser.add_argument("--backends", default="ONNX Runtime CPU,PyTorch CPU", help="Backend menu labels")
    parser.add_argument("--slim", default=str(shipped_weights()["slim"]))
    parser.add_argument("--base", default=str(shipped_weights()["base"]))
    parser.add_argument("--report-seconds", type=float, default=5.0)
    parser.add_argument("--action-seconds", type=float, default=2.5, help="one action this often")
    parser.add_argument("--grace", type=float, default=60.0, help="seconds allowed for quitting")
    parser.add_argument("-o", "--output", help="write the report as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)
    args.duration = args.seconds or (args.minutes or 1.0) * 60
    result = soak(args)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    brief = {key: value for key, value in result.items() if key not in ("timeline", "stderr_tail")}
    print(json.dumps(brief, indent=2))
    if result["stderr_tail"]:
        print("\n".join(result["stderr_tail"]), file=sys.stderr)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
