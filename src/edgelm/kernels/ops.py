"""The kernel seam: the set of operations a forward pass needs, chosen once at load.

`Ops` is the protocol; `REFERENCE` is the NumPy implementation (every native kernel is tested against
it); native backends register themselves in `BACKENDS`.  `select_ops` resolves the choice once:
`EDGELM_ISA` (or the `isa` argument) forces one, otherwise the best available.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgelm.kernels import composite, reference
from edgelm.kernels.composite import DecoderBlock, QKVWeights, Rope
from edgelm.kernels.packed import Weight
from edgelm.weights.qtensor import FileRows, QTensor

__all__ = ["BACKENDS", "REFERENCE", "Ops", "select_ops"]

ISA_ENV = "EDGELM_ISA"


class Ops(Protocol):
    """What a forward pass calls; shapes as in `edgelm.kernels.reference`."""

    name: str

    def prepare(
        self, weights: Sequence[QTensor], release: Callable[[np.ndarray], None] | None = None
    ) -> list[Weight]:
        """Each of `weights` as this backend's `matmul` reads it fastest (repacked, or the tensor
        itself); `release` is called on each slice of a tensor's data copied out."""
        ...

    def matmul(self, x: np.ndarray, w: Weight) -> np.ndarray: ...

    def embedding(self, w: QTensor, ids: np.ndarray, rows: FileRows | None = None) -> np.ndarray:
        """Rows `ids` of the file's tensor w, dequantized: float32 (len(ids), K), as `w.rows(ids)`;
        read from the file with pread when `rows` says where w lies in it."""
        ...

    def rms_norm(self, x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray: ...

    def rope_angles(
        self,
        positions: np.ndarray,
        rope_dim: int,
        base: float,
        freq_scale: float = 1.0,
        factors: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def rope(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, neox: bool) -> np.ndarray: ...

    def attention(
        self,
        q: np.ndarray,
        k: np.ndarray,
        v: np.ndarray,
        q_pos: np.ndarray,
        k_pos: np.ndarray,
        scale: float,
        window: int = 0,
    ) -> np.ndarray: ...

    def silu(self, x: np.ndarray) -> np.ndarray: ...

    def gelu_tanh(self, x: np.ndarray) -> np.ndarray: ...

    def silu_mul(self, g: np.ndarray, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """silu(g) * u, into `out` when given (which may be `g` itself)."""
        ...

    def gelu_tanh_mul(self, g: np.ndarray, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """gelu_tanh(g) * u, into `out` when given (which may be `g` itself)."""
        ...

    def qkv(
        self,
        x: np.ndarray,
        w: QKVWeights,
        positions: np.ndarray,
        rope: Rope,
        n_heads: int,
        n_kv_heads: int,
        eps: float,
        norm: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """q, k, v of a block, as `composite.qkv` composes them."""
        ...

    def ffn(
        self,
        x: np.ndarray,
        gate: Weight,
        up: Weight,
        down: Weight,
        gelu: bool,
        norm: np.ndarray | None = None,
        eps: float = 0.0,
    ) -> np.ndarray:
        """A gated feed-forward, as `composite.ffn` composes it."""
        ...

    def attention_cached(
        self,
        q: np.ndarray,
        k: np.ndarray,
        v: np.ndarray,
        k_cache: np.ndarray,
        v_cache: np.ndarray,
        key_pos: np.ndarray,
        start: int,
        q_pos: np.ndarray,
        scale: float,
        window: int,
    ) -> np.ndarray:
        """New keys and values stored in a cache, then attention over it, as `composite.attention_cached`."""
        ...

    def block_plan(self, b: DecoderBlock) -> object:
        """`b` bound for `block`: checked, and its weights held, once at load."""
        ...

    def settle(self, weights: Sequence[Weight]) -> None:
        """Starts what `prepare` left for later on these weights; a model calls it once its first
        step is out, so that work never delays a first token (native: repacked weights moved onto
        huge pages in the background)."""
        ...

    def block(
        self,
        plan: object,
        x: np.ndarray,
        positions: np.ndarray,
        k_cache: np.ndarray,
        v_cache: np.ndarray,
        key_pos: np.ndarray,
        start: int,
    ) -> np.ndarray:
        """x (T, E) through the block `plan` binds, as `composite.block`; x itself may be overwritten
        with the result."""
        ...


def _as_is(weights: Sequence[QTensor], release: Callable[[np.ndarray], None] | None = None) -> list[Weight]:
    return list(weights)


@dataclass(frozen=True)
class _ReferenceOps:
    name: str = "numpy"
    prepare = staticmethod(_as_is)
    matmul = staticmethod(reference.matmul)
    embedding = staticmethod(reference.embedding)
    rms_norm = staticmethod(reference.rms_norm)
    rope_angles = staticmethod(reference.rope_angles)
    rope = staticmethod(reference.rope)
    attention = staticmethod(reference.attention)
    silu = staticmethod(reference.silu)
    gelu_tanh = staticmethod(reference.gelu_tanh)
    silu_mul = staticmethod(reference.silu_mul)
    gelu_tanh_mul = staticmethod(reference.gelu_tanh_mul)

    def qkv(
        self,
        x: np.ndarray,
        w: QKVWeights,
        positions: np.ndarray,
        rope: Rope,
        n_heads: int,
        n_kv_heads: int,
        eps: float,
        norm: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return composite.qkv(self, x, w, positions, rope, n_heads, n_kv_heads, eps, norm)

    def ffn(
        self,
        x: np.ndarray,
        gate: Weight,
        up: Weight,
        down: Weight,
        gelu: bool,
        norm: np.ndarray | None = None,
        eps: float = 0.0,
    ) -> np.ndarray:
        return composite.ffn(self, x, gate, up, down, gelu, norm, eps)

    def attention_cached(self, *args: object) -> np.ndarray:
        return composite.attention_cached(self, *args)  # type: ignore[arg-type]

    def block_plan(self, b: DecoderBlock) -> object:
        return b

    def settle(self, weights: Sequence[Weight]) -> None:
        return None

    def block(self, plan: object, *args: object) -> np.ndarray:
        assert isinstance(plan, DecoderBlock)
        return composite.block(self, plan, *args)  # type: ignore[arg-type]


REFERENCE: Ops = _ReferenceOps()

# name -> factory(n_threads) returning the backend, or None when it cannot run on this machine
# (n_threads 0: one per physical core). Native backends add themselves here; the last available wins.
BACKENDS: dict[str, Callable[[int], Ops | None]] = {"numpy": lambda n_threads: REFERENCE}


def _register_native() -> None:
    """Add the native backends once (nothing is added when the extension was not built)."""
    try:
        from edgelm.kernels import native
    except ImportError:
        return
    native.register()


def select_ops(name: str | None = None, n_threads: int | None = None) -> Ops:
    """The backend named `name` (or by $EDGELM_ISA), else the best one available, on `n_threads`
    threads (default: one per physical core)."""
    threads = n_threads or 0
    _register_native()
    name = name or os.environ.get(ISA_ENV) or None
    if name is not None:
        factory = BACKENDS.get(name)
        if factory is None:
            raise ValueError(f"unknown kernel backend {name!r} (available: {', '.join(BACKENDS)})")
        ops = factory(threads)
        if ops is None:
            raise ValueError(f"kernel backend {name!r} cannot run on this machine")
        return ops
    for factory in reversed(list(BACKENDS.values())):
        ops = factory(threads)
        if ops is not None:
            return ops
    return REFERENCE
