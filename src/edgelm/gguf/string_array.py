"""String arrays of GGUF metadata, left in the mapped file and decoded one string at a time.

A 150k-token vocabulary is two such arrays (tokens and merges).  As Python `str` objects they take
~20 MB for the life of the model; here they take the 12 bytes per string of their positions, and a
string is decoded when it is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np

__all__ = ["StringArray", "is_string_list"]

_ENCODING = "utf-8"
_ERRORS = "surrogateescape"  # bytes that are not UTF-8 survive a decode/encode round trip


class StringArray(Sequence[str]):
    """A read-only sequence of strings stored as (offset, length) spans of a buffer."""

    __slots__ = ("_buf", "_lengths", "_starts")

    def __init__(self, buf: memoryview | bytes, starts: np.ndarray, lengths: np.ndarray) -> None:
        if starts.shape != lengths.shape or starts.ndim != 1:
            raise ValueError("starts and lengths must be 1-D arrays of one length")
        self._buf = buf
        self._starts = starts
        self._lengths = lengths

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self._decode(i) for i in range(*index.indices(len(self)))]
        n = len(self._starts)
        i = index.__index__()
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"string index {index} out of range for {n} strings")
        return self._decode(i)

    def _decode(self, i: int) -> str:
        start = int(self._starts[i])
        return str(self._buf[start : start + int(self._lengths[i])], _ENCODING, _ERRORS)

    def raw(self, index: int) -> bytes:
        """The stored bytes of string `index`."""
        start = int(self._starts[index])
        return bytes(self._buf[start : start + int(self._lengths[index])])

    def __iter__(self) -> Iterator[str]:
        buf = self._buf
        for start, n in zip(self._starts.tolist(), self._lengths.tolist(), strict=True):
            yield str(buf[start : start + n], _ENCODING, _ERRORS)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (StringArray, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are unhashable

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self[:3])
        more = ", ..." if len(self) > 3 else ""
        return f"StringArray([{head}{more}], {len(self)} strings)"

    def spans(self) -> tuple[memoryview | bytes, np.ndarray, np.ndarray]:
        """The buffer and each string's start and length in it (int64 arrays when read from a file),
        for code that reads the stored bytes in bulk without decoding them."""
        return self._buf, self._starts, self._lengths

    @property
    def nbytes(self) -> int:
        """Bytes of all the strings together."""
        return int(self._lengths.sum())


def is_string_list(value: object) -> bool:
    """Whether a metadata value is an array of strings (parsed lazily or built as a list)."""
    if isinstance(value, StringArray):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
