"""RTFormer Studio desktop app (PySide6). The window arrives with the app issue."""
