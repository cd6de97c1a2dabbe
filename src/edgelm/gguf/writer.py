"""Streaming GGUF writer: header and metadata first, then each tensor produced and written in turn.

Tensors are produced one at a time by a callback, so writing a 1B-parameter model never holds more
than one tensor in memory.  The file is written to a temporary name and renamed at the end, so a
failure never leaves a half-written file under the requested name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFWriter

from edgelm.errors import ModelFileError
from edgelm.gguf import keys
from edgelm.gguf.constants import GGMLType, GGUFValueType, row_bytes
from edgelm.gguf.reader import MetaField
from edgelm.gguf.string_array import StringArray

__all__ = ["PlannedTensor", "write_gguf"]


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor to write: its final type and shape, and how to produce its bytes when its turn comes."""

    name: str
    ggml_type: GGMLType
    shape: tuple[int, ...]  # NumPy order
    produce: Callable[[], np.ndarray]  # -> packed uint8 (or float32/float16 for F32/F16) of nbytes

    @property
    def nbytes(self) -> int:
        n_rows = int(np.prod(self.shape[:-1], dtype=np.int64))
        return n_rows * row_bytes(self.ggml_type, self.shape[-1])


def _writable(field: MetaField) -> tuple[Any, GGUFValueType, GGUFValueType | None]:
    """A parsed value in the form `GGUFWriter` packs (lists, strings as bytes when not plain UTF-8)."""

    def fix(v: Any, t: GGUFValueType | None) -> Any:
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, str):
            return v.encode("utf-8", "surrogateescape")
        if isinstance(v, StringArray):
            return [v.raw(i) for i in range(len(v))]
        if isinstance(v, list) and t == GGUFValueType.STRING:
            return [s.encode("utf-8", "surrogateescape") for s in v]
        if isinstance(v, list):
            return [fix(x, None) for x in v]
        return v

    return fix(field.value, field.sub_type), field.type, field.sub_type


def write_gguf(
    path: str | os.PathLike[str],
    arch: str,
    fields: dict[str, MetaField],
    tensors: Iterable[PlannedTensor],
    on_tensor: Callable[[PlannedTensor], None] | None = None,
    on_plan: Callable[[list[PlannedTensor]], None] | None = None,
) -> None:
    """Write a GGUF file with `fields` (in order) and `tensors` (in order). `on_plan` is told every
    tensor before the first is produced, `on_tensor` each as it is written (for a progress bar).

    The bytes go to `PATH.partial`, moved to `path` once complete. A path that cannot be written (a
    folder, a missing folder, no permission, a full disk) is a ModelFileError naming it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    _check_output(path)
    planned = list(tensors)
    if on_plan is not None:
        on_plan(planned)
    try:
        writer = GGUFWriter(tmp, arch)  # adds general.architecture itself
    except OSError as e:
        raise ModelFileError(path, f"cannot write the output file ({e.strerror or e})") from None
    try:
        for key, field in fields.items():
            if key == keys.ARCHITECTURE:
                continue
            writer.add_key_value(key, *_writable(field))
        for t in planned:
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.ggml_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in planned:
            data = np.ascontiguousarray(t.produce())
            if data.nbytes != t.nbytes:
                raise ValueError(f"tensor {t.name!r}: produced {data.nbytes} bytes, expected {t.nbytes}")
            writer.write_tensor_data(data)
            if on_tensor is not None:
                on_tensor(t)
        writer.close()
        os.replace(tmp, path)
    except BaseException as e:
        writer.close()
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise ModelFileError(path, f"cannot write the output file ({e.strerror or e})") from None
        raise


def _check_output(path: Path) -> None:
    if path.is_dir():
        raise ModelFileError(path, "is a folder; give the output file's name (e.g. model.gguf)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ModelFileError(path, f"the folder {parent} does not exist")
