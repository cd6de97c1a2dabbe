"""Qwen3: the Llama block with per-head RMSNorm of q and k, NeoX-style RoPE."""

from __future__ import annotations

from edgelm.models import llama
from edgelm.models.transformer import Architecture

# q/k norms are part of the attention weights, applied by the shared attention layer.
ARCH = Architecture(name="qwen3", block=llama.block, rope_neox=True, decoder_block=True)
