"""Shapes of real models, for synthetic random-weight files (`edgelm synth --like NAME`).

Numbers are the published configurations of each model (hidden size, layers, heads, FFN width,
vocabulary, context, RoPE); `tiny-<arch>` presets are a few-MB models of each architecture for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgelm.models.config import ModelConfig, RopeScaling

__all__ = ["PRESETS", "Llama3Rope", "Preset", "get_preset"]


@dataclass(frozen=True)
class Llama3Rope:
    """Llama 3.1+ frequency-dependent RoPE scaling, stored in the file as a `rope_freqs` tensor."""

    factor: float = 32.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context_length: int = 8192


@dataclass(frozen=True)
class Preset:
    config: ModelConfig
    llama3_rope: Llama3Rope | None = None


_NO_SCALING = RopeScaling("none")


def _config(
    arch: str,
    name: str,
    *,
    n_layers: int,
    dim: int,
    ffn_dim: int,
    n_heads: int,
    n_kv_heads: int,
    vocab_size: int,
    context_length: int,
    rope_base: float,
    norm_eps: float,
    head_dim: int | None = None,
    sliding_window: int = 0,
    sliding_window_pattern: int = 0,
    local_rope_base: float = 10000.0,
) -> ModelConfig:
    hd = head_dim or dim // n_heads
    return ModelConfig(
        arch=arch,
        name=name,
        n_layers=n_layers,
        dim=dim,
        ffn_dim=ffn_dim,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=hd,
        head_dim_v=hd,
        vocab_size=vocab_size,
        context_length=context_length,
        rope_base=rope_base,
        rope_dim=hd,
        rope_scaling=_NO_SCALING,
        norm_eps=norm_eps,
        sliding_window=sliding_window,
        sliding_window_pattern=sliding_window_pattern,
        local_rope_base=local_rope_base,
        tied_embeddings=True,
    )


_SMOLLM2 = dict(vocab_size=49152, context_length=8192, rope_base=100000.0, norm_eps=1e-5)
_QWEN = dict(vocab_size=151936, rope_base=1000000.0, norm_eps=1e-6)
# Tiny models keep every row a multiple of 256 so that the K-quants apply to all matrices.
_TINY = dict(vocab_size=512, context_length=2048, norm_eps=1e-6)

PRESETS: dict[str, Preset] = {
    "smollm2-135m": Preset(
        _config(
            "llama", "SmolLM2-135M", n_layers=30, dim=576, ffn_dim=1536, n_heads=9, n_kv_heads=3, **_SMOLLM2
        )
    ),
    "smollm2-360m": Preset(
        _config(
            "llama", "SmolLM2-360M", n_layers=32, dim=960, ffn_dim=2560, n_heads=15, n_kv_heads=5, **_SMOLLM2
        )
    ),
    "qwen2.5-0.5b": Preset(
        _config(
            "qwen2",
            "Qwen2.5-0.5B",
            n_layers=24,
            dim=896,
            ffn_dim=4864,
            n_heads=14,
            n_kv_heads=2,
            context_length=32768,
            **_QWEN,
        )
    ),
    "qwen3-0.6b": Preset(
        _config(
            "qwen3",
            "Qwen3-0.6B",
            n_layers=28,
            dim=1024,
            ffn_dim=3072,
            n_heads=16,
            n_kv_heads=8,
            head_dim=128,
            context_length=40960,
            **_QWEN,
        )
    ),
    "llama-3.2-1b": Preset(
        _config(
            "llama",
            "Llama-3.2-1B",
            n_layers=16,
            dim=2048,
            ffn_dim=8192,
            n_heads=32,
            n_kv_heads=8,
            vocab_size=128256,
            context_length=131072,
            rope_base=500000.0,
            norm_eps=1e-5,
        ),
        llama3_rope=Llama3Rope(),
    ),
    "gemma-3-270m": Preset(
        _config(
            "gemma3",
            "Gemma-3-270M",
            n_layers=18,
            dim=640,
            ffn_dim=2048,
            n_heads=4,
            n_kv_heads=1,
            head_dim=256,
            vocab_size=262144,
            context_length=32768,
            rope_base=1000000.0,
            norm_eps=1e-6,
            sliding_window=512,
            sliding_window_pattern=6,
        )
    ),
    "tiny-llama": Preset(
        _config(
            "llama",
            "tiny-llama",
            n_layers=2,
            dim=256,
            ffn_dim=512,
            n_heads=4,
            n_kv_heads=2,
            rope_base=10000.0,
            **_TINY,
        )
    ),
    "tiny-qwen2": Preset(
        _config(
            "qwen2",
            "tiny-qwen2",
            n_layers=2,
            dim=256,
            ffn_dim=512,
            n_heads=4,
            n_kv_heads=2,
            rope_base=1000000.0,
            **_TINY,
        )
    ),
    "tiny-qwen3": Preset(
        _config(
            "qwen3",
            "tiny-qwen3",
            n_layers=2,
            dim=256,
            ffn_dim=512,
            n_heads=4,
            n_kv_heads=2,
            head_dim=64,
            rope_base=1000000.0,
            **_TINY,
        )
    ),
    "tiny-gemma3": Preset(
        _config(
            "gemma3",
            "tiny-gemma3",
            n_layers=6,
            dim=256,
            ffn_dim=512,
            n_heads=4,
            n_kv_heads=1,
            head_dim=64,
            rope_base=1000000.0,
            sliding_window=16,
            sliding_window_pattern=6,
            **_TINY,
        )
    ),
}


def get_preset(name: str) -> Preset:
    preset = PRESETS.get(name.lower())
    if preset is None:
        raise ValueError(f"unknown model {name!r} (choose from: {', '.join(PRESETS)})")
    return preset


def with_vocab_size(preset: Preset, vocab_size: int) -> Preset:
    return replace(preset, config=replace(preset.config, vocab_size=vocab_size))
