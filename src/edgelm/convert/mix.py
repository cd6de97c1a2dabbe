"""Which GGML type each tensor gets for a target file type, following llama.cpp's choices.

llama.cpp (`llama-quant.cpp`, `llama_tensor_get_type`) does not quantize every tensor to the file type:
the output head (or the tied token embedding that serves as it) gets Q6_K, the *_K_M mixes give some
attn_v and ffn_down layers Q6_K, and a row length that the block size does not divide falls back to a
32-weight type.  Files made here therefore match what users get from llama-quantize.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from gguf import LlamaFileType

from edgelm.gguf.constants import BLOCK_LAYOUTS, GGMLType

__all__ = ["FileType", "TensorSlot", "choose_types"]


class FileType(enum.Enum):
    """A target for a whole model file: (GGUF file_type, the default tensor type)."""

    F32 = ("f32", LlamaFileType.ALL_F32, GGMLType.F32)
    F16 = ("f16", LlamaFileType.MOSTLY_F16, GGMLType.F16)
    BF16 = ("bf16", LlamaFileType.MOSTLY_BF16, GGMLType.BF16)
    Q8_0 = ("q8_0", LlamaFileType.MOSTLY_Q8_0, GGMLType.Q8_0)
    Q4_0 = ("q4_0", LlamaFileType.MOSTLY_Q4_0, GGMLType.Q4_0)
    Q4_K_M = ("q4_k_m", LlamaFileType.MOSTLY_Q4_K_M, GGMLType.Q4_K)
    Q5_K_M = ("q5_k_m", LlamaFileType.MOSTLY_Q5_K_M, GGMLType.Q5_K)
    Q6_K = ("q6_k", LlamaFileType.MOSTLY_Q6_K, GGMLType.Q6_K)

    def __init__(self, label: str, file_type: LlamaFileType, default_type: GGMLType) -> None:
        self.label = label
        self.file_type = file_type
        self.default_type = default_type

    @property
    def is_quantized(self) -> bool:
        return BLOCK_LAYOUTS[self.default_type].block_size > 1

    @classmethod
    def parse(cls, label: str) -> FileType:
        for ft in cls:
            if ft.label == label.lower():
                return ft
        raise ValueError(f"unknown quantization {label!r} (choose from: {', '.join(ft.label for ft in cls)})")


@dataclass(frozen=True)
class TensorSlot:
    """What the mix needs to know about one tensor."""

    name: str
    ne: tuple[int, ...]  # ggml order
    source_type: GGMLType


# The fallback of a 256-weight type for rows its block size does not divide.
_FALLBACK = {GGMLType.Q4_K: GGMLType.Q5_0, GGMLType.Q5_K: GGMLType.Q5_1, GGMLType.Q6_K: GGMLType.Q8_0}
_OUTPUT = "output.weight"
_TOKEN_EMBD = "token_embd.weight"


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    # The first and last eighth of the layers, and every third one between, get more bits.
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _quantizable(slot: TensorSlot) -> bool:
    name = slot.name
    return len(slot.ne) >= 2 and name.endswith("weight") and "_norm.weight" not in name


def _fits(ggml_type: GGMLType, n_cols: int) -> bool:
    return n_cols % BLOCK_LAYOUTS[ggml_type].block_size == 0


def choose_types(slots: Sequence[TensorSlot], ftype: FileType) -> dict[str, GGMLType]:
    """The type of every tensor, in llama.cpp's mix for `ftype`."""
    tied = all(s.name != _OUTPUT for s in slots)
    n_attn_v = sum(1 for s in slots if "attn_v.weight" in s.name)
    n_ffn_down = sum(1 for s in slots if "ffn_down.weight" in s.name)
    i_attn_v = i_ffn_down = 0
    mixed = ftype in (FileType.Q4_K_M, FileType.Q5_K_M)
    out: dict[str, GGMLType] = {}
    for s in slots:
        if not _quantizable(s):
            out[s.name] = s.source_type
            continue
        t = ftype.default_type
        if ftype.is_quantized:
            if s.name == _OUTPUT or (tied and s.name == _TOKEN_EMBD):
                if not _fits(t, s.ne[0]):
                    t = GGMLType.Q8_0
                elif t != GGMLType.Q8_0:
                    t = GGMLType.Q6_K
            elif "attn_v.weight" in s.name:
                if mixed and _use_more_bits(i_attn_v, n_attn_v):
                    t = GGMLType.Q6_K
                i_attn_v += 1
            elif "ffn_down.weight" in s.name:
                if mixed and _use_more_bits(i_ffn_down, n_ffn_down):
                    t = GGMLType.Q6_K
                i_ffn_down += 1
            if not _fits(t, s.ne[0]):
                t = _FALLBACK.get(t, t)
                if not _fits(t, s.ne[0]):
                    t = GGMLType.F16
        out[s.name] = t
    return out
