"""Quantizers: float32 rows to packed GGUF blocks, byte-identical to llama.cpp's reference quantizers.

Each type follows its `quantize_row_*_ref` in llama.cpp's `ggml/src/ggml-quants.c` (the functions
`ggml_quantize_chunk` uses when no importance matrix is given), rewritten to work on many blocks at
once. Bit-identical output needs the C code's float32 arithmetic reproduced exactly:

* every expression is evaluated in float32, in the C code's operand order (`w*l*x` is `(w*l)*x`);
* sums over a block run left to right. NumPy's reduction over axis 0 of a C-contiguous 2-D array adds
  row after row, so blocks are laid out transposed, one block per column, `(n_per_block, n_blocks)`,
  and summed with `np.add.reduce(..., axis=0)` (a reduction over the last axis would be pairwise);
* `nearest_int` (the 12582912 trick) is round-half-to-even, `roundf` rounds half away from zero, and
  `GGML_FP32_TO_FP16` rounds to nearest even like `astype(np.float16)`.

Only the short search loops of the K-quants (the candidate scales) and those left-to-right sums are
Python loops; everything else is vectorized over all blocks of a chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgelm.gguf.constants import BLOCK_LAYOUTS, K_SCALE_SIZE, QK, QK_K, GGMLType

__all__ = ["QUANTIZABLE_TYPES", "quantize"]

_F32 = np.float32

# Blocks are quantized a chunk at a time so that the K-quant search's temporaries stay in cache.
_CHUNK_WEIGHTS = 1 << 17

# ggml-quants.c: GROUP_MAX_EPS, below which a group counts as all zero.
_GROUP_MAX_EPS = _F32(1e-15)

# Sub-blocks of the K-quants: Q4_K / Q5_K have 8 of 32 weights, Q6_K 16 of 16.
_QKX_SUB = 32
_Q6_SUB = 16

# make_qkx2_quants search parameters of quantize_row_q4_K_ref / quantize_row_q5_K_ref:
# (nmax, rmin, rdelta, nstep).
_Q4_K_SEARCH = (15, -1.0, 0.1, 20)
_Q5_K_SEARCH = (31, -0.5, 0.1, 15)

_SCALE_BITS_MAX = 63  # 6-bit scales and mins of Q4_K / Q5_K
_Q6_NMAX = 32  # Q6_K weights are 6-bit signed: -32 .. 31
_Q6_SCALE_MAX = 127  # Q6_K sub-block scales are int8


def _nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int, bit for bit: round half to even, garbage (not an error) out of range."""
    biased = (v + _F32(12582912.0)).view(np.int32)
    return (biased & 0x007FFFFF) - 0x00400000


def _round_away(v: np.ndarray) -> np.ndarray:
    """C `roundf`: half away from zero. `a - floor(a)` is exact, so the 0.5 test is too."""
    a = np.abs(v)
    whole = np.floor(a)
    return np.copysign(whole + (a - whole >= _F32(0.5)), v)


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    """(N,) float32 -> (N, 2) little-endian fp16 bytes."""
    return v.astype("<f2").view(np.uint8).reshape(-1, 2)


def _f16_round_trip(v: np.ndarray) -> np.ndarray:
    """GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(v)): the value the block will hold."""
    return v.astype(np.float16).astype(_F32)


def _seq_sum(a: np.ndarray) -> np.ndarray:
    """Left-to-right float32 sum over axis 0 of a C-contiguous (n, G) array, as the C loops add."""
    return np.add.reduce(a, axis=0)


def _transpose_groups(blocks: np.ndarray, group: int) -> np.ndarray:
    """(N, block_size) -> (group, N * block_size // group): one group per column, for `_seq_sum`."""
    return np.ascontiguousarray(blocks.reshape(-1, group).T)


# --- F32 / F16 / BF16 ---------------------------------------------------------------------------


def _quantize_f32(blocks: np.ndarray) -> np.ndarray:
    return blocks.astype("<f4").view(np.uint8)


def _quantize_f16(blocks: np.ndarray) -> np.ndarray:
    return blocks.astype("<f2").view(np.uint8)


