"""Llama (2, 3, 3.x), SmolLM2, TinyLlama: pre-norm blocks, SwiGLU, RoPE on adjacent pairs."""

from __future__ import annotations

import numpy as np

from edgelm.models.layers import FFN_BLOCK_MIN_ROWS, attention, feed_forward, residual, sole_cache
from edgelm.models.transformer import Architecture, Layer, Segments, Transformer


def block(
    m: Transformer, layer: Layer, x: np.ndarray, positions: np.ndarray, segments: Segments
) -> np.ndarray:
    """x + attn(norm(x)), then + ffn(norm(.))."""
    t = x.shape[0]
    cache = sole_cache(segments, t)
    # One sequence's step (decode, a short prompt) in one call: the rows fit one feed-forward block,
    # as in the composed path, and the cache takes them in place.
    if layer.plan is not None and cache is not None and t <= FFN_BLOCK_MIN_ROWS:
        start = cache.claim(positions)
        if start is not None:
            return m.ops.block(layer.plan, x, positions, cache.k, cache.v, cache.pos[: cache.n_tokens], start)
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
        layer.window,
        norm=layer.attn_norm,
    )
    x = residual(x, h)
    y = feed_forward(m.ops, x, layer.ffn, m.arch.uses_gelu, norm=layer.ffn_norm, eps=cfg.norm_eps)
    return residual(x, y)


ARCH = Architecture(name="llama", block=block, rope_neox=False, decoder_block=True)
