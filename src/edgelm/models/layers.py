"""Layers shared by every architecture, written over the kernel seam.

The per-architecture files compose these; nothing here names an architecture.  Shapes: T tokens,
H query heads, KVH key/value heads, D head width, E model width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgelm.kernels.composite import QKVWeights, Rope
from edgelm.kernels.ops import Ops
from edgelm.kernels.packed import Weight
from edgelm.runtime.kv_cache import LayerCache

__all__ = [
    "AttentionWeights",
    "FFNWeights",
    "Rope",
    "attention",
    "feed_forward",
    "ffn_block_rows",
    "norm",
    "residual",
    "sole_cache",
]

# The feed-forward of a prefill runs on blocks of rows whose (rows, FFN width) f32 intermediates take
# at most this many bytes each (a power of two of rows, within the bounds below).
FFN_BLOCK_BYTES = 3 << 20
FFN_BLOCK_MAX_ROWS = 256
FFN_BLOCK_MIN_ROWS = 64


@dataclass(frozen=True)
class AttentionWeights:
    qkv: QKVWeights
    wo: Weight


@dataclass(frozen=True)
class FFNWeights:
    gate: Weight
    up: Weight
    down: Weight


def norm(ops: Ops, x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return ops.rms_norm(x, weight, eps)


def residual(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x + y, written into y (a layer's fresh output), so no third array is made."""
    return np.add(x, y, out=y)


def sole_cache(segments: list[tuple[int, int, LayerCache]], t: int) -> LayerCache | None:
    """The cache of the one sequence that all t rows belong to, else None (several sequences)."""
    return segments[0][2] if len(segments) == 1 and segments[0][:2] == (0, t) else None


def attention(
    ops: Ops,
    x: np.ndarray,
    positions: np.ndarray,
    w: AttentionWeights,
    segments: list[tuple[int, int, LayerCache]],
    rope: Rope,
    n_heads: int,
    n_kv_heads: int,
    eps: float,
    q_scale: float,
    window: int,
    norm: np.ndarray | None = None,
) -> np.ndarray:
    """Self-attention of x (T, E) at `positions` -> (T, E); x is first RMS-normed with weight `norm`
    (the block's input norm, applied inside the projections' call) unless it is None.

    Projections run on all T rows at once (several sequences batched); each segment
    (start, end, cache) of rows then attends over its own sequence's cache.
    """
    t = x.shape[0]
    q, k, v = ops.qkv(x, w.qkv, positions, rope, n_heads, n_kv_heads, eps, norm)
    one = sole_cache(segments, t)
    start = one.claim(positions) if one is not None else None
    if one is not None and start is not None:  # one sequence, written into its cache by the kernel
        n = one.n_tokens
        out = ops.attention_cached(q, k, v, one.k, one.v, one.pos[:n], start, positions, q_scale, window)
    else:  # per sequence, each through its cache's `append`
        out = np.empty((t, n_heads, v.shape[-1]), np.float32)  # (T, H, Dv)
        for start, end, cache in segments:
            pos = positions[start:end]
            keys, values, key_pos = cache.append(k[start:end], v[start:end], pos)
            out[start:end] = ops.attention(q[start:end], keys, values, pos, key_pos, q_scale, window)
    return ops.matmul(out.reshape(t, -1), w.wo)


def ffn_block_rows(ffn_width: int) -> int:
    """Rows per feed-forward block: a power of two whose (rows, F) f32 intermediates fit the budget."""
    rows = FFN_BLOCK_MAX_ROWS
    while rows > FFN_BLOCK_MIN_ROWS and rows * ffn_width * 4 > FFN_BLOCK_BYTES:
        rows //= 2
    return rows


def feed_forward(
    ops: Ops, x: np.ndarray, w: FFNWeights, gelu: bool, norm: np.ndarray | None = None, eps: float = 0.0
) -> np.ndarray:
    """Gated FFN: down(act(gate(x)) * up(x)), a block of rows at a time; x first RMS-normed with
    weight `norm` and `eps` (in the same native call) unless norm is None.

    The (T, F) intermediates are the largest arrays of a prefill (3 × 10 MB for 512 tokens of a
    0.5B model); blocks bound them and keep them in cache (faster too), and the gate is applied
    in place.
    """
    t = x.shape[0]
    block = ffn_block_rows(w.gate.shape[0])
    if t <= block:
        return ops.ffn(x, w.gate, w.up, w.down, gelu, norm, eps)
    out = np.empty((t, w.down.shape[0]), np.float32)
    for start in range(0, t, block):
        out[start : start + block] = ops.ffn(x[start : start + block], w.gate, w.up, w.down, gelu, norm, eps)
    return out
