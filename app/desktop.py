"""`rtformer-studio --install-desktop-entry`: a launcher entry and icon for Linux desktops
(freedesktop.org Desktop Entry and Icon Theme specifications), in the user's own folders."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from engine.resources import APP_NAME, icon

ENTRY_NAME = "rtformer-studio.desktop"
ICON_NAME = "rtformer-studio"


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def launcher_command() -> str:
    """The absolute path of the installed `rtformer-studio` script (the desktop starts it
    without our PATH), else this Python running the app module."""
    script = shutil.which("rtformer-studio") or str(Path(sys.argv[0]).resolve())
    if Path(script).name == "rtformer-studio":
        return f'"{script}"'
    return f'"{sys.executable}" -m app.main'


def desktop_entry(command: str) -> str:
    return "\n".join(
        [
            "[Desktop Entry]",
            "Type=Application",
            f"Name={APP_NAME}",
            "GenericName=Live semantic segmentation",
            "Comment=Segment webcams and videos in real time with RTFormer",
            f"Exec={command} %f",
            f"Icon={ICON_NAME}",
            "Terminal=false",
            "Categories=Graphics;Video;Science;",
            "MimeType=video/mp4;video/x-matroska;video/webm;image/png;image/jpeg;",
            "",
        ]
    )


def install_desktop_entry() -> tuple[Path, Path]:
    """Writes the entry and the icon; returns their paths."""
    icon_path = data_home() / "icons" / "hicolor" / "256x256" / "apps" / f"{ICON_NAME}.png"
    icon_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(icon(), icon_path)
    entry_path = data_home() / "applications" / ENTRY_NAME
    entry_path.parent.mkdir(parents=True, exist_ok=True)
    entry_path.write_text(desktop_entry(launcher_command()))
    return entry_path, icon_path