def _quantize_bf16(blocks: np.ndarray) -> np.ndarray:
    """ggml_compute_fp32_to_bf16: round to nearest even; NaNs are kept NaN and made quiet."""
    u = blocks.view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16  # wraps only for NaNs, replaced next
    is_nan = (u & 0x7FFFFFFF) > 0x7F800000
    bits = np.where(is_nan, (u >> 16) | 64, rounded).astype("<u2")
    return bits.view(np.uint8)


# --- Q8_0 / Q4_0 ---------------------------------------------------------------------------------


def _inverse_or_zero(d: np.ndarray) -> np.ndarray:
    """C `d ? 1.0f/d : 0.0f`."""
    return np.where(d != 0, _F32(1.0) / d, _F32(0.0))


def _quantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """quantize_row_q8_0_ref: d = absmax / 127, q = roundf(x / d)."""
    d = np.abs(blocks).max(axis=1) / _F32(127)  # (N,)
    qs = _round_away(blocks * _inverse_or_zero(d)[:, None]).astype(np.int8)  # (N, QK)
    return np.concatenate([_f16_bytes(d), qs.view(np.uint8)], axis=1)


def _quantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """quantize_row_q4_0_ref: d = -(signed value of largest magnitude) / 8, q = trunc(x / d + 8.5)."""
    n = blocks.shape[0]
    a = np.abs(blocks)
    amax = a.max(axis=1)
    # The C loop keeps the first element of largest magnitude (strict <) and starts from +0.0, which
    # an all-zero block keeps even when its first element is -0.0.
    signed_max = blocks[np.arange(n), a.argmax(axis=1)]
    signed_max = np.where(amax > 0, signed_max, _F32(0.0))
    d = signed_max / _F32(-8)  # (N,)
    q = np.trunc(blocks * _inverse_or_zero(d)[:, None] + _F32(8.5))
    # A subnormal d makes 1/d infinite; the C float -> int8 cast turns inf and NaN into 0 on x86.
    q = np.where(np.isfinite(q), q, _F32(0.0))
    q = np.clip(q, 0, 15).astype(np.uint8)
    return np.concatenate([_f16_bytes(d), _pack_nibbles(q)], axis=1)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(N, QK) values 0..15 -> (N, QK/2): weight j in the low nibble of byte j, j + 16 in the high one."""
    q = q.reshape(q.shape[0], 2, QK // 2)
    return q[:, 0] | (q[:, 1] << 4)


def _pack_fifth_bits(q: np.ndarray) -> np.ndarray:
    """(N, QK) values 0..31 -> (N, 4) bytes holding bit 4 of weight j at bit j of a little-endian uint32."""
    high = ((q >> 4) & 1).astype(np.uint32)
    qh = (high << np.arange(QK, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    return qh.astype("<u4").view(np.uint8).reshape(-1, 4)


def _trunc_small(v: np.ndarray, top: int) -> np.ndarray:
    """C `MIN(top, (int8_t)v)` / `(uint8_t)v` for the non-negative, bounded values the quantizers make."""
    return np.minimum(np.trunc(np.where(np.isfinite(v), v, _F32(0.0))), _F32(top)).astype(np.uint8)


def _min_max(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return blocks.min(axis=1), blocks.max(axis=1)


def _quantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    """quantize_row_q4_1_ref: d = (max - min) / 15, q = (int8)((x - min) / d + 0.5), m = min."""
    lo, hi = _min_max(blocks)
    d = (hi - lo) / _F32(15)
    q = _trunc_small((blocks - lo[:, None]) * _inverse_or_zero(d)[:, None] + _F32(0.5), 15)
    return np.concatenate([_f16_bytes(d), _f16_bytes(lo), _pack_nibbles(q)], axis=1)


def _quantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    """quantize_row_q5_0_ref: d = -(signed value of largest magnitude) / 16, q = (int8)(x / d + 16.5)."""
    n = blocks.shape[0]
    a = np.abs(blocks)
    amax = a.max(axis=1)
    signed_max = np.where(amax > 0, blocks[np.arange(n), a.argmax(axis=1)], _F32(0.0))
    d = signed_max / _F32(-16)
    q = _trunc_small(blocks * _inverse_or_zero(d)[:, None] + _F32(16.5), 31)
    return np.concatenate([_f16_bytes(d), _pack_fifth_bits(q), _pack_nibbles(q & 0x0F)], axis=1)


def _quantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    """quantize_row_q5_1_ref: d = (max - min) / 31, q = (uint8)((x - min) / d + 0.5), m = min."""
    lo, hi = _min_max(blocks)
    d = (hi - lo) / _F32(31)
    q = _trunc_small((blocks - lo[:, None]) * _inverse_or_zero(d)[:, None] + _F32(0.5), 31)
    return np.concatenate(
        [_f16_bytes(d), _f16_bytes(lo), _pack_fifth_bits(q), _pack_nibbles(q & 0x0F)], axis=1
    )


# --- Q4_K / Q5_K ---------------------------------------------------------------------------------


def _make_qkx2_quants(
    x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """make_qkx2_quants (use_mad=false) on every column: x, w (n, G) -> scale (G,), -min (G,), L (n, G).

    Fits x ~ scale * L + min with L in [0, nmax] and min <= 0, trying nstep + 1 candidate scales.
    Instead of copying L for every improvement, remembers the (iscale, min) that produced the best L
    and recomputes it once at the end: the same float32 operations, so the same L.
    """
    f_nmax, f_rmin, f_rdelta = _F32(nmax), _F32(rmin), _F32(rdelta)
    x_max = x.max(axis=0)
    x_min = np.minimum(x.min(axis=0), _F32(0.0))
    sum_w = _seq_sum(w)
    sum_x = _seq_sum(w * x)
    flat = x_max == x_min  # the C code returns L = 0, scale 0 for these; masked at the end

    # Scratch (n, G) buffers, reused across the search: this loop is the quantizer's hot path.
    l = np.empty_like(x)
    wl = np.empty_like(x)
    term = np.empty_like(x)

    def levels(iscale: np.ndarray, base: np.ndarray) -> None:
        """l = clamp(nearest_int(iscale * (x - base)), 0, nmax).

        With a finite iscale the product is at most about nmax + 1, where rint is nearest_int. A range
        so small that iscale overflows gives inf or NaN products, which nearest_int maps to 0.
        """
        np.subtract(x, base, out=l)
        np.multiply(l, iscale, out=l)
        np.rint(l, out=l)
        if not np.isfinite(iscale).all():
            l[~np.isfinite(l)] = 0
        np.clip(l, _F32(0.0), f_nmax, out=l)

    def weighted_error(scale: np.ndarray, base: np.ndarray) -> np.ndarray:
        """sum of w * ((scale * l + base) - x)^2, in the C loop's order."""
        np.multiply(l, scale, out=term)
        np.add(term, base, out=term)
        np.subtract(term, x, out=term)
        np.multiply(term, term, out=term)
        np.multiply(term, w, out=term)
        return _seq_sum(term)

    iscale = f_nmax / (x_max - x_min)
    scale = _F32(1.0) / iscale
    levels(iscale, x_min)
    best_error = weighted_error(scale, x_min)
    best_iscale, best_base = iscale, x_min

    cur_min = x_min
    for step in range(nstep + 1):
        # The C loop measures from the best min found so far, not from the data's minimum.
        iscale = ((f_rmin + f_rdelta * _F32(step)) + f_nmax) / (x_max - cur_min)
        levels(iscale, cur_min)
        np.multiply(w, l, out=wl)
        sum_l = _seq_sum(wl)
        np.multiply(wl, l, out=term)
        sum_l2 = _seq_sum(term)
        np.multiply(wl, x, out=term)
        sum_xl = _seq_sum(term)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        positive_min = this_min > 0
        this_min = np.where(positive_min, _F32(0.0), this_min)
        this_scale = np.where(positive_min, sum_xl / sum_l2, this_scale)
        cur_error = weighted_error(this_scale, this_min)
        better = (D > 0) & (cur_error < best_error)
        best_iscale = np.where(better, iscale, best_iscale)
        best_base = np.where(better, cur_min, best_base)
        best_error = np.where(better, cur_error, best_error)
        scale = np.where(better, this_scale, scale)
        cur_min = np.where(better, this_min, cur_min)

    levels(best_iscale, best_base)
    scale = np.where(flat, _F32(0.0), scale)
    l[:, flat] = 0
    return scale, -cur_min, l


