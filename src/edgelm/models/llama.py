"""Llama (2, 3, 3.x), SmolLM2, TinyLlama: pre-norm blocks, SwiGLU, RoPE on adjacent pairs."""

from __future__ import annotations

import numpy as np

from edgelm.models.layers import attention, feed_forward, residual
from edgelm.models.transformer import Architecture, Layer, Segments, Transformer


def block(
    m: Transformer, layer: Layer, x: np.ndarray, positions: np.ndarray, segments: Segments
) -> np.ndarray:
    """x + attn(norm(x)), then + ffn(norm(.))."""
    cfg = m.config
    h = attention(
        m.ops,
        x,
        positions,
        layer.attn,
        segments,
        layer.rope,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.norm_eps,
        m.q_scale,
        0,
        norm=layer.attn_norm,
    )
    x = residual(x, h)
    return residual(x, feed_forward(m.ops, x, layer.ffn, gelu=False, norm=layer.ffn_norm, eps=cfg.norm_eps))


ARCH = Architecture(name="llama", block=block, rope_neox=False)
