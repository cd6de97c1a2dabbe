"""Memory for repacked weights: a private anonymous mapping, on huge pages where the system has them.

A decode step streams every weight once, so with base pages it walks the page tables once per 4 KB
of weights; with 2 MB pages a TLB entry covers 512 times as much.  Measured on Qwen2.5-0.5B Q4_K_M
(two copies of the model in one process, decode steps interleaved): 16.2 ms a token on huge pages
against 17.1 on base pages.

Huge pages come two ways.  `anonymous_bytes` asks for them and touches each page up front: on a
machine that has them ready that costs less than base pages (0.37 GB in ~50 ms instead of ~170).
On a virtual machine whose host has not backed the memory yet, a huge page takes ~5 ms to fault in
(1.1 s for 0.37 GB): after a few such faults the rest of the mapping takes base pages, so a load
never waits on that.  `huge_pages_later` then turns the base pages into huge ones in a background
thread (MADV_COLLAPSE, Linux 6.1 and later) while the model already runs: that takes a core for
about a second per 0.4 GB there (a decode step meanwhile ~45% slower), once per load, so it waits
two seconds first: a one-shot prompt is done by then and never pays.  EDGELM_HUGE_PAGES=0 keeps the
weights on base pages.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import sys
import threading
import time
import weakref

import numpy as np

__all__ = ["anonymous_bytes", "huge_pages_later", "mapping_of"]

HUGE_PAGE_BYTES = 2 << 20
# A huge page's first touch normally costs less than its 512 base pages'; one that takes longer than
# this (a host backing fresh memory) says the rest would too.
SLOW_HUGE_FAULT_S = 0.002
SLOW_HUGE_FAULTS = 3  # that many slow ones and the rest of the mapping takes base pages
# Ask for huge pages at all (the kernel may still give base pages); EDGELM_HUGE_PAGES=0 says no.
HUGE_PAGES = os.environ.get("EDGELM_HUGE_PAGES", "1") != "0"
# `huge_pages_later` waits this long first: a short run (a one-shot prompt) ends before and never
# pays for the copying, which on a virtual machine slows the model's steps while it lasts.
LATER_DELAY_S = 2.0
MADV_COLLAPSE = getattr(mmap, "MADV_COLLAPSE", 25)  # Linux 6.1's number, where mmap does not name it

# Where the mappings this process made start.  A forked child shares its parent's pages: copying
# them into huge pages of its own would double their memory, so the child forgets them.
_made_here: set[int] = set()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_made_here.clear)


def anonymous_bytes(n_bytes: int) -> np.ndarray:
    """A writable, zeroed uint8 array in its own private anonymous mapping (not the C heap), on
    huge pages where they come cheap; the kernel frees it whole when the last view goes."""
    if n_bytes == 0:
        return np.zeros(0, np.uint8)
    private = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    # Private where the platform says how: mmap's default shared anonymous memory is shmem.
    buf = mmap.mmap(-1, n_bytes, flags=private) if private else mmap.mmap(-1, n_bytes)
    out = np.frombuffer(buf, np.uint8)
    if HUGE_PAGES and n_bytes >= HUGE_PAGE_BYTES and hasattr(mmap, "MADV_HUGEPAGE"):
        _touch_huge_pages(buf, out)
    _made_here.add(out.__array_interface__["data"][0])
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


def mapping_of(data: np.ndarray) -> np.ndarray:
    """The array over a whole mapping that `data` (a view of it) looks into."""
    while isinstance(data.base, np.ndarray):
        data = data.base
    return data


def huge_pages_later(data: np.ndarray, delay_s: float = LATER_DELAY_S) -> threading.Thread | None:
    """Starts a background thread that, after `delay_s`, makes huge pages of the whole 2 MB ranges of
    `data` (a view of `anonymous_bytes`' memory, written already) that are not yet; returns it, or
    None where there is nothing to do or no way to do it (not Linux, too small, or memory a parent
    process made before a fork).  Contents stay as they are; readers of a range wait a moment while
    it is copied.  A mapping dropped during the wait is left alone; one in hand is held until the
    thread ends (~5 ms per 2 MB at worst)."""
    if mapping_of(data).__array_interface__["data"][0] not in _made_here:
        return None
    if not HUGE_PAGES or not sys.platform.startswith("linux") or data.nbytes < HUGE_PAGE_BYTES:
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise  # ctypes lets go of the GIL in the call
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    start = data.__array_interface__["data"][0]
    first = -(-start // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
    ranges = range(first, start + data.nbytes - HUGE_PAGE_BYTES + 1, HUGE_PAGE_BYTES)
    if not ranges:
        return None

    owner = weakref.ref(mapping_of(data))  # the wait does not keep a dropped model's memory

    def collapse() -> None:
        time.sleep(delay_s)
        held = owner()  # the mapping stays while its pages are in hand
        if held is None:
            return
        # part of it may have been told to take base pages at load: huge ones are welcome now
        if madvise(ranges[0], len(ranges) * HUGE_PAGE_BYTES, mmap.MADV_HUGEPAGE) != 0:
            return
        for address in ranges:
            if madvise(address, HUGE_PAGE_BYTES, MADV_COLLAPSE) != 0 and ctypes.get_errno() == errno.EINVAL:
                return  # a kernel before 6.1, or huge pages turned off

    thread = threading.Thread(target=collapse, name="edgelm-huge-pages", daemon=True)
    thread.start()
    return thread