def _running_max(v: np.ndarray) -> np.ndarray:
    """C `m = 0; if (v > m) m = v;` over axis 1, keeping +0.0 when nothing is positive."""
    m = np.zeros(v.shape[0], dtype=_F32)
    for j in range(v.shape[1]):
        m = np.where(v[:, j] > m, v[:, j], m)
    return m


def _six_bit(v: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """C `uint8_t l = nearest_int(inv*v); l = MIN(63, l)`, including the uint8 wrap."""
    return np.minimum(_nearest_int(inv[:, None] * v) & 0xFF, _SCALE_BITS_MAX).astype(np.uint8)


def _quantize_qkx(blocks: np.ndarray, search: tuple[int, float, float, int]) -> tuple[np.ndarray, ...]:
    """Shared part of Q4_K and Q5_K: returns d, dmin (N, 2 bytes each), scales (N, 12), L (N, QK_K)."""
    nmax, rmin, rdelta, nstep = search
    n = blocks.shape[0]
    n_sub = QK_K // _QKX_SUB
    x = _transpose_groups(blocks, _QKX_SUB)  # (32, N * 8)
    av_x = np.sqrt(_seq_sum(x * x) / _F32(_QKX_SUB))
    w = av_x + np.abs(x)
    scales, mins, L = _make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep)
    scales = scales.reshape(n, n_sub)
    mins = mins.reshape(n, n_sub)
    L = L.T.reshape(n, QK_K)

    max_scale = _running_max(scales)
    max_min = _running_max(mins)
    inv_scale = np.where(max_scale > 0, _F32(_SCALE_BITS_MAX) / max_scale, _F32(0.0))
    inv_min = np.where(max_min > 0, _F32(_SCALE_BITS_MAX) / max_min, _F32(0.0))
    ls = _six_bit(scales, inv_scale)  # (N, 8)
    lm = _six_bit(mins, inv_min)
    # 12 bytes: scales 0-3 and mins 0-3 in the low 6 bits of bytes 0-7; scales and mins 4-7 split into
    # a low nibble (bytes 8-11) and two high bits (top of bytes 0-3 and 4-7).
    packed = np.concatenate(
        [
            ls[:, :4] | ((ls[:, 4:] >> 4) << 6),
            lm[:, :4] | ((lm[:, 4:] >> 4) << 6),
            (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4),
        ],
        axis=1,
    )
    assert packed.shape[1] == K_SCALE_SIZE

    d = max_scale / _F32(_SCALE_BITS_MAX)
    dmin = max_min / _F32(_SCALE_BITS_MAX)
    # Re-quantize against the scales as stored (fp16 super-scale times 6-bit sub-scale).
    d_sub = _f16_round_trip(d)[:, None] * ls.astype(_F32)  # (N, 8)
    dm_sub = _f16_round_trip(dmin)[:, None] * lm.astype(_F32)
    xb = blocks.reshape(n, n_sub, _QKX_SUB)
    requant = _nearest_int((xb + dm_sub[:, :, None]) / d_sub[:, :, None])
    requant = np.clip(requant, 0, nmax).reshape(n, QK_K)
    # A sub-block whose stored scale is zero keeps the search's L.
    keep = np.repeat(d_sub == 0, _QKX_SUB, axis=1)
    L = np.where(keep, L, requant).astype(np.uint8)
    return _f16_bytes(d), _f16_bytes(dmin), packed, L


