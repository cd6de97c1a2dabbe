"""Weights repacked at load for a kernel backend: the file's bits in the order its kernels read best.

A backend's `prepare(w)` returns either the `QTensor` itself or a `PackedTensor`; a forward pass
hands whichever it got back to that backend's `matmul`.  Only matrix products use packed weights
(an embedding lookup reads the file's rows).
"""

from __future__ import annotations

import contextlib
import mmap
from dataclasses import dataclass
from enum import IntEnum

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

    def dequantize(self) -> np.ndarray:
        return self.source.dequantize()


Weight = QTensor | PackedTensor


def anonymous_bytes(n_bytes: int) -> np.ndarray:
    """A writable uint8 array in its own anonymous mapping, in huge pages where the system allows.

    Weights read once per token from end to end: 2 MiB pages spare the TLB a miss every 4 KiB.
    """
    if n_bytes == 0:
        return np.zeros(0, np.uint8)
    buf = mmap.mmap(-1, n_bytes)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        with contextlib.suppress(OSError):  # kernels without transparent huge pages
            buf.madvise(advice)
    return np.frombuffer(buf, np.uint8)
