"""A validating, memory-mapped GGUF reader.

Every count, length and offset in the header is checked against the bytes that are really there
before it is used, so a damaged or hostile file fails with a `ModelFileError` naming the key, tensor
or field, never with a hang, a giant allocation or an error from deep inside.  Numeric metadata
arrays are read with one `np.frombuffer` each, string arrays located by one native walk over their
lengths (a Python loop without the extension), and tensor data is never copied: a 150k-token vocab
parses in a few milliseconds.
"""

from __future__ import annotations

import mmap
import os
import reprlib
import stat
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgelm.errors import ModelFileError
from edgelm.gguf.constants import (
    GGUF_ALIGNMENT_KEY,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_SUPPORTED_VERSIONS,
    TYPE_SIZES,
    GGMLType,
    GGUFValueType,
)
from edgelm.gguf.string_array import StringArray

try:  # the native walk over a string array's lengths; the loop below does the same without it
    from edgelm._native import scan_strings as _scan_strings
except ImportError:
    _scan_strings = None

__all__ = ["GGUFFile", "MetaField", "TensorInfo"]

# ggml tensors have at most four dimensions.
GGML_MAX_DIMS = 4
# Header sizes: magic + version + tensor count + kv count.
_HEADER_BYTES = 4 + 4 + 8 + 8
# The smallest possible key/value pair: key length, type, one-byte value.
_MIN_KV_BYTES = 8 + 4 + 1
# The smallest possible tensor info: name length, n_dims, one dim, type, offset.
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8
# The format's limit on tensor names (GGML_MAX_NAME).
GGUF_MAX_TENSOR_NAME = 64
# Keys quoted in error messages are cut to this many characters: a damaged length can make one huge.
_MAX_QUOTED = 80
# Arrays of arrays are legal but nothing real nests deeper than this; the limit keeps recursion bounded.
_MAX_ARRAY_DEPTH = 8

