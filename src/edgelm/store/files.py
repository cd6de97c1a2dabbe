"""The store's file work that needs no network: hashing, and one-line errors for writes that fail.

Kept apart from the transfers (download.py, registry.py), which are imported only when a pull runs,
so that `import edgelm` does not pay for an HTTP client.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from edgelm.store.errors import StoreError

__all__ = ["CHUNK_BYTES", "Progress", "file_sha256", "storage_error"]

CHUNK_BYTES = 1 << 20

# (bytes done, bytes in all or None): called as bytes arrive.
Progress = Callable[[int, int | None], None]


def file_sha256(path: Path, on_progress: Progress | None = None) -> str:
    h = hashlib.sha256()
    done = 0
    total = path.stat().st_size
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            h.update(block)
            done += len(block)
            if on_progress is not None:
                on_progress(done, total)
    return h.hexdigest()


def storage_error(e: OSError, where: Path) -> StoreError:
    """A one-line error for a write that failed: disk full, read-only, or another OS error."""
    if e.errno == errno.ENOSPC:
        return StoreError(f"{where}: disk full ({_free(where)} free); free some space or set EDGELM_HOME")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreError(f"{where}: cannot write there ({e.strerror}); set EDGELM_HOME to a writable folder")
    return StoreError(f"{where}: {e.strerror or e}")


def _free(where: Path) -> str:
    for p in (where, *where.parents):
        if p.exists():
            return f"{shutil.disk_usage(p).free / 1e6:.0f} MB"
    return "unknown"
