"""The model blueprint: a frozen `ModelConfig` built once from a GGUF file's metadata.

Architectures differ in a few facts (which tensors a block has, how sliding-window attention is laid
out); those facts live in one `ArchSpec` per architecture in `ARCHITECTURES`, the only place that
names architectures.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgelm.errors import ModelFileError
from edgelm.gguf import keys
from edgelm.gguf.keys import arch_key
from edgelm.gguf.reader import GGUFFile
from edgelm.gguf.string_array import is_string_list

__all__ = ["ARCHITECTURES", "ArchSpec", "ModelConfig", "RopeScaling"]

DEFAULT_RMS_NORM_EPS = 1e-5
DEFAULT_ROPE_BASE = 10000.0


@dataclass(frozen=True)
class ArchSpec:
    """What sets one architecture apart, as data."""

    name: str
    attn_bias: bool = False  # q/k/v projections carry biases (qwen2)
    qk_norm: bool = False  # per-head RMSNorm of q and k (qwen3, gemma3)
    post_norms: bool = False  # norms after attention and FFN too, "sandwich" (gemma3)
    embed_scale: bool = False  # embeddings multiplied by sqrt(dim) (gemma3)
    gelu: bool = False  # GELU-tanh gate instead of SiLU (gemma3)
    sliding_window_required: bool = False
    # Every `sliding_window_pattern`-th layer is global, the others local (0: no sliding window).
    sliding_window_pattern: int = 0
    local_rope_base: float | None = None  # rope base of the sliding-window layers


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec("llama"),
        ArchSpec("qwen2", attn_bias=True),
        ArchSpec("qwen3", qk_norm=True),
        ArchSpec(
            "gemma3",
            qk_norm=True,
            post_norms=True,
            embed_scale=True,
            gelu=True,
            sliding_window_required=True,
            sliding_window_pattern=6,
            local_rope_base=10000.0,
        ),
    )
}


@dataclass(frozen=True)
class RopeScaling:
    type: str  # "none", "linear", "yarn", "llama3"
    factor: float = 1.0
    original_context_length: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a model, read once from the file."""

    arch: str
    name: str
    n_layers: int
    dim: int  # model (embedding) width
    ffn_dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int  # width of one query/key head
    head_dim_v: int  # width of one value head
    vocab_size: int
    context_length: int  # the context the model was trained for
    rope_base: float
    rope_dim: int  # leading dims of each head that RoPE rotates
    rope_scaling: RopeScaling
    norm_eps: float
    sliding_window: int  # 0: no sliding-window layers
    sliding_window_pattern: int  # every n-th layer is global; 0: none
    local_rope_base: float
    tied_embeddings: bool  # no output.weight: the token embedding is the output head
    # Which layers use the sliding window, when the file lists them one by one (else the pattern).
    swa_layers: tuple[bool, ...] | None = None

    @property
    def spec(self) -> ArchSpec:
        return ARCHITECTURES[self.arch]

    @property
    def n_params(self) -> int:
        """Weights of the blueprint (the tied head counted once)."""
        s = self.spec
        attn = (
            self.dim * self.head_dim * (self.n_heads + self.n_kv_heads)
            + self.dim * self.n_kv_heads * self.head_dim_v
        )
        attn += self.n_heads * self.head_dim_v * self.dim
        if s.attn_bias:
            attn += self.n_heads * self.head_dim + self.n_kv_heads * (self.head_dim + self.head_dim_v)
        norms = self.dim * (4 if s.post_norms else 2) + (2 * self.head_dim if s.qk_norm else 0)
        block = attn + 3 * self.dim * self.ffn_dim + norms
        head = 0 if self.tied_embeddings else self.vocab_size * self.dim
        return self.n_layers * block + self.vocab_size * self.dim + head + self.dim

    def is_local_layer(self, layer: int) -> bool:
        """True for a sliding-window layer."""
        if self.sliding_window <= 0:
            return False
        if self.swa_layers is not None:
            return self.swa_layers[layer]
        p = self.sliding_window_pattern
        # As llama.cpp: the last layer of every group of p is global; p == 0 makes every layer local.
        return p == 0 or layer % p < p - 1

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> ModelConfig:
        arch = f.get(keys.ARCHITECTURE)
        if arch is None:
            raise ModelFileError(f.path, f"missing required key {keys.ARCHITECTURE!r}")
        if not isinstance(arch, str):
            raise ModelFileError(f.path, f"key {keys.ARCHITECTURE!r}: {_short(arch)} is not a string")
        spec = ARCHITECTURES.get(arch)
        if spec is None:
            raise ModelFileError(
                f.path, f"unknown architecture {arch!r} (supported: {', '.join(sorted(ARCHITECTURES))})"
            )
        get = _KeyReader(f, arch)
        n_layers = get.int(keys.BLOCK_COUNT)
        # Every block has tensors of its own: a larger count is damage, and would loop for nothing.
        if n_layers > len(f.tensors):
            key = get.key(keys.BLOCK_COUNT)
            raise ModelFileError(
                f.path, f"key {key!r}: {n_layers} blocks, more than the {len(f.tensors)} tensors"
            )
        dim = get.int(keys.EMBEDDING_LENGTH)
        n_heads = get.int(keys.HEAD_COUNT)
        n_kv_heads = get.int(keys.HEAD_COUNT_KV, default=n_heads)
        if dim % n_heads and get.optional(keys.KEY_LENGTH) is None:
            raise ModelFileError(
                f.path,
                f"key {get.key(keys.EMBEDDING_LENGTH)!r}: {dim} is not a multiple of "
                f"{get.key(keys.HEAD_COUNT)!r} {n_heads}",
            )
        if n_heads % n_kv_heads:
            raise ModelFileError(
                f.path,
                f"key {get.key(keys.HEAD_COUNT)!r}: {n_heads} is not a multiple of "
                f"{get.key(keys.HEAD_COUNT_KV)!r} {n_kv_heads}",
            )
        head_dim = get.int(keys.KEY_LENGTH, default=dim // n_heads)
        vocab = get.int(keys.VOCAB_SIZE, default=0) or _vocab_size_from_file(f)
        sliding_window = get.int(
            keys.SLIDING_WINDOW, default=None if spec.sliding_window_required else 0, low=0
        )
        pattern, swa_layers = _swa_pattern(get, spec.sliding_window_pattern, n_layers)
        tied = "output.weight" not in f.tensors
        return cls(
            arch=arch,
            name=str(f.get(keys.NAME, "")),
            n_layers=n_layers,
            dim=dim,
            ffn_dim=get.int(keys.FEED_FORWARD_LENGTH),
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            head_dim_v=get.int(keys.VALUE_LENGTH, default=head_dim),
            vocab_size=_positive(f, arch_key(keys.VOCAB_SIZE, arch), vocab),
            context_length=get.int(keys.CONTEXT_LENGTH),
            rope_base=get.float(keys.ROPE_FREQ_BASE, default=DEFAULT_ROPE_BASE),
            rope_dim=get.int(keys.ROPE_DIMENSION_COUNT, default=head_dim),
            rope_scaling=_rope_scaling(get),
            norm_eps=get.float(keys.RMS_NORM_EPS, default=DEFAULT_RMS_NORM_EPS),
            sliding_window=sliding_window,
            sliding_window_pattern=pattern if sliding_window else 0,
            local_rope_base=get.float(
                keys.ROPE_FREQ_BASE_SWA, default=spec.local_rope_base or DEFAULT_ROPE_BASE
            ),
            tied_embeddings=tied,
            swa_layers=swa_layers if sliding_window else None,
        )


def _positive(f: GGUFFile, key: str, value: int) -> int:
    if value <= 0:
        raise ModelFileError(f.path, f"key {key!r}: {value} must be positive")
    return value


def _vocab_size_from_file(f: GGUFFile) -> int:
    tokens = f.get(keys.TOKENIZER_TOKENS)
    if tokens is not None:
        if not is_string_list(tokens):
            raise ModelFileError(
                f.path, f"key {keys.TOKENIZER_TOKENS!r}: {_short(tokens)} is not a list of strings"
            )
        return len(tokens)
    embd = f.tensors.get("token_embd.weight")
    if embd is not None and len(embd.ne) == 2:
        return embd.ne[1]
    raise ModelFileError(
        f.path, "cannot tell the vocabulary size: no vocab_size key, tokens or token_embd.weight"
    )


def _swa_pattern(get: _KeyReader, default: int, n_layers: int) -> tuple[int, tuple[bool, ...] | None]:
    """The sliding-window layout: a period (int key) or one flag per layer (array key)."""
    value = get.optional(keys.SLIDING_WINDOW_PATTERN)
    if value is None:
        return default, None
    key = get.key(keys.SLIDING_WINDOW_PATTERN)
    if isinstance(value, np.ndarray):
        if value.dtype != bool or len(value) != n_layers:
            raise ModelFileError(get.f.path, f"key {key!r}: expected {n_layers} booleans, one per layer")
        return default, tuple(bool(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelFileError(get.f.path, f"key {key!r}: {value!r} is not a layer period >= 0")
    return value, None


def _rope_scaling(get: _KeyReader) -> RopeScaling:
    kind = get.optional(keys.ROPE_SCALING_TYPE)
    if kind is None:
        return RopeScaling("none")
    if not isinstance(kind, str):
        raise ModelFileError(
            get.f.path, f"key {get.key(keys.ROPE_SCALING_TYPE)!r}: {_short(kind)} is not a string"
        )
    if kind == "none":
        return RopeScaling("none")
    return RopeScaling(
        kind,
        factor=get.float(keys.ROPE_SCALING_FACTOR, default=1.0),
        original_context_length=get.int(keys.ROPE_SCALING_ORIG_CTX, default=0, low=0),
    )


_MISSING: Any = object()


def _short(value: Any) -> str:
    """A value for an error message, cut short (a damaged key may hold a 100k-entry array)."""
    return reprlib.repr(value)


class _KeyReader:
    """Typed, named access to `{arch}.…` keys with clear errors."""

    def __init__(self, f: GGUFFile, arch: str) -> None:
        self.f = f
        self.arch = arch

    def key(self, template: str) -> str:
        return arch_key(template, self.arch)

    def optional(self, template: str) -> Any:
        return self.f.get(self.key(template))

    def _get(self, template: str, default: Any, kind: str, check: Callable[[Any], bool]) -> Any:
        key = self.key(template)
        value = self.f.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING or default is None:
                raise ModelFileError(self.f.path, f"missing required key {key!r}")
            return default
        if not check(value):
            raise ModelFileError(self.f.path, f"key {key!r}: {_short(value)} is not {kind}")
        return value

    def int(self, template: str, default: Any = _MISSING, low: int = 1) -> int:
        def ok(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= low

        return int(self._get(template, default, f"an integer >= {low}", ok))

    def float(self, template: str, default: Any = _MISSING) -> float:
        def ok(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

        return float(self._get(template, default, "a positive finite number", ok))
