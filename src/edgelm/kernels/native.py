"""Native kernels behind the `Ops` seam: the `edgelm._native` extension, one backend per ISA.

`NativeOps(isa)` binds one instruction set's kernels and a persistent thread pool (one thread per
physical core unless told otherwise); its methods take and return NumPy arrays with the shapes and
semantics of `edgelm.kernels.reference`.  `register()` adds a factory per ISA to
`edgelm.kernels.ops.BACKENDS` (importing this module does that and nothing else); each factory
returns None where the CPU cannot run its ISA, and nothing is registered when the extension was not
built, so the NumPy backend keeps working.
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping, Sequence

import numpy as np

from edgelm.gguf.constants import GGMLType
from edgelm.kernels.arena import anonymous_bytes, huge_pages_later, mapping_of
from edgelm.kernels.composite import DecoderBlock, QKVWeights, Rope
from edgelm.kernels.ops import BACKENDS, Ops
from edgelm.kernels.packed import Layout, PackedTensor, Weight
from edgelm.weights.qtensor import FileRows, QTensor

try:
    from edgelm import _native
except ImportError:  # built without a compiler: the NumPy kernels serve
    _native = None

__all__ = ["NativeOps", "available_isas", "measure_bandwidth", "register"]

_F32 = np.float32
R16_ROWS = 16  # rows per group of the R16 layout
# Weights are repacked this many source bytes at a time, each slice's file pages released before the
# next: a load never holds a tensor twice over.
REPACK_SLICE_BYTES = 8 << 20
_ALIGN = 4096  # each repacked tensor starts on a page of its own


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=_F32)


def _i64(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int64)


def _opt(x: np.ndarray | None) -> np.ndarray | None:
    return None if x is None else _f32(x)


def _matrix(w: Weight) -> tuple[np.ndarray, int, int, int, int]:
    """A weight as the native composite ops take it: (bytes, type, n_rows, k, layout)."""
    if isinstance(w, PackedTensor):
        return w.kernel_args
    return (w.data, int(w.ggml_type), w.data.shape[0], w.shape[-1], int(w.layout))


def available_isas() -> list[str]:
    """ISAs this build and this CPU can run, slowest first (empty without the extension)."""
    return [] if _native is None else list(_native.available_isas())


class NativeOps:
    """The kernels of one ISA: an `Ops` backend, plus fused extras (`silu_mul`, `embedding`, ...)."""

    def __init__(self, isa: str, n_threads: int = 0) -> None:
        if _native is None:
            raise RuntimeError("edgelm's native kernels are not built")
        self._k = _native.Kernels(isa, n_threads)
        self.name: str = isa

    @property
    def n_threads(self) -> int:
        return int(self._k.n_threads)

    def __repr__(self) -> str:
        return f"NativeOps({self.name!r}, n_threads={self.n_threads})"

    # -- the Ops protocol ------------------------------------------------------------------------

    @property
    def repacked_types(self) -> list[GGMLType]:
        """The tensor types whose matrices `prepare` repacks (the R16 layout)."""
        return [t for t in GGMLType if self._k.r16_supported(int(t))]

    def packable(self, w: QTensor) -> bool:
        """Whether `prepare` would repack `w` (these kernels have an R16 product for its type)."""
        return len(w.shape) == 2 and w.shape[0] % R16_ROWS == 0 and bool(self._k.r16_supported(w.ggml_type))

    def prepare(
        self, weights: Sequence[QTensor], release: Callable[[np.ndarray], None] | None = None
    ) -> list[Weight]:
        """`weights` in the layout these kernels multiply fastest: repacked (R16) where they have it.

        The repacked tensors share one anonymous mapping, on huge pages where the system has them
        (edgelm.kernels.arena): those that do not come cheap at once are left to `settle`.
        `release(view)` is called on each slice of a file's bytes once it is copied out, to drop
        those pages from memory; the sources themselves are left as they are.
        """
        todo = [w for w in weights if self.packable(w)]
        spans: dict[int, tuple[int, int]] = {}  # id(w) -> (offset, bytes per row)
        total = 0
        for w in todo:
            row = int(self._k.r16_row_bytes(w.ggml_type, w.shape[-1]))
            spans[id(w)] = (total, row)
            total += -(-row * w.shape[0] // _ALIGN) * _ALIGN
        arena = anonymous_bytes(total)
        packed: dict[int, PackedTensor] = {}
        for w in todo:
            offset, row = spans[id(w)]
            dst = arena[offset : offset + row * w.shape[0]].reshape(w.shape[0], row)
            self._repack(w, dst, release)
            packed[id(w)] = PackedTensor(w.name, w.ggml_type, w.shape, dst, Layout.R16, w)
        if release is not None:
            # Once more, whole: reading a tensor maps the file's large pages around it, which may
            # bring back the edges of the tensors released before it.
            for w in todo:
                release(w.data)
        return [packed.get(id(w), w) for w in weights]

    def settle(self, weights: Sequence[Weight]) -> None:
        """Moves the mappings of the repacked ones among `weights` onto huge pages in a background
        thread (`arena.huge_pages_later`; ranges that got them at load are left as they are)."""
        arenas = {id(a): a for a in (mapping_of(w.data) for w in weights if isinstance(w, PackedTensor))}
        for arena in arenas.values():
            huge_pages_later(arena)

    def _repack(self, w: QTensor, dst: np.ndarray, release: Callable[[np.ndarray], None] | None) -> None:
        n_rows, k = w.data.shape[0], w.shape[-1]
        n_groups = n_rows // R16_ROWS
        step = max(1, REPACK_SLICE_BYTES // (R16_ROWS * w.data.shape[1]))
        for g0 in range(0, n_groups, step):
            g1 = min(n_groups, g0 + step)
            self._k.repack_r16(w.data, dst, w.ggml_type, n_rows, k, g0, g1)
            if release is not None:
                release(w.data[g0 * R16_ROWS : g1 * R16_ROWS])

    def matmul(self, x: np.ndarray, w: Weight) -> np.ndarray:
        """x (..., K) @ w (N, K).T -> (..., N), activations rounded as the reference rounds them."""
        x = _f32(x)
        n_rows, k = w.data.shape[0], w.shape[-1]
        if x.shape[-1] != k:
            raise ValueError(f"matmul: x has rows of {x.shape[-1]}, {w.name!r} expects {k}")
        out = np.empty((*x.shape[:-1], n_rows), _F32)
        self._k.matmul(x, w.data, w.ggml_type, n_rows, k, out, w.layout)
        return out

    def rms_norm(self, x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
        x = _f32(x)
        out = np.empty_like(x)
        self._k.rms_norm(x, _f32(weight), out, float(eps))
        return out

    def rope_angles(
        self,
        positions: np.ndarray,
        rope_dim: int,
        base: float,
        freq_scale: float = 1.0,
        factors: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        positions = _i64(positions)
        cos = np.empty((len(positions), rope_dim // 2), _F32)
        sin = np.empty_like(cos)
        f = None if factors is None else _f32(factors)
        self._k.rope_angles(positions, int(rope_dim), float(base), float(freq_scale), f, cos, sin)
        return cos, sin

    def rope(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, neox: bool) -> np.ndarray:
        """Rotate x (T, H, D) by cos/sin (T, rope_dim/2); dims past rope_dim are copied."""
        x = _f32(x)
        t, h, d = x.shape
        out = np.empty_like(x)
        self._k.rope(x, _f32(cos), _f32(sin), out, t, h, d, bool(neox))
        return out

    def attention(
        self,
        q: np.ndarray,
        k: np.ndarray,
        v: np.ndarray,
        q_pos: np.ndarray,
        k_pos: np.ndarray,
        scale: float,
        window: int = 0,
    ) -> np.ndarray:
        """Causal attention of q (T, H, D) over an f16 cache k (S, KVH, D), v (S, KVH, Dv)."""
        q = _f32(q)
        k = np.ascontiguousarray(k, dtype=np.float16)
        v = np.ascontiguousarray(v, dtype=np.float16)
        t, h, d = q.shape
        kvh, dv = k.shape[1], v.shape[2]
        out = np.empty((t, h, dv), _F32)
        self._k.attention(q, k, v, _i64(q_pos), _i64(k_pos), out, h, kvh, d, dv, float(scale), int(window))
        return out

    def silu(self, x: np.ndarray) -> np.ndarray:
        x = _f32(x)
        out = np.empty_like(x)
        self._k.silu(x, out)
        return out

    def gelu_tanh(self, x: np.ndarray) -> np.ndarray:
        x = _f32(x)
        out = np.empty_like(x)
        self._k.gelu_tanh(x, out)
        return out

    # -- block pieces in one call (the compositions of edgelm.kernels.composite) -----------------

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
        x = _f32(x)
        t = x.shape[0]
        head_dim, head_dim_v = w.wq.shape[0] // n_heads, w.wv.shape[0] // n_kv_heads
        q = np.empty((t, n_heads, head_dim), _F32)
        k = np.empty((t, n_kv_heads, head_dim), _F32)
        v = np.empty((t, n_kv_heads, head_dim_v), _F32)
        self._k.qkv(
            x, _matrix(w.wq), _matrix(w.wk), _matrix(w.wv), _opt(w.bq), _opt(w.bk), _opt(w.bv),
            _opt(w.q_norm), _opt(w.k_norm), float(eps), _i64(positions), int(rope.dim), float(rope.base),
            float(rope.freq_scale), _opt(rope.factors), bool(rope.neox), n_heads, n_kv_heads, head_dim,
            head_dim_v, q, k, v, _opt(norm),
        )  # fmt: skip
        return q, k, v

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
        q = _f32(q)
        t, h, d = q.shape
        kvh, dv = k.shape[1], v.shape[2]
        out = np.empty((t, h, dv), _F32)
        self._k.attention_cached(
            q, _f32(k), _f32(v), k_cache, v_cache, _i64(q_pos), _i64(key_pos), out, h, kvh, d, dv,
            float(scale), int(window), int(start),
        )  # fmt: skip
        return out

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
        x = _f32(x)
        out = np.empty((*x.shape[:-1], down.shape[0]), _F32)
        self._k.ffn(x, _matrix(gate), _matrix(up), _matrix(down), bool(gelu), out, _opt(norm), float(eps))
        return out

    def block_plan(self, b: DecoderBlock) -> object:
        w, rope = b.qkv, b.rope
        head_dim, head_dim_v = w.wq.shape[0] // b.n_heads, w.wv.shape[0] // b.n_kv_heads
        return self._k.block_plan(
            _matrix(w.wq), _matrix(w.wk), _matrix(w.wv), _opt(w.bq), _opt(w.bk), _opt(w.bv),
            _opt(w.q_norm), _opt(w.k_norm), _f32(b.attn_norm), _matrix(b.wo), _f32(b.ffn_norm),
            _matrix(b.gate), _matrix(b.up), _matrix(b.down), float(b.eps), int(rope.dim), float(rope.base),
            float(rope.freq_scale), _opt(rope.factors), bool(rope.neox), b.n_heads, b.n_kv_heads, head_dim,
            head_dim_v, float(b.q_scale), int(b.window), bool(b.gelu),
        )  # fmt: skip

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
        x = _f32(x)
        self._k.block(plan, x, _i64(positions), k_cache, v_cache, _i64(key_pos), int(start))
        return x

    # -- fused extras --------------------------------------------------

    def silu_mul(self, g: np.ndarray, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """silu(g) * u in one pass (the gated FFN of llama-style models); `out` may be `g` itself."""
        g = _f32(g)
        if out is None:
            out = np.empty_like(g)
        self._k.silu_mul(g, _f32(u), out)
        return out

    def gelu_tanh_mul(self, g: np.ndarray, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """gelu_tanh(g) * u in one pass (Gemma's gated FFN); `out` may be `g` itself."""
        g = _f32(g)
        if out is None:
            out = np.empty_like(g)
        self._k.gelu_tanh_mul(g, _f32(u), out)
        return out

    def embedding(self, w: QTensor, ids: np.ndarray, rows: FileRows | None = None) -> np.ndarray:
        """Rows `ids` of w dequantized: float32 (len(ids), K), the same values as `w.rows(ids)`; read
        from the file with pread when `rows` says where w lies in it."""
        ids = _i64(ids).reshape(-1)
        n_rows, k = w.data.shape[0], w.shape[-1]
        out = np.empty((len(ids), k), _F32)
        if rows is None:
            self._k.get_rows(w.data, w.ggml_type, n_rows, k, ids, out)
        else:
            self._k.read_rows(rows.fd, rows.offset, w.ggml_type, n_rows, k, ids, out)
        return out


def _factory(isa: str) -> Callable[[int], Ops | None]:
    # One backend (one thread pool) per ISA and thread count per process, however many models load.
    instances: dict[int, Ops] = {}

    def make(n_threads: int) -> Ops | None:
        if isa not in available_isas():
            return None
        if n_threads not in instances:
            instances[n_threads] = NativeOps(isa, n_threads)
        return instances[n_threads]

    return make


def measure_bandwidth(n_bytes: int, n_threads: int) -> float:
    """Bytes/s that `n_threads` threads read from a buffer of `n_bytes` (far larger than the caches)."""
    if _native is None:
        raise RuntimeError("edgelm's native kernels are not built")
    kernels = _native.Kernels(None, n_threads)
    buf = np.ones(n_bytes, np.uint8)
    kernels.stream_read(buf)  # first touch: page faults out of the timing
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        kernels.stream_read(buf)
        times.append(time.perf_counter() - t0)
    # The median: one fast pass (a quiet moment, a turbo burst) would overstate what decode can count on.
    return n_bytes / sorted(times)[len(times) // 2]


def register(backends: MutableMapping[str, Callable[[int], Ops | None]] = BACKENDS) -> None:
    """Add a factory per ISA the build knows (slowest first, so the fastest available wins)."""
    if _native is None:
        return
    for isa in _native.all_isas():
        backends.setdefault(isa, _factory(isa))


register()
