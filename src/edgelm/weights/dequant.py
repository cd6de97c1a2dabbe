"""Dequantization of packed GGUF tensors into float32, vectorized with NumPy.

Each supported type is one small decoder that turns a batch of blocks into weights, all blocks at once,
with the block layout of llama.cpp (`ggml-quants.c`, `dequantize_row_*`) written as a structured dtype.
The decoders keep the reference's order of float operations, so the results match
`gguf.quants.dequantize` bit for bit; the tests hold them to that.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from edgelm.errors import ModelFileError
from edgelm.gguf.constants import BLOCK_LAYOUTS, K_SCALE_SIZE, QK, QK_K, GGMLType

__all__ = ["dequantize"]

# Blocks are decoded a chunk (1 MiB of output) at a time: the integer temporaries then cost a few MiB
# instead of several tensor-sized arrays, and stay near the cache (about 10-30% faster than one pass).
_CHUNK_ELEMENTS = 1 << 18

_F16 = "<f2"
_N_SUB_K = QK_K // 16  # 16-weight sub-blocks of Q2_K, Q3_K and Q6_K
_N_SUB_K32 = QK_K // 32  # 32-weight sub-blocks of Q4_K and Q5_K
_Q3_K_SCALE_SIZE = _N_SUB_K * 6 // 8  # 16 six-bit scales

# Shifts that pull 4-bit, 2-bit and 1-bit fields out of a byte, broadcast over a new axis.
_NIBBLE_SHIFTS = np.array([0, 4], dtype=np.uint8).reshape(2, 1)
_CRUMB_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(4, 1)
_BIT_SHIFTS = np.arange(8, dtype=np.uint8).reshape(8, 1)

# Block layouts, field by field in file order (little-endian, no padding).
_F32_BLOCK = np.dtype("<f4")
_F16_BLOCK = np.dtype(_F16)
_BF16_BLOCK = np.dtype("<u2")
_Q4_0_BLOCK = np.dtype([("d", _F16), ("qs", np.uint8, QK // 2)])
_Q4_1_BLOCK = np.dtype([("d", _F16), ("m", _F16), ("qs", np.uint8, QK // 2)])
_Q5_0_BLOCK = np.dtype([("d", _F16), ("qh", np.uint8, QK // 8), ("qs", np.uint8, QK // 2)])
_Q5_1_BLOCK = np.dtype([("d", _F16), ("m", _F16), ("qh", np.uint8, QK // 8), ("qs", np.uint8, QK // 2)])
_Q8_0_BLOCK = np.dtype([("d", _F16), ("qs", np.int8, QK)])
_Q2_K_BLOCK = np.dtype(
    [("scales", np.uint8, _N_SUB_K), ("qs", np.uint8, QK_K // 4), ("d", _F16), ("dmin", _F16)]
)
_Q3_K_BLOCK = np.dtype(
    [
        ("hmask", np.uint8, QK_K // 8),
        ("qs", np.uint8, QK_K // 4),
        ("scales", np.uint8, _Q3_K_SCALE_SIZE),
        ("d", _F16),
    ]
)
_Q4_K_BLOCK = np.dtype(
    [("d", _F16), ("dmin", _F16), ("scales", np.uint8, K_SCALE_SIZE), ("qs", np.uint8, QK_K // 2)]
)
_Q5_K_BLOCK = np.dtype(
    [
        ("d", _F16),
        ("dmin", _F16),
        ("scales", np.uint8, K_SCALE_SIZE),
        ("qh", np.uint8, QK_K // 8),
        ("qs", np.uint8, QK_K // 2),
    ]
)
_Q6_K_BLOCK = np.dtype(
    [("ql", np.uint8, QK_K // 2), ("qh", np.uint8, QK_K // 4), ("scales", np.int8, _N_SUB_K), ("d", _F16)]
)


def _scale(field: np.ndarray) -> np.ndarray:
    """An f16 block field as float32, shaped (n, 1, 1) to broadcast over (n, sub-blocks, weights)."""
    return field.astype(np.float32).reshape(-1, 1, 1)


def _low_high_nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, B) packed bytes -> (n, 2, B) uint8: all low nibbles first, then all high nibbles."""
    return (qs[:, None, :] >> _NIBBLE_SHIFTS) & np.uint8(0x0F)


