"""`QTensor`: a tensor kept in its GGUF quantization, usually a read-only view into the mapped file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgelm.gguf.constants import BLOCK_LAYOUTS, GGMLType, row_bytes
from edgelm.weights.dequant import dequantize

__all__ = ["QTensor"]


@dataclass(frozen=True)
class FileRows:
    """Where a tensor's rows lie in its file, to read a few of them with pread rather than the mapping.

    A lookup in a large table (an embedding) through the mapping makes resident the file's large
    pages around every row it reads: tens of MB for a prompt.  Reading the rows maps nothing.
    """

    fd: int  # open for reading as long as the model is
    offset: int  # of the tensor's first byte


@dataclass(frozen=True, eq=False)
class QTensor:
    """Packed weights: `data` holds the GGUF blocks, one row of `shape[-1]` weights per data row."""

    name: str
    ggml_type: GGMLType
    shape: tuple[int, ...]  # NumPy order: (rows..., row length)
    data: np.ndarray  # uint8 (n_rows, row_bytes), usually a read-only view into the file
    layout: ClassVar[int] = 0  # the bytes in the file's order (kernels may repack: kernels.packed)

    @classmethod
    def from_buffer(cls, name: str, ggml_type: GGMLType, shape: tuple[int, ...], raw: np.ndarray) -> QTensor:
        """Wrap packed bytes (any layout) without copying."""
        if ggml_type not in BLOCK_LAYOUTS:
            raise ValueError(f"tensor {name!r}: unsupported type {ggml_type.name}")
        n_cols = shape[-1]
        block = BLOCK_LAYOUTS[ggml_type].block_size
        if n_cols % block:
            raise ValueError(
                f"tensor {name!r}: row length {n_cols} is not a multiple of "
                f"the {ggml_type.name} block size {block}"
            )
        n_rows = int(np.prod(shape[:-1], dtype=np.int64))
        rb = row_bytes(ggml_type, n_cols)
        if raw.size != n_rows * rb:
            raise ValueError(f"tensor {name!r}: {raw.size} bytes for shape {shape}, expected {n_rows * rb}")
        return cls(name, ggml_type, tuple(shape), raw.reshape(n_rows, rb))

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @property
    def row_bytes(self) -> int:
        return row_bytes(self.ggml_type, self.shape[-1])

    def dequantize(self) -> np.ndarray:
        """The weights as float32 of `shape` (a new array)."""
        return dequantize(self.data, self.ggml_type, self.shape)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Dequantize only the given rows (e.g. an embedding lookup): float32 (len(indices), shape[-1])."""
        picked = self.data[np.asarray(indices, dtype=np.int64)]
        return dequantize(picked, self.ggml_type, (len(picked), self.shape[-1]))

    def __repr__(self) -> str:
        return f"QTensor({self.name!r}, {self.ggml_type.name}, shape={self.shape})"
