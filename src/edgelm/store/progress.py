"""A terminal progress bar for pulls (rich), on stderr, shown only where stderr is a terminal."""

from __future__ import annotations

import sys
from typing import Any

from edgelm.store.store import PullEvents

__all__ = ["TerminalProgress"]

_STAGE_TEXT = {"download": "pulling", "unpack": "unpacking", "verify": "verifying"}


class TerminalProgress:
    """PullEvents that draw one bar per stage; a context manager (the bar ends with it)."""

    def __init__(
        self, name: str, *, enabled: bool | None = None, source: str | None = None, quiet: bool = False
    ) -> None:
        self.name = name
        self.source = source
        self.quiet = quiet  # no opening line (a name already stored, or not a name at all)
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> PullEvents:
        where = f" from {self.source}" if self.source else ""
        if not self.quiet:
            print(f"pulling {self.name}{where}", file=sys.stderr, flush=True)
        if self.enabled:
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )
            except ImportError:
                self.enabled = False
            else:
                self._progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    TimeRemainingColumn(),
                    console=Console(stderr=True),
                    transient=False,
                )
                self._progress.start()
        return PullEvents(on_stage=self._stage, on_progress=self._advance, show_pip_progress=self.enabled)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _stage(self, stage: str, total: int | None) -> None:
        text = _STAGE_TEXT.get(stage)
        if text is None:  # a message, not a stage
            print(f"{self.name}: {stage}", file=sys.stderr)
            return
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.update(self._task, visible=self._progress.tasks[-1].completed > 0)
            self._progress.stop_task(self._task)
        if stage == "download" and total is None:
            self._task = None  # pip draws its own bar
            return
        self._task = self._progress.add_task(f"{text} {self.name}", total=total)

    def _advance(self, done: int, total: int | None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total)
