"""Token text → id for a large vocabulary, in 16 bytes a token.

A `dict` from 150k token strings to ids costs ~11 MB on top of the strings themselves (~10 MB),
for lookups that happen a few times per model load.  `TokenIndex` keeps the strings' hashes sorted
beside their ids and reads the text of a candidate back from the vocabulary to confirm a match.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

__all__ = ["TokenIndex"]


class TokenIndex(Mapping[str, int]):
    """A read-only mapping from each token's text to its id (the first id when a text repeats)."""

    __slots__ = ("_hashes", "_ids", "_tokens")

    def __init__(self, tokens: Sequence[str], decoded: Sequence[str] | None = None) -> None:
        """`decoded`: the same texts already at hand (hashed instead of reading `tokens` again)."""
        self._tokens = tokens
        texts = tokens if decoded is None else decoded
        hashes = np.fromiter(map(hash, texts), dtype=np.int64, count=len(tokens))
        order = np.argsort(hashes, kind="stable")  # equal hashes keep id order: the first id wins
        self._hashes = hashes[order]
        self._ids = order.astype(np.int32 if len(tokens) < 2**31 else np.int64)

    def _find(self, text: object) -> int:
        if not isinstance(text, str):
            return -1
        h = hash(text)
        hashes, ids, tokens = self._hashes, self._ids, self._tokens
        i = int(np.searchsorted(hashes, h))
        while i < len(hashes) and hashes[i] == h:
            tid = int(ids[i])
            if tokens[tid] == text:
                return tid
            i += 1
        return -1

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
