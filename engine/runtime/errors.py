"""Errors the runtime reports to the user (the CLI prints them, the app shows them)."""


class BackendError(Exception):
    """A backend, device or precision that cannot run here, or a model file it cannot use."""
