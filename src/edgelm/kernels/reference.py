"""NumPy reference kernels.

They compute what llama.cpp's CPU backend computes, including where it rounds: a matrix product first
quantizes the activations to the weight type's companion "vec_dot" type (Q8_0 for Q8_0/Q4_0/Q5_0,
Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants, F16 for F16, BF16 for BF16), and attention reads an F16
KV cache with the query and the attention weights rounded to F16.  Matching those roundings keeps
edgelm's logits within float-summation noise of llama.cpp's, and gives the native kernels an exact
oracle.
"""

from __future__ import annotations

import os

import numpy as np

from edgelm.gguf.constants import QK, QK_K, GGMLType
from edgelm.weights.dequant import dequantize
from edgelm.weights.qtensor import FileRows, QTensor

__all__ = [
    "attention",
    "gelu_tanh",
    "gelu_tanh_mul",
    "matmul",
    "quantize_activations",
    "rms_norm",
    "rope",
    "silu",
    "silu_mul",
]

_F32 = np.float32
_Q8_MAX = _F32(127.0)

# Activations are quantized to blocks of this many values before the dot product with each type.
_ACTIVATION_BLOCK: dict[GGMLType, int] = {
    GGMLType.F32: 0,  # no rounding
    GGMLType.F16: -1,  # rounded to f16
    GGMLType.BF16: -2,  # rounded to bf16
    GGMLType.Q8_0: QK,
    GGMLType.Q4_0: QK,
    GGMLType.Q4_1: QK,
    GGMLType.Q5_0: QK,
    GGMLType.Q5_1: QK,
    GGMLType.Q2_K: QK_K,
    GGMLType.Q3_K: QK_K,
    GGMLType.Q4_K: QK_K,
    GGMLType.Q5_K: QK_K,
    GGMLType.Q6_K: QK_K,
}


def _q8_blocks(x: np.ndarray, block: int) -> np.ndarray:
    """Round rows of x to 8-bit blocks with an f16 scale (Q8_0/Q8_1): d = amax/127, q = round(x/d)."""
    b = x.reshape(-1, block)
    amax = np.abs(b).max(axis=1)
    d = amax / _Q8_MAX
    inv = np.divide(_Q8_MAX, amax, out=np.zeros_like(amax), where=amax != 0)
    q = np.rint(b * inv[:, None])
    d16 = d.astype(np.float16).astype(_F32)
    return (q * d16[:, None]).reshape(x.shape)


def _q8_k_blocks(x: np.ndarray) -> np.ndarray:
    """Round rows of x to Q8_K: 256-value blocks, scale = -(signed max)/127 kept in f32."""
    b = x.reshape(-1, QK_K)
    n = b.shape[0]
    a = np.abs(b)
    signed_max = b[np.arange(n), a.argmax(axis=1)]
    iscale = np.divide(_F32(-127.0), signed_max, out=np.zeros(n, _F32), where=signed_max != 0)
    q = np.minimum(np.rint(b * iscale[:, None]), _Q8_MAX)
    d = np.divide(_F32(1.0), iscale, out=np.zeros(n, _F32), where=iscale != 0)
    return (q * d[:, None]).reshape(x.shape)


def quantize_activations(x: np.ndarray, weight_type: GGMLType) -> np.ndarray:
    """x (T, K) float32 as the dot product with a `weight_type` matrix sees it."""
    block = _ACTIVATION_BLOCK[weight_type]
    if block == 0:
        return x
    if block == -1:
        return x.astype(np.float16).astype(_F32)
    if block == -2:
        bits = x.astype(_F32).view(np.uint32)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & np.uint32(0xFFFF0000)
        return rounded.view(_F32)
    if block == QK_K:
        return _q8_k_blocks(x)
    return _q8_blocks(x, block)


def matmul(x: np.ndarray, w: QTensor) -> np.ndarray:
    """x (T, K) @ w (N, K).T -> (T, N), weights dequantized on the fly."""
    xq = quantize_activations(np.ascontiguousarray(x, dtype=_F32), w.ggml_type)
    return (xq.astype(np.float64) @ w.dequantize().T.astype(np.float64)).astype(_F32)


