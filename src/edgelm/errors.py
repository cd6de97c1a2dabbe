"""Errors raised for bad input the user hands us."""

from __future__ import annotations

import os


class EdgelmError(Exception):
    """Base class of every error edgelm raises on purpose."""


class ModelFileError(EdgelmError, ValueError):
    """A model file that cannot be used: names the file and the tensor, key or field at fault."""

    def __init__(self, path: str | os.PathLike[str] | None, message: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.detail = message
        super().__init__(f"{self.path}: {message}" if self.path else message)
