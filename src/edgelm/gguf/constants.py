"""GGUF format constants: value types, quantization types and their block layouts, metadata keys.

Quantization and value type enums come from the `gguf` package (the format's reference); block
layouts are written out here as arithmetic so that every size edgelm relies on is visible in one place.
"""

from __future__ import annotations

from typing import NamedTuple

from gguf import GGMLQuantizationType as GGMLType
from gguf import GGUFValueType, LlamaFileType

__all__ = [
    "BLOCK_LAYOUTS",
    "GGUF_ALIGNMENT_KEY",
    "GGUF_DEFAULT_ALIGNMENT",
    "GGUF_MAGIC",
    "GGUF_SUPPORTED_VERSIONS",
    "QK",
    "QK_K",
    "SUPPORTED_TYPES",
    "BlockLayout",
    "GGMLType",
    "GGUFValueType",
    "LlamaFileType",
    "row_bytes",
]

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


def row_bytes(ggml_type: GGMLType, n_elements: int) -> int:
    """Bytes taken by `n_elements` weights of `ggml_type` (a multiple of the block size)."""
    layout = BLOCK_LAYOUTS[ggml_type]
    return n_elements // layout.block_size * layout.type_size
