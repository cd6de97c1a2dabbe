"""GGUF format constants: value types, quantization types and their block layouts, metadata keys.

The enums carry the format's numbers (the `gguf` package, the format's reference, is tested to agree;
it is not imported at run time: it pulls in ~5 MB of modules a device never uses). Block layouts are
written out as arithmetic so that every size edgelm relies on is visible in one place.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = [
    "BLOCK_LAYOUTS",
    "GGUF_ALIGNMENT_KEY",
    "GGUF_DEFAULT_ALIGNMENT",
    "GGUF_MAGIC",
    "GGUF_SUPPORTED_VERSIONS",
    "QK",
    "QK_K",
    "SUPPORTED_TYPES",
    "TYPE_SIZES",
    "BlockLayout",
    "GGMLType",
    "GGUFValueType",
    "row_bytes",
]


class GGMLType(enum.IntEnum):
    """Tensor types by their number in the file (ggml's `ggml_type`)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


class GGUFValueType(enum.IntEnum):
    """Metadata value types by their number in the file."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


GGUF_MAGIC = b"GGUF"
GGUF_SUPPORTED_VERSIONS = (2, 3)
GGUF_DEFAULT_ALIGNMENT = 32
GGUF_ALIGNMENT_KEY = "general.alignment"

QK = 32  # weights per block of the simple quants (Q4_0 .. Q8_0)
QK_K = 256  # weights per super-block of the K-quants
K_SCALE_SIZE = 12  # packed 6-bit scales and mins of Q4_K / Q5_K

F16_BYTES = 2
F32_BYTES = 4


class BlockLayout(NamedTuple):
    """How a quantization type packs weights: `block_size` weights in `type_size` bytes."""

    block_size: int
    type_size: int


BLOCK_LAYOUTS: dict[GGMLType, BlockLayout] = {
    GGMLType.F32: BlockLayout(1, F32_BYTES),
    GGMLType.F16: BlockLayout(1, F16_BYTES),
    GGMLType.BF16: BlockLayout(1, F16_BYTES),
    # d (f16) + 32 x 4-bit
    GGMLType.Q4_0: BlockLayout(QK, F16_BYTES + QK // 2),
    # d, m (f16) + 32 x 4-bit
    GGMLType.Q4_1: BlockLayout(QK, 2 * F16_BYTES + QK // 2),
    # d (f16) + 32 high bits + 32 x 4-bit
    GGMLType.Q5_0: BlockLayout(QK, F16_BYTES + QK // 8 + QK // 2),
    # d, m (f16) + 32 high bits + 32 x 4-bit
    GGMLType.Q5_1: BlockLayout(QK, 2 * F16_BYTES + QK // 8 + QK // 2),
    # d (f16) + 32 x int8
    GGMLType.Q8_0: BlockLayout(QK, F16_BYTES + QK),
    # 16 x (4-bit scale | 4-bit min) + 256 x 2-bit + d, dmin (f16)
    GGMLType.Q2_K: BlockLayout(QK_K, QK_K // 16 + QK_K // 4 + 2 * F16_BYTES),
    # 256 high bits + 256 x 2-bit + 12 bytes of 6-bit scales + d (f16)
    GGMLType.Q3_K: BlockLayout(QK_K, QK_K // 8 + QK_K // 4 + 12 + F16_BYTES),
    # d, dmin (f16) + 12 bytes of 6-bit scales/mins + 256 x 4-bit
    GGMLType.Q4_K: BlockLayout(QK_K, 2 * F16_BYTES + K_SCALE_SIZE + QK_K // 2),
    # d, dmin (f16) + 12 bytes of 6-bit scales/mins + 256 high bits + 256 x 4-bit
    GGMLType.Q5_K: BlockLayout(QK_K, 2 * F16_BYTES + K_SCALE_SIZE + QK_K // 8 + QK_K // 2),
    # 256 x low 4 bits + 256 x high 2 bits + 16 x int8 scales + d (f16)
    GGMLType.Q6_K: BlockLayout(QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + F16_BYTES),
}

# Types edgelm can hold and dequantize.
SUPPORTED_TYPES: frozenset[GGMLType] = frozenset(BLOCK_LAYOUTS)

# (block size, bytes per block) of every type, so that a file holding one edgelm does not compute
# is still sized and checked exactly; the types above take their layout from BLOCK_LAYOUTS.
TYPE_SIZES: dict[GGMLType, tuple[int, int]] = {
    **{t: (layout.block_size, layout.type_size) for t, layout in BLOCK_LAYOUTS.items()},
    GGMLType.Q8_1: (QK, 2 * F32_BYTES + QK),
    GGMLType.Q8_K: (QK_K, F32_BYTES + QK_K + QK_K // 16 * 2),
    GGMLType.IQ2_XXS: (QK_K, F16_BYTES + QK_K // 4),
    GGMLType.IQ2_XS: (QK_K, F16_BYTES + QK_K // 4 + QK_K // 32),
    GGMLType.IQ3_XXS: (QK_K, F16_BYTES + 3 * QK_K // 8),
    GGMLType.IQ1_S: (QK_K, F16_BYTES + QK_K // 8 + QK_K // 16),
    GGMLType.IQ4_NL: (QK, F16_BYTES + QK // 2),
    GGMLType.IQ3_S: (QK_K, F16_BYTES + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    GGMLType.IQ2_S: (QK_K, F16_BYTES + QK_K // 4 + QK_K // 16),
    GGMLType.IQ4_XS: (QK_K, F16_BYTES + 2 + QK_K // 64 + QK_K // 2),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.IQ1_M: (QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    GGMLType.TQ1_0: (QK_K, 2 + 4 * 13),
    GGMLType.TQ2_0: (QK_K, 2 + 64),
    GGMLType.MXFP4: (QK, 1 + QK // 2),
    GGMLType.NVFP4: (64, 4 + 32),
    GGMLType.Q1_0: (128, F16_BYTES + 128 // 8),
}


def row_bytes(ggml_type: GGMLType, n_elements: int) -> int:
    """Bytes taken by `n_elements` weights of `ggml_type` (a multiple of the block size)."""
    layout = BLOCK_LAYOUTS[ggml_type]
    return n_elements // layout.block_size * layout.type_size
