"""Weights repacked at load for a kernel backend: the file's bits in the order its kernels read best.

A backend's `prepare(w)` returns either the `QTensor` itself or a `PackedTensor`; a forward pass
hands whichever it got back to that backend's `matmul`.  Only matrix products use packed weights
(an embedding lookup reads the file's rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property

import numpy as np

from edgelm.gguf.constants import GGMLType
from edgelm.kernels.arena import anonymous_bytes
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
