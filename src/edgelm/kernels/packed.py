"""Weights repacked at load for a kernel backend: the file's bits in the order its kernels read best.

A backend's `prepare(w)` returns either the `QTensor` itself or a `PackedTensor`; a forward pass
hands whichever it got back to that backend's `matmul`.  Only matrix products use packed weights
(an embedding lookup reads the file's rows).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property

import numpy as np

from edgelm.gguf.constants import GGMLType
from edgelm.weights.qtensor import QTensor

__all__ = ["Layout", "PackedTensor", "Weight", "anonymous_bytes"]


class Layout(IntEnum):
    """Byte orders a weight matrix can have (csrc/repack.h)."""

    ROWS = 0  # as in the file: one row after another
    R16 = 1  # groups of 16 rows interleaved block by block: one row per vector lane


@dataclass(frozen=True, eq=False)
class PackedTensor:
    """A weight matrix in a kernel layout: the file's tensor in another order (about its size)."""

    name: str
    ggml_type: GGMLType
    shape: tuple[int, ...]
    data: np.ndarray  # uint8 (n_rows, bytes per row in the layout)
    layout: Layout
    source: QTensor  # the file's tensor (dequantize, rows)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @cached_property
    def kernel_args(self) -> tuple[np.ndarray, int, int, int, int]:
        """(bytes, type, n_rows, k, layout): how the native ops take it, built once."""
        return (self.data, int(self.ggml_type), self.data.shape[0], self.shape[-1], int(self.layout))

    def dequantize(self) -> np.ndarray:
        return self.source.dequantize()


Weight = QTensor | PackedTensor


def anonymous_bytes(n_bytes: int) -> np.ndarray:
    """A writable, zeroed uint8 array in its own private anonymous mapping (not the C heap).

    The kernel frees it whole when the model goes, and it takes base pages: asking for huge pages
    (MADV_HUGEPAGE) made decode ~5% faster but the first touch of 0.5 GB took 0.1-1.4 s instead of a
    steady 0.2 s on a virtual machine, a cost every load would pay.
    """
    if n_bytes == 0:
        return np.zeros(0, np.uint8)
    private = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    # Private where the platform says how: mmap's default shared anonymous memory is shmem.
    buf = mmap.mmap(-1, n_bytes, flags=private) if private else mmap.mmap(-1, n_bytes)
    return np.frombuffer(buf, np.uint8)