def embedding(w: QTensor, ids: np.ndarray, rows: FileRows | None = None) -> np.ndarray:
    """Rows `ids` of w dequantized (an embedding lookup): float32 (len(ids), K); read from the file
    with pread when `rows` says where w lies in it."""
    if rows is None:
        return w.rows(ids)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    n_rows, row_bytes = w.data.shape
    if ids.size and (ids.min() < 0 or ids.max() >= n_rows):
        raise IndexError(f"row index out of range for {w.name!r} ({n_rows} rows)")
    packed = np.empty((len(ids), row_bytes), np.uint8)
    for i, r in enumerate(ids.tolist()):
        raw = os.pread(rows.fd, row_bytes, rows.offset + r * row_bytes)
        if len(raw) != row_bytes:
            raise OSError(f"reading rows of {w.name!r} failed: the file is shorter than it says")
        packed[i] = np.frombuffer(raw, np.uint8)
    return dequantize(packed, w.ggml_type, (len(ids), w.shape[-1]))


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis: float32 squares summed in float64, the rest in float32 (as ggml)."""
    mean = (np.square(x).astype(np.float64).sum(axis=-1, keepdims=True) / x.shape[-1]).astype(_F32)
    scale = _F32(1.0) / np.sqrt(mean + _F32(eps))
    return (x * scale) * weight


def rope_angles(
    positions: np.ndarray,
    rope_dim: int,
    base: float,
    freq_scale: float = 1.0,
    factors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin (T, rope_dim/2) of RoPE at `positions`: theta = p * scale * base^(-2i/d) / factor_i."""
    theta_scale = _F32(base) ** (_F32(-2.0) / _F32(rope_dim))
    inv_freq = np.cumprod(np.full(rope_dim // 2, theta_scale, dtype=_F32), dtype=_F32) / theta_scale
    theta = positions.astype(_F32)[:, None] * _F32(freq_scale) * inv_freq[None, :]
    if factors is not None:
        theta = theta / factors[None, :].astype(_F32)
    return np.cos(theta).astype(_F32), np.sin(theta).astype(_F32)


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, neox: bool) -> np.ndarray:
    """Rotate the first rope_dim dims of each head. x (T, H, D); cos/sin (T, rope_dim/2).

    Normal style rotates adjacent pairs (x[2i], x[2i+1]); NeoX style rotates (x[i], x[i + d/2]).
    """
    half = cos.shape[1]
    rd = 2 * half
    out = x.copy()
    c, s = cos[:, None, :], sin[:, None, :]
    if neox:
        a, b = x[..., :half], x[..., half:rd]
        out[..., :half] = a * c - b * s
        out[..., half:rd] = a * s + b * c
    else:
        a, b = x[..., 0:rd:2], x[..., 1:rd:2]
        out[..., 0:rd:2] = a * c - b * s
        out[..., 1:rd:2] = a * s + b * c
    return out


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    q_pos: np.ndarray,
    k_pos: np.ndarray,
    scale: float,
    window: int = 0,
) -> np.ndarray:
    """Causal attention of q (T, H, D) over k (S, KVH, D), v (S, KVH, Dv) stored as f16.

    A query at position p sees keys at positions <= p, and with a window w only those with
    p - pos < w.  Grouped heads: query head h reads kv head h // (H / KVH).
    """
    t, h, _ = q.shape
    kvh = k.shape[1]
    group = h // kvh
    q16 = q.astype(np.float16).astype(_F32).reshape(t, kvh, group, -1)  # (T, KVH, G, D)
    kf = k.astype(_F32)
    vf = v.astype(_F32)
    scores = np.einsum("tkgd,skd->kgts", q16, kf, dtype=_F32) * _F32(scale)  # (KVH, G, T, S)
    visible = k_pos[None, :] <= q_pos[:, None]
    if window > 0:
        visible &= (q_pos[:, None] - k_pos[None, :]) < window
    scores = np.where(visible[None, None], scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    p16 = p.astype(np.float16).astype(_F32)
    out = np.einsum("kgts,skd->tkgd", p16, vf, dtype=_F32)  # (T, KVH, G, Dv)
    return out.reshape(t, h, -1)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (_F32(1.0) + np.exp(-x))


def silu_mul(g: np.ndarray, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """silu(g) * u: the gate of a SwiGLU feed-forward (into `out` when given)."""
    return _into(out, silu(g) * u)


def _into(out: np.ndarray | None, value: np.ndarray) -> np.ndarray:
    if out is None:
        return value
    out[...] = value
    return out


_SQRT_2_OVER_PI = _F32(0.7978845608028654)
_GELU_COEF_A = _F32(0.044715)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return _F32(0.5) * x * (_F32(1.0) + np.tanh(_SQRT_2_OVER_PI * x * (_F32(1.0) + _GELU_COEF_A * x * x)))


def gelu_tanh_mul(g: np.ndarray, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """gelu_tanh(g) * u: the gate of a GeGLU feed-forward (into `out` when given)."""
    return _into(out, gelu_tanh(g) * u)
