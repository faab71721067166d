"""Soak the real window: play a clip or the fake camera for N minutes while recording
on and off, switching models, backends and input sizes, seeking, pausing, stepping and changing
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
from itertools import chain
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
    "input size",
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

    application = QApplication.instance() or QApplication(sys.argv[:1])
    settings = QSettings(str(Path(args.home) / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("output_folder", str(Path(args.home) / "recordings"))
    weights = {"slim": Path(args.slim), "base": Path(args.base)}
    window = MainWindow(settings, weights)
    window.resize(1280, 760)
    window.show()
    driver = SoakDriver(window, args.models.split(","), args.backends.split(","))
    window.start(None if args.source == "fake" else args.source, str(weights[driver.models[0]]))
    if args.source == "fake":
        window.session.start_source(FakeCamera())

    def finish() -> None:
        driver.report()
        window.close()
        application.quit()

    QTimer(window, interval=int(args.action_seconds * 1000), timeout=driver.act).start()
    QTimer(window, interval=int(args.report_seconds * 1000), timeout=driver.report).start()
    QTimer.singleShot(int(args.duration * 1000), finish)
    code = application.exec()
    print(json.dumps({"quit": code}), flush=True)
    return code


class SoakDriver:
    """Does what a user does, one action per tick (ACTIONS in turn), counts the errors the
    window shows, and prints the state as JSON lines."""

    def __init__(self, window, models: list[str], backend_labels: list[str]) -> None:
        from engine.runtime import available

        self.window, self.session, self.models = window, window.session, models
        self.backends = [c for c, reason in available() if c.label in backend_labels and not reason]
        self.started = time.monotonic()
        self.counts: dict[str, int] = {}
        self.tick = self.errors = 0
        self.show_error = window.show_error
        # Both ways errors reach the window: the session's mailbox handler and direct calls.
        window.show_error = self.session.handlers["error"] = self.count_error

    def count_error(self, message: str) -> None:
        self.errors += 1
        print(json.dumps({"error": message}), flush=True)
        self.show_error(message)

    def act(self) -> None:
        window, session = self.window, self.session
        action = ACTIONS[self.tick % len(ACTIONS)]
        self.tick += 1
        turn = self.tick // len(ACTIONS)
        if action == "record":
            session.toggle_recording()
        elif action == "view":
            window.next_view()
        elif action == "seek" and session.source is not None and session.source.duration:
            session.seek_fraction(self.tick * 0.37 % 1.0)
        elif action in ("pause", "resume") and session.capture.paused == (action == "resume"):
            window.toggle_pause()
        elif action == "step":
            window.step()
        elif action == "model" and len(self.models) > 1:
            session.choose_model(self.models[turn % len(self.models)])
        elif action == "backend" and len(self.backends) > 1:
            session.choose_backend(self.backends[turn % len(self.backends)])
        elif action == "input size":
            from engine.runtime import INPUT_SCALES

            session.choose_input_scale(INPUT_SCALES[(turn + 1) % len(INPUT_SCALES)])
        else:
            return
        self.counts[action] = self.counts.get(action, 0) + 1

    def report(self) -> None:
        session = self.session
        state = {
            "t": round(time.monotonic() - self.started, 1),
            "display_fps": round(session.stats.fps("display"), 2),
            "inference_fps": round(session.stats.fps("inferred"), 2),
            "results": session.results_seen,
            "python_threads": threading.active_count(),
            "capture_threads": getattr(session.capture, "live_threads", None),
            "model": session.model_name,
            "backend": session.backend_choice.label,
            "recording": session.recorder is not None,
            "actions": self.counts,
            "errors": self.errors,
        }
        print(json.dumps(state), flush=True)


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
    started = time.monotonic()
    child = subprocess.Popen(
        child_command(args, home),
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watched = watch(child, started + args.duration + args.grace, args.report_seconds)
    result = {
        "duration_s": args.duration,
        "wall_s": round(time.monotonic() - started, 1),
        "source": args.source,
        "models": args.models,
        "backends": args.backends,
        **summarise(watched, home / "recordings"),
    }
    result["passed"] = not result["crashed"] and result["recordings_ok"] and bool(result["recordings"])
    return result


def child_command(args: argparse.Namespace, home: Path) -> list[str]:
    options = {
        "--home": str(home),
        "--duration": str(args.duration),
        "--source": args.source,
        "--models": args.models,
        "--backends": args.backends,
        "--slim": args.slim,
        "--base": args.base,
        "--report-seconds": str(args.report_seconds),
        "--action-seconds": str(args.action_seconds),
    }
    return [sys.executable, str(Path(__file__).resolve()), "--child", *chain.from_iterable(options.items())]


def watch(child: subprocess.Popen, deadline: float, interval: float) -> dict:
    """The child's JSON lines, /proc samples every `interval` s and stderr's tail, until it
    exits or `deadline` passes (then it is killed: hung)."""
    started = time.monotonic()
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
    while child.poll() is None and time.monotonic() < deadline:
        samples.append({"t": round(time.monotonic() - started, 1), **proc_status(child.pid)})
        time.sleep(interval)
    hung = child.poll() is None
    if hung:
        child.kill()
    code = child.wait()
    for reader in readers:
        reader.join()
    return {"code": code, "hung": hung, "samples": samples, "lines": lines, "stderr_tail": stderr_tail}


def summarise(watched: dict, recordings_folder: Path) -> dict:
    """Crashes, memory, threads, FPS, errors and the decoded recordings of one soak."""
    code, hung, samples, lines = watched["code"], watched["hung"], watched["samples"], watched["lines"]
    stderr_tail = watched["stderr_tail"]
    reports = [line for line in lines if "t" in line]
    errors = [line["error"] for line in lines if "error" in line]
    fatal = [line for line in stderr_tail if "Fatal Python error" in line or "Segmentation fault" in line]
    recordings = check_recordings(recordings_folder)
    rss = [sample["rss_mib"] for sample in samples if "rss_mib" in sample]
    steady = rss[len(rss) // 4 :] or rss  # after loading and the first exports
    return {
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
