"""The Linux launcher entry and the application icon."""

import shlex
from pathlib import Path

import cv2

from app.main import main


def test_install_desktop_entry_writes_entry_and_icon_in_the_users_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    assert main(["--install-desktop-entry"]) == 0  # and no window: it quits
    entry = tmp_path / "share" / "applications" / "rtformer-studio.desktop"
    fields = dict(line.split("=", 1) for line in entry.read_text().splitlines()[1:] if line)
    assert entry.read_text().startswith("[Desktop Entry]\n")
    assert fields["Type"] == "Application" and fields["Name"] == "RTFormer Studio"
    command = shlex.split(fields["Exec"])
    assert Path(command[0]).is_file() and command[-1] == "%f"  # absolute: the launcher has no PATH
    installed_icon = tmp_path / "share" / "icons" / "hicolor" / "256x256" / "apps" / f"{fields['Icon']}.png"
    assert cv2.imread(str(installed_icon), cv2.IMREAD_UNCHANGED).shape == (256, 256, 4)
    assert str(entry) in capsys.readouterr().out
