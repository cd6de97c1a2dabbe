"""Weights repacked at load for a kernel backend: the file's bits in the order its kernels read best.

A backend's `prepare(w)` returns either the `QTensor` itself or a `PackedTensor`; a forward pass
hands whichever it got back to that backend's `matmul`.  Only matrix products use packed weights
(an embedding lookup reads the file's rows).
"""

from __future__ import annotations

import mmap
import time
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


HUGE_PAGE_BYTES = 2 << 20
# A huge page's first touch normally costs less than its 512 base pages'; one that takes longer than
# this (a virtual machine's host backing fresh memory: ~5 ms each) says the rest would too.
SLOW_HUGE_FAULT_S = 0.002
SLOW_HUGE_FAULTS = 3  # that many slow ones and the rest of the mapping takes base pages
HUGE_PAGES = True  # ask for huge pages at all (the kernel may still give base pages)


def anonymous_bytes(n_bytes: int) -> np.ndarray:
    """A writable, zeroed uint8 array in its own private anonymous mapping (not the C heap).

    The kernel frees it whole when the model goes.  Where the system has transparent huge pages the
    mapping asks for them (MADV_HUGEPAGE) and touches each one here: matrix products then stream
    their weights with a TLB entry per 2 MB instead of a page walk per 4 KB (Qwen2.5-0.5B Q4_K_M
    decode 6-9% faster, and its 0.37 GB arena touched in ~50 ms instead of ~170).  On a virtual
    machine a huge page of memory the host has not backed yet takes ~5 ms to fault in (1.1 s for
    0.37 GB): after a few such faults the rest of the mapping takes base pages, so a load never
    pays that.
    """
    if n_bytes == 0:
        return np.zeros(0, np.uint8)
    private = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    # Private where the platform says how: mmap's default shared anonymous memory is shmem.
    buf = mmap.mmap(-1, n_bytes, flags=private) if private else mmap.mmap(-1, n_bytes)
    out = np.frombuffer(buf, np.uint8)
    if HUGE_PAGES and n_bytes >= HUGE_PAGE_BYTES and hasattr(mmap, "MADV_HUGEPAGE"):
        _touch_huge_pages(buf, out)
    return out


def _touch_huge_pages(buf: mmap.mmap, out: np.ndarray) -> None:
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # a kernel without transparent huge pages
        return
    slow = 0
    for offset in range(0, out.shape[0], HUGE_PAGE_BYTES):
        start = time.perf_counter()
        out[offset] = 0  # a write fault: the page (huge where the kernel can) is mapped, zeroed
        if time.perf_counter() - start > SLOW_HUGE_FAULT_S:
            slow += 1
            if slow >= SLOW_HUGE_FAULTS:
                rest = offset + HUGE_PAGE_BYTES
                if rest < out.shape[0] and hasattr(mmap, "MADV_NOHUGEPAGE"):
                    buf.madvise(mmap.MADV_NOHUGEPAGE, rest, out.shape[0] - rest)
                return