def _quantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """quantize_row_q4_K_ref. Block: d, dmin (fp16), 12 bytes of scales, 128 bytes of nibbles."""
    d, dmin, scales, L = _quantize_qkx(blocks, _Q4_K_SEARCH)
    L = L.reshape(-1, QK_K // 64, 2, 32)
    qs = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(-1, QK_K // 2)  # each 64 weights share 32 bytes
    return np.concatenate([d, dmin, scales, qs], axis=1)


def _quantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    """quantize_row_q5_K_ref. Block: d, dmin (fp16), 12 bytes of scales, 32 bytes of 5th bits, nibbles."""
    d, dmin, scales, L = _quantize_qkx(blocks, _Q5_K_SEARCH)
    lo = (L & 0xF).reshape(-1, QK_K // 64, 2, 32)
    qs = (lo[:, :, 0] | (lo[:, :, 1] << 4)).reshape(-1, QK_K // 2)
    # Bit k of byte j is the 5th bit of weight 32 * k + j.
    hi = (L >> 4).reshape(-1, QK_K // 32, 32)
    shifts = np.arange(QK_K // 32, dtype=np.uint8)[None, :, None]
    qh = np.bitwise_or.reduce(hi << shifts, axis=1)  # (N, 32)
    return np.concatenate([d, dmin, scales, qh, qs], axis=1)


# --- Q6_K ----------------------------------------------------------------------------------------


def _make_qx_quants_rmse1(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """make_qx_quants(n, nmax, x, L, rmse_type=1, NULL) on every column: x (n, G) -> scale, L + nmax.

    Weights are x^2; tries the scale -nmax / max and 18 nearby ones, keeping the best weighted fit.
    As in `_make_qkx2_quants`, the best L is recomputed once from its iscale instead of copied.
    """
    f_nmax = _F32(nmax)
    a = np.abs(x)
    amax = a.max(axis=0)
    # The signed value of largest magnitude: the first one, as the C loop's strict > keeps.
    x_max = x[a.argmax(axis=0), np.arange(x.shape[1])]
    zero = amax < _GROUP_MAX_EPS
    x_max = np.where(zero, _F32(1.0), x_max)  # any nonzero; these columns are zeroed at the end
    w = x * x
    wx = w * x
    l = np.empty_like(x)
    term = np.empty_like(x)

    def levels(iscale: np.ndarray) -> None:
        """l = clamp(nearest_int(iscale * x), -nmax, nmax - 1); rint is nearest_int in this range."""
        np.multiply(x, iscale, out=l)
        np.rint(l, out=l)
        np.clip(l, -f_nmax, f_nmax - 1, out=l)

    def sums() -> tuple[np.ndarray, np.ndarray]:
        """sum of w*x*l and of w*l*l, in the C loop's order."""
        np.multiply(wx, l, out=term)
        sumlx = _seq_sum(term)
        np.multiply(w, l, out=term)
        np.multiply(term, l, out=term)
        return sumlx, _seq_sum(term)

    best_iscale = -f_nmax / x_max
    levels(best_iscale)
    sumlx, suml2 = sums()
    scale = np.where(suml2 != 0, sumlx / suml2, _F32(0.0))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(f_nmax + _F32(0.1) * _F32(step)) / x_max
        levels(iscale)
        sumlx, suml2 = sums()
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        scale = np.where(better, sumlx / suml2, scale)
        best = np.where(better, scale * sumlx, best)
        best_iscale = np.where(better, iscale, best_iscale)

    levels(best_iscale)
    np.add(l, f_nmax, out=l)
    l[:, zero] = 0  # all-zero groups get L = 0, not nmax
    return np.where(zero, _F32(0.0), scale), l


def _quantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """quantize_row_q6_K_ref. Block: 128 bytes low nibbles, 64 bytes high 2 bits, 16 int8 scales, d."""
    n = blocks.shape[0]
    n_sub = QK_K // _Q6_SUB
    x = _transpose_groups(blocks, _Q6_SUB)  # (16, N * 16)
    scales, L = _make_qx_quants_rmse1(x, _Q6_NMAX)
    scales = scales.reshape(n, n_sub)
    L = L.T.reshape(n, QK_K)

    # The sub-scale of largest magnitude with its sign: the first one on ties, never a NaN (a fit
    # whose x^2 weights overflowed), as the C loop's `if (abs_scale > max_abs_scale)` keeps.
    max_abs_scale = np.zeros(n, dtype=_F32)
    max_scale = np.zeros(n, dtype=_F32)
    for j in range(n_sub):
        larger = np.abs(scales[:, j]) > max_abs_scale
        max_abs_scale = np.where(larger, np.abs(scales[:, j]), max_abs_scale)
        max_scale = np.where(larger, scales[:, j], max_scale)
    zero = max_abs_scale < _GROUP_MAX_EPS
    max_scale = np.where(zero, _F32(1.0), max_scale)  # zero blocks are written as all zero bytes

    iscale = _F32(-(_Q6_SCALE_MAX + 1)) / max_scale  # the largest sub-scale becomes -128
    d = _F32(1.0) / iscale
    sc = np.minimum(_nearest_int(iscale[:, None] * scales), _Q6_SCALE_MAX).astype(np.int8)  # (N, 16)
    d_sub = _f16_round_trip(d)[:, None] * sc.astype(_F32)
    xb = blocks.reshape(n, n_sub, _Q6_SUB)
    requant = _nearest_int(xb / d_sub[:, :, None])
    requant = (np.clip(requant, -_Q6_NMAX, _Q6_NMAX - 1) + _Q6_NMAX).reshape(n, QK_K)
    keep = np.repeat(d_sub == 0, _Q6_SUB, axis=1)  # a zero sub-scale keeps the search's L
    L = np.where(keep, L, requant).astype(np.uint8)

    # Each 128 weights: 4 quarters of 32; quarters 0/2 and 1/3 share the low-nibble bytes, and all
    # four put their top 2 bits into one byte.
    L = L.reshape(n, QK_K // 128, 4, 32)
    lo = L & 0xF
    ql = (lo[:, :, 0:2] | (lo[:, :, 2:4] << 4)).reshape(n, QK_K // 2)
    hi = L >> 4
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(n, QK_K // 4)
    out = np.concatenate([ql, qh, sc.view(np.uint8), _f16_bytes(d)], axis=1)
    out[zero] = 0
    return out


# One function per type: (n_blocks, block_size) float32 -> (n_blocks, type_size) uint8.
_QUANTIZERS: dict[GGMLType, Callable[[np.ndarray], np.ndarray]] = {
    GGMLType.F32: _quantize_f32,
    GGMLType.F16: _quantize_f16,
    GGMLType.BF16: _quantize_bf16,
    GGMLType.Q8_0: _quantize_q8_0,
    GGMLType.Q4_0: _quantize_q4_0,
    GGMLType.Q4_1: _quantize_q4_1,
    GGMLType.Q5_0: _quantize_q5_0,
    GGMLType.Q5_1: _quantize_q5_1,
    GGMLType.Q4_K: _quantize_q4_k,
    GGMLType.Q5_K: _quantize_q5_k,
    GGMLType.Q6_K: _quantize_q6_k,
}

QUANTIZABLE_TYPES: frozenset[GGMLType] = frozenset(_QUANTIZERS)


def quantize(values: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
    """Pack float32 `values` (..., n_per_row) into GGUF blocks of `ggml_type`.

    `n_per_row` must be a multiple of the type's block size. Returns uint8 (..., row_bytes) with the
    same leading dimensions, byte-identical to llama.cpp's reference quantizer for the type.
    """
    quantizer = _QUANTIZERS.get(ggml_type)
    if quantizer is None:
        supported = ", ".join(sorted(t.name for t in QUANTIZABLE_TYPES))
        name = getattr(ggml_type, "name", repr(ggml_type))
        raise ValueError(f"cannot quantize to {name}; supported types: {supported}")
    values = np.asarray(values, dtype=_F32)
    if values.ndim == 0:
        raise ValueError("cannot quantize a scalar; values need a last axis of weights per row")
    values = np.ascontiguousarray(values)
    block_size, type_size = BLOCK_LAYOUTS[ggml_type]
    n_per_row = values.shape[-1]
    if n_per_row % block_size:
        raise ValueError(
            f"row length {n_per_row} is not a multiple of the {ggml_type.name} block size {block_size}"
        )

    blocks = values.reshape(-1, block_size)  # (n_blocks, block_size)
    out = np.empty((blocks.shape[0], type_size), dtype=np.uint8)
    chunk = max(1, _CHUNK_WEIGHTS // block_size)
    # Masked lanes (zero scales, flat groups) divide by zero on purpose, as the C code's skipped
    # branches would; their results are discarded.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for start in range(0, blocks.shape[0], chunk):
            out[start : start + chunk] = quantizer(blocks[start : start + chunk])
    return out.reshape(*values.shape[:-1], n_per_row // block_size * type_size)
