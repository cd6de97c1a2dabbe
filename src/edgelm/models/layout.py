"""Which tensors a model of a given config has, under their GGUF names, with their shapes.

Shapes are in ggml order (`ne`: the contiguous row length first), as the file stores them.  The same
table serves loading (every tensor checked against it) and writing synthetic models.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgelm.models.config import ModelConfig

__all__ = ["TensorSpec", "expected_tensors"]

TOKEN_EMBD = "token_embd.weight"
OUTPUT = "output.weight"
OUTPUT_NORM = "output_norm.weight"
ROPE_FREQS = "rope_freqs.weight"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    ne: tuple[int, ...]  # ggml order
    is_norm: bool = False  # a norm weight (kept in F32, centred on one)
    is_bias: bool = False
    optional: bool = False


def expected_tensors(cfg: ModelConfig) -> list[TensorSpec]:
    """Every tensor of `cfg`'s model in file order."""
    s = cfg.spec
    q_dim = cfg.n_heads * cfg.head_dim
    k_dim = cfg.n_kv_heads * cfg.head_dim
    v_dim = cfg.n_kv_heads * cfg.head_dim_v
    o_dim = cfg.n_heads * cfg.head_dim_v
    out = [TensorSpec(TOKEN_EMBD, (cfg.dim, cfg.vocab_size))]
    if cfg.rope_scaling.type == "llama3":
        out.append(TensorSpec(ROPE_FREQS, (cfg.rope_dim // 2,), optional=True))
    for i in range(cfg.n_layers):
        b = f"blk.{i}."
        out.append(TensorSpec(b + "attn_norm.weight", (cfg.dim,), is_norm=True))
        out.append(TensorSpec(b + "attn_q.weight", (cfg.dim, q_dim)))
        out.append(TensorSpec(b + "attn_k.weight", (cfg.dim, k_dim)))
        out.append(TensorSpec(b + "attn_v.weight", (cfg.dim, v_dim)))
        if s.attn_bias:
            out.append(TensorSpec(b + "attn_q.bias", (q_dim,), is_bias=True))
            out.append(TensorSpec(b + "attn_k.bias", (k_dim,), is_bias=True))
            out.append(TensorSpec(b + "attn_v.bias", (v_dim,), is_bias=True))
        if s.qk_norm:
            out.append(TensorSpec(b + "attn_q_norm.weight", (cfg.head_dim,), is_norm=True))
            out.append(TensorSpec(b + "attn_k_norm.weight", (cfg.head_dim,), is_norm=True))
        out.append(TensorSpec(b + "attn_output.weight", (o_dim, cfg.dim)))
        if s.post_norms:
            out.append(TensorSpec(b + "post_attention_norm.weight", (cfg.dim,), is_norm=True))
        out.append(TensorSpec(b + "ffn_norm.weight", (cfg.dim,), is_norm=True))
        out.append(TensorSpec(b + "ffn_gate.weight", (cfg.dim, cfg.ffn_dim)))
        out.append(TensorSpec(b + "ffn_up.weight", (cfg.dim, cfg.ffn_dim)))
        out.append(TensorSpec(b + "ffn_down.weight", (cfg.ffn_dim, cfg.dim)))
        if s.post_norms:
            out.append(TensorSpec(b + "post_ffw_norm.weight", (cfg.dim,), is_norm=True))
    out.append(TensorSpec(OUTPUT_NORM, (cfg.dim,), is_norm=True))
    if not cfg.tied_embeddings:
        out.append(TensorSpec(OUTPUT, (cfg.dim, cfg.vocab_size)))
    return out
