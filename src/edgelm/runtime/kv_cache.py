"""KV caches: one object per layer of one sequence, chosen per layer by the model.

Keys and values are stored as float16, as llama.cpp's default cache does.  Every layer cache has the
same small protocol: `append` new keys/values and get back everything a query may attend to, with the
positions of those keys; `trim` back to a shorter prefix (prefix reuse); `n_tokens`.
"""

from __future__ import annotations

import mmap
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgelm.errors import EdgelmError

if TYPE_CHECKING:
    from edgelm.models.config import ModelConfig

__all__ = [
    "ContextFullError",
    "ContiguousCache",
    "LayerCache",
    "SequenceCache",
    "SlidingWindowCache",
    "sequence_cache_bytes",
]

KV_DTYPE = np.float16
# Position of an empty ring slot: larger than any query position, so causal masking hides it.
_EMPTY = np.iinfo(np.int64).max


def sequence_cache_bytes(cfg: ModelConfig, n_ctx: int) -> int:
    """Bytes of one sequence's KV cache of `n_ctx` tokens, as the model allocates it (sliding-window
    layers hold their window)."""
    per_token = cfg.n_kv_heads * (cfg.head_dim + cfg.head_dim_v) * np.dtype(KV_DTYPE).itemsize
    rows = sum(
        min(cfg.sliding_window, n_ctx) if cfg.is_local_layer(layer) else n_ctx
        for layer in range(cfg.n_layers)
    )
    return rows * per_token


class ContextFullError(EdgelmError):
    """The sequence would grow past the context the cache was sized for."""


class LayerCache(Protocol):
    n_tokens: int
    k: np.ndarray  # (S, KVH, D) float16 storage
    v: np.ndarray  # (S, KVH, Dv)
    pos: np.ndarray  # (S,) position of each row

    def append(
        self, k: np.ndarray, v: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Store k (T, KVH, D), v (T, KVH, Dv); return (keys, values, key positions) to attend over."""
        ...

    def claim(self, positions: np.ndarray) -> int | None:
        """Make room for len(positions) new keys, record their positions, and return the first row they
        go to in `k`/`v`, to be written there (the attention then reads rows [0, n_tokens)); None when
        this cache takes keys only through `append`."""
        ...

    def trim(self, n_tokens: int) -> None: ...

    def can_trim(self, n_tokens: int) -> bool:
        """Whether `trim(n_tokens)` leaves every key a later query may need."""
        ...


def reserve(shape: tuple[int, ...], dtype: type[np.generic] = KV_DTYPE) -> np.ndarray:
    """A zeroed array in its own anonymous mapping: memory becomes resident only where written.

    A cache is sized for the whole context but a sequence fills it from the front; `np.zeros` may
    instead take (and clear) pages the heap already holds, making the whole cache resident at once.
    """
    n_bytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if n_bytes == 0:
        return np.zeros(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, n_bytes), dtype).reshape(shape)


class ContiguousCache:
    """All positions of the sequence, preallocated for `n_ctx` tokens."""

    def __init__(self, n_ctx: int, n_kv_heads: int, head_dim: int, head_dim_v: int) -> None:
        self.k = reserve((n_ctx, n_kv_heads, head_dim))
        self.v = reserve((n_ctx, n_kv_heads, head_dim_v))
        self.pos = reserve((n_ctx,), np.int64)
        self.n_tokens = 0

    def append(
        self, k: np.ndarray, v: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        start = self.claim(positions)
        end = self.n_tokens
        self.k[start:end] = k
        self.v[start:end] = v
        return self.k[:end], self.v[:end], self.pos[:end]

    def claim(self, positions: np.ndarray) -> int:
        start, end = self.n_tokens, self.n_tokens + len(positions)
        if end > len(self.k):
            raise ContextFullError(f"context is full: {end} tokens do not fit in a context of {len(self.k)}")
        self.pos[start:end] = positions
        self.n_tokens = end
        return start

    def trim(self, n_tokens: int) -> None:
        self.n_tokens = min(self.n_tokens, n_tokens)

    def can_trim(self, n_tokens: int) -> bool:
        return True


class SlidingWindowCache:
    """Only the last `window` positions: a ring buffer, so memory does not grow with the context."""

    def __init__(self, window: int, n_kv_heads: int, head_dim: int, head_dim_v: int) -> None:
        self.window = window
        self.k = reserve((window, n_kv_heads, head_dim))
        self.v = reserve((window, n_kv_heads, head_dim_v))
        self.pos = np.full(window, _EMPTY, np.int64)
        self.n_tokens = 0

    def append(
        self, k: np.ndarray, v: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = len(k)
        if t == 1:
            slot = self.n_tokens % self.window
            self.k[slot], self.v[slot], self.pos[slot] = k[0], v[0], positions[0]
            self.n_tokens += 1
            return self.k, self.v, self.pos
        # A chunk of several tokens attends over the ring as it was plus the whole chunk.
        keys = np.concatenate([self.k, k.astype(KV_DTYPE)])
        values = np.concatenate([self.v, v.astype(KV_DTYPE)])
        pos = np.concatenate([self.pos, positions])
        keep = min(t, self.window)
        slots = (self.n_tokens + t - keep + np.arange(keep)) % self.window
        self.k[slots], self.v[slots], self.pos[slots] = k[-keep:], v[-keep:], positions[-keep:]
        self.n_tokens += t
        return keys, values, pos

    def claim(self, positions: np.ndarray) -> int | None:
        return None  # a ring: keys go through `append`

    def trim(self, n_tokens: int) -> None:
        if n_tokens >= self.n_tokens:
            return
        # Positions from n_tokens on are forgotten; the window before them must still be in the ring.
        self.pos[self.pos >= n_tokens] = _EMPTY
        self.n_tokens = n_tokens

    def can_trim(self, n_tokens: int) -> bool:
        oldest_needed = max(0, n_tokens - self.window + 1)
        return n_tokens >= self.n_tokens or bool(np.isin(np.arange(oldest_needed, n_tokens), self.pos).all())


class SequenceCache:
    """The caches of every layer of one sequence, and how many tokens it holds."""

    def __init__(self, layers: list[LayerCache], n_ctx: int) -> None:
        self.layers = layers
        self.n_ctx = n_ctx

    @property
    def n_tokens(self) -> int:
        return self.layers[0].n_tokens if self.layers else 0

    def trim(self, n_tokens: int) -> None:
        for layer in self.layers:
            layer.trim(n_tokens)

    def can_trim(self, n_tokens: int) -> bool:
        return all(layer.can_trim(n_tokens) for layer in self.layers)

    def reset(self) -> None:
        self.trim(0)
