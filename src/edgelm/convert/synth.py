"""Synthetic models: random weights with the exact shapes of a real model, written as a real GGUF file.

Speed and memory depend on shapes and quantization, not on weight values, so a synthetic file tells a
user how fast a model will run on their device before they download it, and gives tests and
benchmarks models of every architecture without a download.

Weights are scaled so activations stay finite through all layers: linear weights have variance
1/fan_in (each projection keeps the scale of its input), norm weights sit near one, and the token
embedding is scaled so that the tied output head gives logits with a spread of a few units.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgelm.convert.mix import FileType, TensorSlot, choose_types
from edgelm.convert.presets import Llama3Rope, Preset, get_preset, with_vocab_size
from edgelm.convert.synth_vocab import synthetic_vocab_fields
from edgelm.errors import ModelFileError
from edgelm.gguf import keys
from edgelm.gguf.constants import GGMLType, GGUFValueType
from edgelm.gguf.keys import arch_key
from edgelm.gguf.reader import GGUFFile, MetaField
from edgelm.gguf.writer import PlannedTensor, write_gguf
from edgelm.models.config import ModelConfig
from edgelm.models.layout import ROPE_FREQS, TOKEN_EMBD, TensorSpec, expected_tensors
from edgelm.weights.quantize import quantize

__all__ = ["SynthResult", "synthesize"]

QUANTIZATION_VERSION = 2
# Standard deviation of the token embedding times sqrt(dim): the logit spread of the tied head.
EMBED_LOGIT_SPREAD = 3.0
NORM_JITTER = 0.05
BIAS_STD = 0.02


@dataclass(frozen=True)
class SynthResult:
    path: str
    config: ModelConfig
    n_params: int
    n_bytes: int
    types: dict[str, GGMLType]


def config_fields(cfg: ModelConfig, ftype: FileType) -> dict[str, MetaField]:
    """The general and `{arch}.*` metadata of a model with config `cfg`."""
    u32, f32, s = GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.STRING
    a = cfg.arch
    fields = {
        keys.ARCHITECTURE: MetaField(a, s),
        keys.NAME: MetaField(cfg.name, s),
        keys.FILE_TYPE: MetaField(int(ftype.file_type), u32),
        keys.QUANTIZATION_VERSION: MetaField(QUANTIZATION_VERSION, u32),
        arch_key(keys.BLOCK_COUNT, a): MetaField(cfg.n_layers, u32),
        arch_key(keys.CONTEXT_LENGTH, a): MetaField(cfg.context_length, u32),
        arch_key(keys.EMBEDDING_LENGTH, a): MetaField(cfg.dim, u32),
        arch_key(keys.FEED_FORWARD_LENGTH, a): MetaField(cfg.ffn_dim, u32),
        arch_key(keys.HEAD_COUNT, a): MetaField(cfg.n_heads, u32),
        arch_key(keys.HEAD_COUNT_KV, a): MetaField(cfg.n_kv_heads, u32),
        arch_key(keys.KEY_LENGTH, a): MetaField(cfg.head_dim, u32),
        arch_key(keys.VALUE_LENGTH, a): MetaField(cfg.head_dim_v, u32),
        arch_key(keys.ROPE_FREQ_BASE, a): MetaField(cfg.rope_base, f32),
        arch_key(keys.ROPE_DIMENSION_COUNT, a): MetaField(cfg.rope_dim, u32),
        arch_key(keys.RMS_NORM_EPS, a): MetaField(cfg.norm_eps, f32),
        arch_key(keys.VOCAB_SIZE, a): MetaField(cfg.vocab_size, u32),
    }
    if cfg.sliding_window:
        fields[arch_key(keys.SLIDING_WINDOW, a)] = MetaField(cfg.sliding_window, u32)
    return fields


def llama3_rope_factors(rope: Llama3Rope, base: float, rope_dim: int) -> np.ndarray:
    """Per-frequency divisors of Llama 3.1+ RoPE scaling (as its converter stores in `rope_freqs`)."""
    freqs = 1.0 / base ** (np.arange(0, rope_dim, 2, dtype=np.float64) / rope_dim)
    wavelen = 2 * math.pi / freqs
    low_wavelen = rope.original_context_length / rope.low_freq_factor
    high_wavelen = rope.original_context_length / rope.high_freq_factor
    smooth = (rope.original_context_length / wavelen - rope.low_freq_factor) / (
        rope.high_freq_factor - rope.low_freq_factor
    )
    mid = 1.0 / ((1 - smooth) / rope.factor + smooth)
    factors = np.where(wavelen < high_wavelen, 1.0, np.where(wavelen > low_wavelen, rope.factor, mid))
    return factors.astype(np.float32)


def _random_values(spec: TensorSpec, cfg: ModelConfig, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(reversed(spec.ne))
    if spec.is_norm:
        return (1.0 + NORM_JITTER * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    if spec.is_bias:
        return BIAS_STD * rng.standard_normal(shape, dtype=np.float32)
    # The embedding's scale sets the logit spread of the tied head; projections keep their input's scale.
    std = EMBED_LOGIT_SPREAD / math.sqrt(cfg.dim) if spec.name == TOKEN_EMBD else 1.0 / math.sqrt(spec.ne[0])
    w = rng.standard_normal(shape, dtype=np.float32)
    w *= np.float32(std)
    return w


def _producer(values: Callable[[], np.ndarray], ggml_type: GGMLType) -> Callable[[], np.ndarray]:
    return lambda: quantize(values(), ggml_type)


def synthesize(
    like: str,
    quant: str,
    out: str | os.PathLike[str],
    *,
    vocab: str | os.PathLike[str] | None = None,
    seed: int = 0,
    on_tensor: Callable[[PlannedTensor], None] | None = None,
    on_plan: Callable[[list[PlannedTensor]], None] | None = None,
) -> SynthResult:
    """Write a random-weight model with the shapes of preset `like`, quantized as `quant`."""
    preset: Preset = get_preset(like)
    ftype = FileType.parse(quant)
    if vocab is not None:
        vf = GGUFFile.open(vocab)
        tok_fields = {k: f for k, f in vf.fields.items() if k.startswith(keys.TOKENIZER_PREFIX)}
        tokens = vf.get(keys.TOKENIZER_TOKENS)
        if not tokens:
            raise ModelFileError(
                vf.path, f"no tokenizer in this file (key {keys.TOKENIZER_TOKENS!r} missing)"
            )
        preset = with_vocab_size(preset, len(tokens))
    else:
        tok_fields = synthetic_vocab_fields(preset.config.vocab_size, seed)
    cfg = preset.config
    specs = [s for s in expected_tensors(cfg) if s.name != ROPE_FREQS]
    extra: dict[str, np.ndarray] = {}
    if preset.llama3_rope is not None:
        factors = llama3_rope_factors(preset.llama3_rope, cfg.rope_base, cfg.rope_dim)
        extra[ROPE_FREQS] = factors
        specs.insert(1, TensorSpec(ROPE_FREQS, factors.shape))
    types = choose_types([TensorSlot(s.name, s.ne, GGMLType.F32) for s in specs], ftype)
    planned = []
    for index, spec in enumerate(specs):

        def values(spec: TensorSpec = spec, index: int = index) -> np.ndarray:
            if spec.name in extra:
                return extra[spec.name]
            # One generator per tensor: a tensor's values do not depend on the others or their order.
            return _random_values(spec, cfg, np.random.default_rng([seed, index]))

        t = types[spec.name]
        planned.append(PlannedTensor(spec.name, t, tuple(reversed(spec.ne)), _producer(values, t)))
    fields = config_fields(cfg, ftype) | tok_fields
    write_gguf(out, cfg.arch, fields, planned, on_tensor=on_tensor, on_plan=on_plan)
    n_params = sum(int(np.prod(t.shape)) for t in planned)
    return SynthResult(os.fspath(out), cfg, n_params, sum(t.nbytes for t in planned), types)