# Little-endian scalar formats and numpy dtypes of the GGUF value types.
_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_SCALAR_DTYPES: dict[GGUFValueType, np.dtype[Any]] = {
    t: np.dtype(fmt.replace("?", "u1")) for t, fmt in _SCALAR_FORMATS.items()
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_VALUE_TYPES = {int(t): t for t in GGUFValueType}
_GGML_TYPES = {int(t): t for t in GGMLType}


@dataclass(frozen=True)
class MetaField:
    """One metadata key: its value and GGUF types (kept so a file can be re-written faithfully)."""

    # int | float | bool | str | np.ndarray (numeric array) | StringArray | list (nested arrays)
    value: Any
    type: GGUFValueType
    sub_type: GGUFValueType | None = None  # element type of an array


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives in the file and how it is packed."""

    name: str
    ggml_type: GGMLType
    ne: tuple[int, ...]  # ggml order: ne[0] is the contiguous row length
    offset: int  # absolute byte offset in the file
    n_bytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """NumPy order (rows first, contiguous row last)."""
        return tuple(reversed(self.ne))

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.ne:
            n *= d
        return n


def _quoted(key: str) -> str:
    """`key` for an error message, cut short when a damaged length made it long."""
    if len(key) <= _MAX_QUOTED:
        return repr(key)
    return f"{key[:_MAX_QUOTED]!r}... ({len(key)} characters)"


class _Cursor:
    """Bounds-checked little-endian reads over the mapped header."""

    def __init__(self, buf: memoryview, path: str) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        self.path = path

    def fail(self, what: str, detail: str) -> ModelFileError:
        return ModelFileError(self.path, f"{what}: {detail}")

    def past_end(self, what: str, detail: str) -> ModelFileError:
        """`detail` reaches past the last byte: a truncated file, or a damaged count or length."""
        return self.fail(what, f"{detail} past the end of the file ({self.size} bytes; truncated file?)")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.past_end(what, f"needs {n} bytes at offset {self.pos},")

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(v)

    def raw_string(self, what: str) -> bytes:
        n = self.u64(f"{what} (string length)")
        if n > self.size - self.pos:
            raise self.past_end(what, f"string length {n} runs")
        s = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return s

    def string(self, what: str) -> str:
        return self.raw_string(what).decode("utf-8", "surrogateescape")

    def remaining(self) -> int:
        return self.size - self.pos


def _read_value(cur: _Cursor, vtype: GGUFValueType, key: str) -> Any:
    fmt = _SCALAR_FORMATS.get(vtype)
    if fmt is not None:
        n = struct.calcsize(fmt)
        cur.need(n, f"metadata key {_quoted(key)}")
        (v,) = struct.unpack_from(fmt, cur.buf, cur.pos)
        cur.pos += n
        return v
    if vtype == GGUFValueType.STRING:
        return cur.string(f"metadata key {_quoted(key)}")
    if vtype == GGUFValueType.ARRAY:
        value, _ = _read_array(cur, key)
        return value
    raise cur.fail(f"metadata key {_quoted(key)}", f"unknown value type {int(vtype)}")


def _value_type(cur: _Cursor, raw: int, key: str) -> GGUFValueType:
    vtype = _VALUE_TYPES.get(raw)
    if vtype is None:
        valid = ", ".join(t.name for t in GGUFValueType)
        raise cur.fail(f"metadata key {_quoted(key)}", f"unknown value type {raw} (valid: {valid})")
    return vtype


def _read_array(cur: _Cursor, key: str, depth: int = 1) -> tuple[Any, GGUFValueType]:
    if depth > _MAX_ARRAY_DEPTH:
        raise cur.fail(f"metadata key {_quoted(key)}", f"arrays nested more than {_MAX_ARRAY_DEPTH} deep")
    sub_type = _value_type(cur, cur.u32(f"metadata key {_quoted(key)} (array type)"), key)
    count = cur.u64(f"metadata key {_quoted(key)} (array length)")
    dtype = _SCALAR_DTYPES.get(sub_type)
    if dtype is not None:
        n_bytes = count * dtype.itemsize
        if count > cur.remaining() // dtype.itemsize:
            raise cur.past_end(
                f"metadata key {_quoted(key)}", f"array of {count} {sub_type.name} values runs"
            )
        arr = np.frombuffer(cur.buf, dtype=dtype, count=count, offset=cur.pos)
        cur.pos += n_bytes
        if sub_type == GGUFValueType.BOOL:
            arr = arr.astype(bool)
        return arr, sub_type
    # Strings take at least their 8-byte length, nested arrays their type and length.
    min_item = 8 if sub_type == GGUFValueType.STRING else 12
    if count > cur.remaining() // min_item:
        raise cur.past_end(f"metadata key {_quoted(key)}", f"array of {count} {sub_type.name} values runs")
    if sub_type == GGUFValueType.STRING:
        return _read_string_array(cur, count, key), sub_type
    if sub_type == GGUFValueType.ARRAY:
        return [_read_array(cur, key, depth + 1)[0] for _ in range(count)], sub_type
    raise cur.fail(f"metadata key {_quoted(key)}", f"unknown array element type {int(sub_type)}")


def _read_string_array(cur: _Cursor, count: int, key: str) -> StringArray:
    if _scan_strings is None:
        return _read_string_array_py(cur, count, key)
    n_fit, end, bad_length, starts, lengths = _scan_strings(cur.buf, cur.pos, count)
    if n_fit < count:
        if bad_length is None:
            cur.pos = end
            raise cur.past_end(f"metadata key {_quoted(key)}", f"string {n_fit} of {count} starts")
        raise cur.past_end(
            f"metadata key {_quoted(key)}", f"string {n_fit} of {count} has length {bad_length} and runs"
        )
    cur.pos = end
    return StringArray(cur.buf, np.frombuffer(starts, np.int64), np.frombuffer(lengths, np.int64))


def _read_string_array_py(cur: _Cursor, count: int, key: str) -> StringArray:
    # The hot loop of vocab parsing without the extension: locals only, one bounds check per string.
    buf, pos, size = cur.buf, cur.pos, cur.size
    unpack = _U64.unpack_from
    starts = array("q")
    lengths = array("q")
    add_start, add_length = starts.append, lengths.append
    for i in range(count):
        if pos + 8 > size:
            cur.pos = pos
            raise cur.past_end(f"metadata key {_quoted(key)}", f"string {i} of {count} starts")
        (n,) = unpack(buf, pos)
        pos += 8
        if n > size - pos:
            raise cur.past_end(
                f"metadata key {_quoted(key)}", f"string {i} of {count} has length {n} and runs"
            )
        add_start(pos)
        add_length(n)
        pos += n
    cur.pos = pos
    return StringArray(buf, np.frombuffer(starts, np.int64), np.frombuffer(lengths, np.int64))


def _tensor_bytes(cur: _Cursor, name: str, ggml_type: GGMLType, ne: tuple[int, ...]) -> int:
    block_size, type_size = TYPE_SIZES[ggml_type]
    if ne[0] % block_size != 0:
        raise cur.fail(
            f"tensor {name!r}",
            f"row length {ne[0]} is not a multiple of the {ggml_type.name} block size {block_size}",
        )
    n_elements = 1
    for d in ne:
        n_elements *= d
    return n_elements // block_size * type_size


def file_identity(st: os.stat_result) -> tuple[int, int, int]:
    """What tells one file (and one version of it) from another: device, inode, modification time."""
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


class GGUFFile:
    """A GGUF file opened memory-mapped: metadata parsed, tensors located, no tensor data copied."""

    def __init__(
        self,
        path: str,
        version: int,
        alignment: int,
        data_offset: int,
        fields: dict[str, MetaField],
        tensors: dict[str, TensorInfo],
        buffer: mmap.mmap | bytes,
    ) -> None:
        self.path = path
        self.version = version
        self.alignment = alignment
        self.data_offset = data_offset
        self.fields = fields
        self.metadata: dict[str, Any] = {k: f.value for k, f in fields.items()}
        self.tensors = tensors
        self._buffer = buffer
        self.file_size = len(buffer)
        self.identity: tuple[int, int, int] | None = None  # (device, inode, mtime ns) of the mapped file

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> GGUFFile:
        path = os.fspath(path)
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
            raise ModelFileError(path, f"cannot open: {getattr(e, 'strerror', None) or e}") from e
        if not stat.S_ISREG(mode):
            # Opening a FIFO would wait for a writer forever; only regular files can be mapped.
            raise ModelFileError(
                path, f"cannot open: {'a directory' if stat.S_ISDIR(mode) else 'not a regular file'}"
            )
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_size < _HEADER_BYTES:
                    raise ModelFileError(path, f"not a GGUF file: only {st.st_size} bytes")
                buffer: mmap.mmap | bytes = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise ModelFileError(path, f"cannot open: {e.strerror or e}") from e
        f = cls.parse(path, buffer)
        f.identity = file_identity(st)
        return f

    @classmethod
    def parse(cls, path: str, buffer: mmap.mmap | bytes) -> GGUFFile:
        """Parse a whole GGUF image (a mapped file or bytes)."""
        cur = _Cursor(memoryview(buffer), path)
        cur.need(_HEADER_BYTES, "header")
        magic = bytes(cur.buf[:4])
        if magic != GGUF_MAGIC:
            raise ModelFileError(path, f"not a GGUF file: magic is {magic!r}, expected {GGUF_MAGIC!r}")
        cur.pos = 4
        version = cur.u32("version")
        if version & 0xFFFF == 0 and version != 0:
            raise ModelFileError(path, "big-endian GGUF files are not supported")
        if version not in GGUF_SUPPORTED_VERSIONS:
            supported = ", ".join(map(str, GGUF_SUPPORTED_VERSIONS))
            raise ModelFileError(path, f"unsupported GGUF version {version} (supported: {supported})")
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("metadata key count")
        if n_kv > cur.remaining() // _MIN_KV_BYTES:
            raise ModelFileError(path, f"metadata key count {n_kv} is impossible for a {cur.size}-byte file")
        if n_tensors > cur.remaining() // _MIN_TENSOR_INFO_BYTES:
            raise ModelFileError(path, f"tensor count {n_tensors} is impossible for a {cur.size}-byte file")

        fields: dict[str, MetaField] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i} name")
            if key in fields:
                raise ModelFileError(path, f"metadata key {_quoted(key)} appears twice")
            vtype = _value_type(cur, cur.u32(f"metadata key {_quoted(key)} (type)"), key)
            if vtype == GGUFValueType.ARRAY:
                value, sub_type = _read_array(cur, key)
                fields[key] = MetaField(value, vtype, sub_type)
            else:
                fields[key] = MetaField(_read_value(cur, vtype, key), vtype)

        alignment = GGUF_DEFAULT_ALIGNMENT
        if GGUF_ALIGNMENT_KEY in fields:
            alignment = fields[GGUF_ALIGNMENT_KEY].value
            if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
                raise ModelFileError(
                    path,
                    f"metadata key {GGUF_ALIGNMENT_KEY!r}: {reprlib.repr(alignment)} is not a power of two",
                )

        infos = [cls._read_tensor_info(cur, i) for i in range(n_tensors)]
        data_offset = -(-cur.pos // alignment) * alignment
        tensors: dict[str, TensorInfo] = {}
        for name, ggml_type, ne, rel_offset in infos:
            if name in tensors:
                raise ModelFileError(path, f"tensor {name!r} appears twice")
            if rel_offset % alignment:
                raise ModelFileError(
                    path, f"tensor {name!r}: data offset {rel_offset} is not aligned to {alignment}"
                )
            n_bytes = _tensor_bytes(cur, name, ggml_type, ne)
            start = data_offset + rel_offset
            if start + n_bytes > cur.size:
                raise cur.past_end(f"tensor {name!r}", f"data [{start}, {start + n_bytes}) runs")
            tensors[name] = TensorInfo(name, ggml_type, ne, start, n_bytes)
        return cls(path, version, alignment, data_offset, fields, tensors, buffer)

    @staticmethod
    def _read_tensor_info(cur: _Cursor, index: int) -> tuple[str, GGMLType, tuple[int, ...], int]:
        name_bytes = cur.raw_string(f"tensor #{index} name")
        if len(name_bytes) > GGUF_MAX_TENSOR_NAME:
            raise cur.fail(
                f"tensor #{index} name",
                f"{len(name_bytes)} bytes long, more than the format's {GGUF_MAX_TENSOR_NAME}",
            )
        name = name_bytes.decode("utf-8", "surrogateescape")
        what = f"tensor {name!r}"
        n_dims = cur.u32(f"{what} (dimension count)")
        if not 1 <= n_dims <= GGML_MAX_DIMS:
            raise cur.fail(what, f"{n_dims} dimensions (must be 1 to {GGML_MAX_DIMS})")
        ne = tuple(cur.u64(f"{what} (dimension {d})") for d in range(n_dims))
        n_elements = 1
        for d in ne:
            n_elements *= d
        # No tensor can hold more weights than the file has bits (the smallest types pack ~1.5 bits).
        if n_elements == 0 or n_elements > cur.size * 8:
            raise cur.fail(what, f"shape {list(ne)} is impossible for a {cur.size}-byte file")
        raw_type = cur.u32(f"{what} (type)")
        ggml_type = _GGML_TYPES.get(raw_type)
        if ggml_type is None:
            raise cur.fail(what, f"unknown ggml type id {raw_type}")
        offset = cur.u64(f"{what} (data offset)")
        return name, ggml_type, ne, offset

    # -- access --------------------------------------------------------------------------------

    def tensor_data(self, name: str) -> np.ndarray:
        """The packed bytes of tensor `name` as a read-only uint8 view into the mapping."""
        info = self.tensors.get(name)
        if info is None:
            raise ModelFileError(self.path, f"tensor {name!r} not found")
        return np.frombuffer(self._buffer, dtype=np.uint8, count=info.n_bytes, offset=info.offset)

    def release(self, view: np.ndarray) -> None:
        """Drop this process's mapping of the whole pages under `view` (a slice of `tensor_data`).

        For data that was copied out (repacked weights): the pages leave the resident set, stay in the
        page cache, and come back on the next read of them.  A no-op for a file parsed from bytes.
        """
        if not isinstance(self._buffer, mmap.mmap) or view.size == 0:
            return
        start = self._offset_of(view)
        first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages only: neighbours stay mapped
        last = (start + view.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if last > first:
            self._buffer.madvise(mmap.MADV_DONTNEED, first, last - first)

    def _offset_of(self, view: np.ndarray) -> int:
        base = np.frombuffer(self._buffer, dtype=np.uint8, count=1).__array_interface__["data"][0]
        start = view.__array_interface__["data"][0] - base
        if not 0 <= start <= self.file_size - view.nbytes:
            raise ValueError("the view is not inside this file's mapping")
        return start

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors.values())

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def __repr__(self) -> str:
        return (
            f"GGUFFile({self.path!r}, v{self.version}, {len(self.fields)} keys, {len(self.tensors)} tensors)"
        )
