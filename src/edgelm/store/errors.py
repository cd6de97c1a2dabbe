"""Errors of the model store: each one line that names the model, file, address or folder at fault."""

from __future__ import annotations

from edgelm.errors import EdgelmError

__all__ = ["ChecksumError", "DownloadError", "StoreError", "UnknownModelError"]


class StoreError(EdgelmError):
    """The model store could not do what was asked; the store is left as it was."""


class UnknownModelError(StoreError, ValueError):
    """A name that is neither a file, a model in the store, a catalogue name nor a Hub reference."""

    def __init__(self, name: str, matches: list[str]) -> None:
        self.name = name
        self.matches = matches
        hint = (
            f"; did you mean {', '.join(matches)}?"
            if matches
            else "; `edgelm list --available` shows the names"
        )
        super().__init__(f"{name}: not a file and not a known model name{hint}")


class DownloadError(StoreError):
    """A transfer failed (no network, refused, HTTP error, cut short); what arrived is kept for a resume."""


class ChecksumError(StoreError):
    """A downloaded file is not the one expected (sha256 or GGUF header); it is thrown away."""
