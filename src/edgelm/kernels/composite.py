"""Pieces of a block composed from the primitive ops: what `Ops.qkv`, `Ops.ffn` and `Ops.block` compute.

A backend may run a piece as one native call (edgelm.kernels.native); these compositions are the
definition it must match, and serve every backend that has no fused version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgelm.kernels.packed import Weight

if TYPE_CHECKING:
    from edgelm.kernels.ops import Ops

__all__ = ["DecoderBlock", "QKVWeights", "Rope", "attention_cached", "block", "ffn", "qkv"]


def _project(ops: Ops, x: np.ndarray, w: Weight, bias: np.ndarray | None) -> np.ndarray:
    y = ops.matmul(x, w)
    if bias is not None:
        y += bias  # y is new: no second (T, N) array
    return y


@dataclass(frozen=True)
class Rope:
    """How one layer rotates q and k."""

    dim: int  # leading dims of each head that rotate
    base: float
    neox: bool  # rotate (x[i], x[i + dim/2]) instead of adjacent pairs
    freq_scale: float = 1.0
    factors: np.ndarray | None = None  # per-frequency divisors (Llama 3 scaling)


@dataclass(frozen=True)
class QKVWeights:
    """The projections of a block's attention input, with what the model adds to them."""

    wq: Weight
    wk: Weight
    wv: Weight
    bq: np.ndarray | None = None
    bk: np.ndarray | None = None
    bv: np.ndarray | None = None
    q_norm: np.ndarray | None = None  # per-head RMSNorm weight (D,)
    k_norm: np.ndarray | None = None


def qkv(
    ops: Ops,
    x: np.ndarray,
    w: QKVWeights,
    positions: np.ndarray,
    rope: Rope,
    n_heads: int,
    n_kv_heads: int,
    eps: float,
    norm: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q (T, H, D), k (T, KVH, D), v (T, KVH, Dv) of the block input x (T, E): its RMSNorm with weight
    `norm` (E,) unless None (x already normed), projections with their biases, each head's RMSNorm
    of q and k where the model has one, RoPE on q and k."""
    t = x.shape[0]
    if norm is not None:
        x = ops.rms_norm(x, norm, eps)
    q = _project(ops, x, w.wq, w.bq).reshape(t, n_heads, -1)
    k = _project(ops, x, w.wk, w.bk).reshape(t, n_kv_heads, -1)
    v = _project(ops, x, w.wv, w.bv).reshape(t, n_kv_heads, -1)
    if w.q_norm is not None:
        q = ops.rms_norm(q, w.q_norm, eps)
    if w.k_norm is not None:
        k = ops.rms_norm(k, w.k_norm, eps)
    cos, sin = ops.rope_angles(positions, rope.dim, rope.base, rope.freq_scale, rope.factors)
    return ops.rope(q, cos, sin, rope.neox), ops.rope(k, cos, sin, rope.neox), v


def attention_cached(
    ops: Ops,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    key_pos: np.ndarray,
    start: int,
    q_pos: np.ndarray,
    scale: float,
    window: int,
) -> np.ndarray:
    """Store k (T, KVH, D), v (T, KVH, Dv) at rows [start, start + T) of the f16 caches, then attend q
    (T, H, D) over their first len(key_pos) rows (keys at positions key_pos)."""
    n = len(key_pos)
    k_cache[start : start + len(k)] = k
    v_cache[start : start + len(v)] = v
    return ops.attention(q, k_cache[:n], v_cache[:n], q_pos, key_pos, scale, window)


def ffn(
    ops: Ops,
    x: np.ndarray,
    gate: Weight,
    up: Weight,
    down: Weight,
    gelu: bool,
    norm: np.ndarray | None = None,
    eps: float = 0.0,
) -> np.ndarray:
    """down(act(gate(x)) * up(x)) for x (T, E): SwiGLU, or GELU (tanh) gated; x first RMS-normed
    with weight `norm` (E,) and `eps` unless norm is None."""
    if norm is not None:
        x = ops.rms_norm(x, norm, eps)
    g, u = ops.matmul(x, gate), ops.matmul(x, up)  # (T, F) each
    act = ops.gelu_tanh_mul(g, u, out=g) if gelu else ops.silu_mul(g, u, out=g)
    del u
    return ops.matmul(act, down)


@dataclass(frozen=True)
class DecoderBlock:
    """A pre-norm decoder block (Llama, Qwen2/3, SmolLM2): x + attn(norm(x)), then + ffn(norm(.))."""

    attn_norm: np.ndarray  # (E,)
    qkv: QKVWeights
    wo: Weight
    ffn_norm: np.ndarray  # (E,)
    gate: Weight
    up: Weight
    down: Weight
    rope: Rope
    n_heads: int
    n_kv_heads: int
    eps: float  # of every RMSNorm of the block
    q_scale: float
    window: int  # sliding window; 0 = the whole context
    gelu: bool  # tanh-GELU gated FFN instead of SwiGLU


def block(
    ops: Ops,
    b: DecoderBlock,
    x: np.ndarray,
    positions: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    key_pos: np.ndarray,
    start: int,
) -> np.ndarray:
    """x (T, E), one sequence's rows at `positions`, through the block: its keys and values stored at
    rows [start, start + T) of the f16 caches, attention over their first len(key_pos) rows."""
    q, k, v = ops.qkv(x, b.qkv, positions, b.rope, b.n_heads, b.n_kv_heads, b.eps, b.attn_norm)
    out = ops.attention_cached(q, k, v, k_cache, v_cache, key_pos, start, positions, b.q_scale, b.window)
    h = ops.matmul(out.reshape(x.shape[0], -1), b.wo)
    x = np.add(x, h, out=h)
    y = ops.ffn(x, b.gate, b.up, b.down, b.gelu, b.ffn_norm, b.eps)
    return np.add(x, y, out=y)
