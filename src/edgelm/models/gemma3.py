"""Gemma 3: sandwich norms, scaled embeddings, GELU-tanh, interleaved sliding-window layers."""

from __future__ import annotations

import math

import numpy as np

from edgelm.models.config import ModelConfig
from edgelm.models.layers import attention, feed_forward, norm, residual
from edgelm.models.transformer import Architecture, Layer, Segments, Transformer


def block(
    m: Transformer, layer: Layer, x: np.ndarray, positions: np.ndarray, segments: Segments
) -> np.ndarray:
    """x + post_norm(attn(norm(x))), then + post_norm(ffn(norm(.)))."""
    cfg = m.config
    assert layer.post_attn_norm is not None and layer.post_ffn_norm is not None
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
    x = residual(x, norm(m.ops, h, layer.post_attn_norm, cfg.norm_eps))
    h = feed_forward(m.ops, x, layer.ffn, gelu=True, norm=layer.ffn_norm, eps=cfg.norm_eps)
    return residual(x, norm(m.ops, h, layer.post_ffn_norm, cfg.norm_eps))


def _rope_base(cfg: ModelConfig, layer: int) -> float:
    return cfg.local_rope_base if cfg.is_local_layer(layer) else cfg.rope_base


ARCH = Architecture(
    name="gemma3",
    block=block,
    rope_neox=True,
    embed_scale=lambda cfg: math.sqrt(cfg.dim),
    layer_rope_base=_rope_base,
    uses_gelu=True,
)
