"""Progress bars (rich, on stderr, where stderr is a terminal) for commands that write model files."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from edgelm.gguf.writer import PlannedTensor

__all__ = ["TensorProgress", "loading", "stage_log", "tensor_progress"]


@dataclass
class TensorProgress:
    """The two callbacks `write_gguf` takes: the plan (the bar's total, in bytes), then each tensor."""

    bar: Any = None
    task: Any = None

    def on_plan(self, planned: list[PlannedTensor]) -> None:
        if self.bar is not None:
            self.bar.update(self.task, total=sum(t.nbytes for t in planned))

    def on_tensor(self, tensor: PlannedTensor) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=tensor.nbytes, info=tensor.name)


@contextmanager
def tensor_progress(description: str, *, enabled: bool | None = None) -> Iterator[TensorProgress]:
    """A bar of the bytes written, with the tensor at hand; nothing where stderr is not a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield TensorProgress()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        yield TensorProgress(bar, bar.add_task(description, total=None, info=""))


@contextmanager
def loading(what: str, *, enabled: bool | None = None) -> Iterator[None]:
    """A spinner while a model loads (its weights read and repacked), where stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(f"loading {what}", spinner="dots"):
        yield


@contextmanager
def stage_log(what: str, *, enabled: bool | None = None) -> Iterator[Callable[[str], None]]:
    """A `log(line)` for a long command: each line printed, and on a terminal a spinner below them
    with the stage at hand (the latest line ending in "...")."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield print
        return
    from rich.console import Console

    console = Console(stderr=True)
    out = Console(highlight=False, soft_wrap=True)
    with console.status(what, spinner="dots") as status:

        def log(line: str) -> None:
            out.print(line, markup=False)
            if line.rstrip().endswith("..."):
                status.update(f"{what}: {line.rstrip(' .')}")

        yield log
