"""Pieces of a block composed from the primitive ops: what `Ops.qkv` and `Ops.ffn` compute.

A backend may run a piece as one native call (edgelm.kernels.native); these compositions are the
definition it must match, and serve every backend that has no fused version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgelm.kernels.packed import Weight

if TYPE_CHECKING:
    from edgelm.kernels.ops import Ops

__all__ = ["ffn", "qkv"]


def _project(ops: Ops, x: np.ndarray, w: Weight, bias: np.ndarray | None) -> np.ndarray:
    y = ops.matmul(x, w)
    if bias is not None:
        y += bias  # y is new: no second (T, N) array
    return y


def qkv(
    ops: Ops,
    x: np.ndarray,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    bq: np.ndarray | None,
    bk: np.ndarray | None,
    bv: np.ndarray | None,
    q_norm: np.ndarray | None,
    k_norm: np.ndarray | None,
    eps: float,
    positions: np.ndarray,
    rope_dim: int,
    rope_base: float,
    freq_scale: float,
    factors: np.ndarray | None,
    neox: bool,
    n_heads: int,
    n_kv_heads: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q (T, H, D), k (T, KVH, D), v (T, KVH, Dv) of the normed input x (T, E): projections with
    their biases, each head's RMSNorm of q and k where the model has one, RoPE on q and k."""
    t = x.shape[0]
    q = _project(ops, x, wq, bq).reshape(t, n_heads, -1)
    k = _project(ops, x, wk, bk).reshape(t, n_kv_heads, -1)
    v = _project(ops, x, wv, bv).reshape(t, n_kv_heads, -1)
    if q_norm is not None:
        q = ops.rms_norm(q, q_norm, eps)
    if k_norm is not None:
        k = ops.rms_norm(k, k_norm, eps)
    cos, sin = ops.rope_angles(positions, rope_dim, rope_base, freq_scale, factors)
    return ops.rope(q, cos, sin, neox), ops.rope(k, cos, sin, neox), v


def ffn(ops: Ops, x: np.ndarray, gate: Weight, up: Weight, down: Weight, gelu: bool) -> np.ndarray:
    """down(act(gate(x)) * up(x)) for x (T, E): SwiGLU, or GELU (tanh) gated."""
    g, u = ops.matmul(x, gate), ops.matmul(x, up)  # (T, F) each
    act = ops.gelu_tanh_mul(g, u, out=g) if gelu else ops.silu_mul(g, u, out=g)
    del u
    return ops.matmul(act, down)
