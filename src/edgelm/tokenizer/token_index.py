"""Token text → id for a large vocabulary, in 16 bytes a token.

A `dict` from 150k token strings to ids costs ~11 MB on top of the strings themselves (~10 MB),
for lookups that happen a few times per model load.  `TokenIndex` keeps the strings' hashes sorted
beside their ids and reads the text of a candidate back from the vocabulary to confirm a match.
Over strings left in a mapped file, `TokenIndex.of_stored` hashes their bytes where they lie, in
native code, without decoding a single one (8-16 bytes a token).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from edgelm.gguf.string_array import StringArray

try:
    from edgelm import _native
except ImportError:  # built without a compiler: strings are decoded and hashed in Python
    _native = None

__all__ = ["TokenIndex"]

_NO_IDS = np.zeros(0, np.int64)


class TokenIndex(Mapping[str, int]):
    """A read-only mapping from each token's text to its id (the first id when a text repeats)."""

    __slots__ = ("_hashes", "_ids", "_stored", "_tokens")

    def __init__(self, tokens: Sequence[str], decoded: Sequence[str] | None = None) -> None:
        """`decoded`: the same texts already at hand (hashed instead of reading `tokens` again)."""
        self._tokens = tokens
        self._stored: Any = None  # _native.TextIndex over the stored bytes (see `of_stored`)
        texts = tokens if decoded is None else decoded
        hashes = np.fromiter(map(hash, texts), dtype=np.int64, count=len(tokens))
        order = np.argsort(hashes, kind="stable")  # equal hashes keep id order: the first id wins
        self._hashes = hashes[order]
        self._ids = order.astype(np.int32 if len(tokens) < 2**31 else np.int64)

    @classmethod
    def of_stored(cls, tokens: StringArray) -> TokenIndex | None:
        """An index of strings read from a file that hashes their stored bytes, decoding none.

        None without the extension, or when a string is empty or holds a NUL byte: llama.cpp reads
        those otherwise, so they must be rewritten (and indexed as `str`) first.
        """
        if _native is None:
            return None
        buf, starts, lengths = tokens.spans()
        stored = _native.TextIndex(
            buf, np.ascontiguousarray(starts, np.int64), np.ascontiguousarray(lengths, np.int64)
        )
        if stored.first_not_c_string >= 0:
            return None
        index = cls.__new__(cls)
        index._tokens = tokens
        index._stored = stored
        index._hashes = index._ids = _NO_IDS
        return index

    def _find(self, text: object) -> int:
        if not isinstance(text, str):
            return -1
        if self._stored is not None:
            return self._find_stored(text)
        h = hash(text)
        hashes, ids, tokens = self._hashes, self._ids, self._tokens
        i = int(np.searchsorted(hashes, h))
        while i < len(hashes) and hashes[i] == h:
            tid = int(ids[i])
            if tokens[tid] == text:
                return tid
            i += 1
        return -1

    def _find_stored(self, text: str) -> int:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that no stored bytes decode to
            return -1
        tid = int(self._stored.find(raw))
        # Two texts can share bytes ("\udcc3\udca9" and "é"): the stored token's text decides.
        return tid if tid >= 0 and self._tokens[tid] == text else -1

    def __getitem__(self, text: str) -> int:
        tid = self._find(text)
        if tid < 0:
            raise KeyError(text)
        return tid

    def get(self, text: str, default: int | None = None) -> int | None:  # type: ignore[override]
        tid = self._find(text)
        return default if tid < 0 else tid

    def __contains__(self, text: object) -> bool:
        return self._find(text) >= 0

    def __len__(self) -> int:
        return len(self._tokens)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tokens)

    def first_duplicate(self) -> str | None:
        """A text that two ids share, if any."""
        if self._stored is not None:
            dup = int(self._stored.first_duplicate)
            return None if dup < 0 else self._tokens[dup]
        hashes = self._hashes
        members: dict[int, set[int]] = {}  # a hash shared by several entries -> their positions
        for i in np.flatnonzero(hashes[1:] == hashes[:-1]).tolist():
            members.setdefault(int(hashes[i]), set()).update((i, i + 1))
        for positions in members.values():
            seen: set[str] = set()
            for j in sorted(positions):
                text = self._tokens[int(self._ids[j])]
                if text in seen:
                    return text
                seen.add(text)
        return None