def _decode_f32(blocks: np.ndarray, out: np.ndarray) -> None:
    out[:, 0] = blocks


def _decode_f16(blocks: np.ndarray, out: np.ndarray) -> None:
    out[:, 0] = blocks


def _decode_bf16(blocks: np.ndarray, out: np.ndarray) -> None:
    # bf16 is the top half of an f32, so widening the bits is the whole conversion (NaNs included).
    out.view(np.uint32)[:, 0] = blocks.astype(np.uint32) << np.uint32(16)


def _decode_q4_0(blocks: np.ndarray, out: np.ndarray) -> None:
    q = _low_high_nibbles(blocks["qs"]).view(np.int8) - np.int8(8)  # (n, 2, 16)
    np.multiply(_scale(blocks["d"]), q, out=out.reshape(q.shape))


def _decode_q4_1(blocks: np.ndarray, out: np.ndarray) -> None:
    q = _low_high_nibbles(blocks["qs"])  # (n, 2, 16)
    o = out.reshape(q.shape)
    np.multiply(_scale(blocks["d"]), q, out=o)
    o += _scale(blocks["m"])


def _q5_weights(blocks: np.ndarray) -> np.ndarray:
    """5-bit weights of Q5_0 / Q5_1 as (n, 2, 16) uint8: nibble j with bit j of the 32-bit `qh`."""
    high = np.unpackbits(blocks["qh"], axis=-1, bitorder="little").reshape(-1, 2, QK // 2)
    return _low_high_nibbles(blocks["qs"]) | (high << np.uint8(4))


def _decode_q5_0(blocks: np.ndarray, out: np.ndarray) -> None:
    q = _q5_weights(blocks).view(np.int8) - np.int8(16)
    np.multiply(_scale(blocks["d"]), q, out=out.reshape(q.shape))


def _decode_q5_1(blocks: np.ndarray, out: np.ndarray) -> None:
    q = _q5_weights(blocks)
    o = out.reshape(q.shape)
    np.multiply(_scale(blocks["d"]), q, out=o)
    o += _scale(blocks["m"])


def _decode_q8_0(blocks: np.ndarray, out: np.ndarray) -> None:
    np.multiply(blocks["d"].astype(np.float32)[:, None], blocks["qs"], out=out)


def _crumbs(qs: np.ndarray) -> np.ndarray:
    """2-bit weights of Q2_K / Q3_K, (n, 64) bytes -> (n, 16, 16) uint8 in weight order.

    Each 128-weight half reads 32 bytes four times, taking bits 0-1, then 2-3, 4-5 and 6-7.
    """
    q = (qs.reshape(-1, 2, 1, QK_K // 8) >> _CRUMB_SHIFTS) & np.uint8(0x03)  # (n, half, shift, 32)
    return q.reshape(-1, _N_SUB_K, 16)


def _decode_q2_k(blocks: np.ndarray, out: np.ndarray) -> None:
    scales = blocks["scales"]  # (n, 16): low nibble scales the sub-block, high nibble is its min
    dl = blocks["d"].astype(np.float32)[:, None] * (scales & np.uint8(0x0F))
    ml = blocks["dmin"].astype(np.float32)[:, None] * (scales >> np.uint8(4))
    o = out.reshape(-1, _N_SUB_K, 16)
    np.multiply(dl[:, :, None], _crumbs(blocks["qs"]), out=o)
    o -= ml[:, :, None]


def _q3_k_scales(packed: np.ndarray) -> np.ndarray:
    """Q3_K's 16 signed 6-bit scales from 12 bytes -> (n, 16) int8.

    Bytes 0-7 hold the low 4 bits (scales 0-7 in the low nibbles, 8-15 in the high nibbles);
    bytes 8-11 hold the high 2 bits, scale i in byte 8 + i % 4 at bit 2 * (i // 4).
    """
    low = _low_high_nibbles(packed[:, :8]).reshape(-1, _N_SUB_K)
    high = ((packed[:, None, 8:] >> _CRUMB_SHIFTS) & np.uint8(0x03)).reshape(-1, _N_SUB_K)
    return (low | (high << np.uint8(4))).view(np.int8) - np.int8(32)


def _decode_q3_k(blocks: np.ndarray, out: np.ndarray) -> None:
    dl = blocks["d"].astype(np.float32)[:, None] * _q3_k_scales(blocks["scales"])  # (n, 16)
    # Weight 32 * k + l has its high bit in bit k of hmask[l]; a clear bit means "subtract 4".
    high = (blocks["hmask"][:, None, :] >> _BIT_SHIFTS) & np.uint8(1)  # (n, 8, 32)
    offset = ((high ^ np.uint8(1)) << np.uint8(2)).reshape(-1, _N_SUB_K, 16)
    q = _crumbs(blocks["qs"]).view(np.int8) - offset.view(np.int8)  # (n, 16, 16)
    np.multiply(dl[:, :, None], q, out=out.reshape(q.shape))


def _k_scales_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K's 8 unsigned 6-bit scales and mins from 12 bytes -> two (n, 8) uint8.

    Sub-blocks 0-3 take the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 take the
    nibbles of bytes 8-11 as low bits and the top 2 bits of bytes 0-3 / 4-7 as high bits.
    """
    d, m, md = np.split(packed, 3, axis=1)
    six = np.uint8(0x3F)
    scales = np.concatenate([d & six, (md & np.uint8(0x0F)) | ((d >> np.uint8(6)) << np.uint8(4))], axis=1)
    mins = np.concatenate([m & six, (md >> np.uint8(4)) | ((m >> np.uint8(6)) << np.uint8(4))], axis=1)
    return scales, mins


def _k_nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 128) bytes -> (n, 8, 32) uint8: each 32 bytes give a sub-block of low, then of high nibbles."""
    q = (qs.reshape(-1, 4, 1, 32) >> _NIBBLE_SHIFTS) & np.uint8(0x0F)  # (n, 4, 2, 32)
    return q.reshape(-1, _N_SUB_K32, 32)


def _decode_k_with_min(blocks: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:
    scales, mins = _k_scales_mins(blocks["scales"])
    dl = blocks["d"].astype(np.float32)[:, None] * scales  # (n, 8)
    ml = blocks["dmin"].astype(np.float32)[:, None] * mins
    o = out.reshape(q.shape)
    np.multiply(dl[:, :, None], q, out=o)
    o -= ml[:, :, None]


def _decode_q4_k(blocks: np.ndarray, out: np.ndarray) -> None:
    _decode_k_with_min(blocks, _k_nibbles(blocks["qs"]), out)


def _decode_q5_k(blocks: np.ndarray, out: np.ndarray) -> None:
    # Weight 32 * k + l has its fifth bit in bit k of qh[l].
    high = (blocks["qh"][:, None, :] >> _BIT_SHIFTS) & np.uint8(1)  # (n, 8, 32)
    _decode_k_with_min(blocks, _k_nibbles(blocks["qs"]) | (high << np.uint8(4)), out)


def _decode_q6_k(blocks: np.ndarray, out: np.ndarray) -> None:
    # Each 128-weight half: 64 bytes of ql give weights 0-63 from low and 64-127 from high nibbles;
    # 32 bytes of qh give weights 32 * k + l their top 2 bits from bits 2k, 2k + 1 of qh[l].
    low = (blocks["ql"].reshape(-1, 2, 1, QK_K // 4) >> _NIBBLE_SHIFTS) & np.uint8(0x0F)  # (n, 2, 2, 64)
    high = (blocks["qh"].reshape(-1, 2, 1, QK_K // 8) >> _CRUMB_SHIFTS) & np.uint8(0x03)  # (n, 2, 4, 32)
    q = low.reshape(-1, _N_SUB_K, 16) | (high.reshape(-1, _N_SUB_K, 16) << np.uint8(4))
    q = q.view(np.int8) - np.int8(32)  # (n, 16, 16)
    dl = blocks["d"].astype(np.float32)[:, None] * blocks["scales"]  # (n, 16)
    np.multiply(dl[:, :, None], q, out=out.reshape(q.shape))


class _BlockFormat(NamedTuple):
    """How to read one type: the dtype of one block and the decoder from blocks to (n, block_size)."""

    block: np.dtype
    decode: Callable[[np.ndarray, np.ndarray], None]


_FORMATS: dict[GGMLType, _BlockFormat] = {
    GGMLType.F32: _BlockFormat(_F32_BLOCK, _decode_f32),
    GGMLType.F16: _BlockFormat(_F16_BLOCK, _decode_f16),
    GGMLType.BF16: _BlockFormat(_BF16_BLOCK, _decode_bf16),
    GGMLType.Q4_0: _BlockFormat(_Q4_0_BLOCK, _decode_q4_0),
    GGMLType.Q4_1: _BlockFormat(_Q4_1_BLOCK, _decode_q4_1),
    GGMLType.Q5_0: _BlockFormat(_Q5_0_BLOCK, _decode_q5_0),
    GGMLType.Q5_1: _BlockFormat(_Q5_1_BLOCK, _decode_q5_1),
    GGMLType.Q8_0: _BlockFormat(_Q8_0_BLOCK, _decode_q8_0),
    GGMLType.Q2_K: _BlockFormat(_Q2_K_BLOCK, _decode_q2_k),
    GGMLType.Q3_K: _BlockFormat(_Q3_K_BLOCK, _decode_q3_k),
    GGMLType.Q4_K: _BlockFormat(_Q4_K_BLOCK, _decode_q4_k),
    GGMLType.Q5_K: _BlockFormat(_Q5_K_BLOCK, _decode_q5_k),
    GGMLType.Q6_K: _BlockFormat(_Q6_K_BLOCK, _decode_q6_k),
}


def _type_name(ggml_type: object) -> str:
    return getattr(ggml_type, "name", repr(ggml_type))


def dequantize(raw: np.ndarray, ggml_type: GGMLType, shape: tuple[int, ...]) -> np.ndarray:
    """Unpack the bytes of a GGUF tensor into a new float32 array.

    `raw` holds the packed bytes (any shape, typically a read-only memmap view; it is never written);
    `shape` is in NumPy order, the last dimension being the contiguous row that blocks run along.
    Raises ValueError (as `ModelFileError`) for an unsupported type or a byte count that does not fit.
    """
    fmt = _FORMATS.get(ggml_type)
    if fmt is None:
        supported = ", ".join(t.name for t in _FORMATS)
        raise ModelFileError(None, f"cannot dequantize type {_type_name(ggml_type)}; supported: {supported}")
    ggml_type = GGMLType(ggml_type)
    block_size, type_size = BLOCK_LAYOUTS[ggml_type]
    shape = tuple(int(dim) for dim in shape)
    if any(dim < 0 for dim in shape):
        raise ModelFileError(None, f"negative dimension in shape {shape}")
    row_len = shape[-1] if shape else 1
    if row_len % block_size:
        raise ModelFileError(
            None,
            f"row length {row_len} of shape {shape} is not a multiple of the "
            f"{ggml_type.name} block size {block_size}",
        )
    n_blocks = math.prod(shape) // block_size
    if raw.nbytes != n_blocks * type_size:
        raise ModelFileError(
            None,
            f"{ggml_type.name} tensor of shape {shape} needs {n_blocks * type_size} bytes, got {raw.nbytes}",
        )

    blocks = np.ascontiguousarray(raw).reshape(-1).view(np.uint8).view(fmt.block)  # (n_blocks,)
    out = np.empty((n_blocks, block_size), dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // block_size)
    for start in range(0, n_blocks, step):
        fmt.decode(blocks[start : start + step], out[start : start + step])
    return out.reshape(shape)
