"""Qwen2 / Qwen2.5: the Llama block with q/k/v biases and NeoX-style RoPE."""

from __future__ import annotations

from edgelm.models import llama
from edgelm.models.transformer import Architecture

# The biases are part of the attention weights; the block itself is Llama's.
ARCH = Architecture(name="qwen2", block=llama.block, rope_neox=True, decoder_block=True)
