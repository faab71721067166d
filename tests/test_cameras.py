"""How FFmpeg is asked to open each camera Qt lists, per platform (FFmpeg's input devices)."""

import pytest

from engine.cameras import camera_input


def test_linux_opens_the_v4l2_device_node():
    assert camera_input("/dev/video0", "USB Camera", "linux") == ("/dev/video0", "v4l2")


def test_windows_opens_the_directshow_friendly_name():
    assert camera_input("\\\\?\\usb#vid_046d", "HD Pro Webcam C920", "win32") == (
        "video=HD Pro Webcam C920",
        "dshow",
    )


def test_macos_opens_the_avfoundation_name_without_audio_never_qts_unique_id():
    name, input_format = camera_input("0x8020000005ac8514", "FaceTime HD Camera", "darwin")
    assert (name, input_format) == ("FaceTime HD Camera:none", "avfoundation")
    assert "0x8020000005ac8514" not in name  # Qt's unique id means nothing to FFmpeg
    with pytest.raises(ValueError, match="index"):
        camera_input("0x1", "2", "darwin")  # a digits-only name would select device index 2


def test_other_platforms_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="freebsd"):
        camera_input("x", "y", "freebsd14")
