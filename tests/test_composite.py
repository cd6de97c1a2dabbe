"""Block pieces in one native call (`Ops.qkv`, `Ops.ffn`, `Ops.block`) against their compositions:
the same numbers bit for bit on the native backends, and within the matmul bounds of the reference."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("edgelm._native")

from edgelm.gguf.constants import GGMLType
from edgelm.kernels import composite
from edgelm.kernels.composite import DecoderBlock, QKVWeights, Rope
from edgelm.kernels.native import NativeOps, available_isas
from edgelm.kernels.ops import REFERENCE
from test_native_kernels import random_activations, random_weights

ISAS = available_isas()


@pytest.fixture(scope="module", params=ISAS)
def ops(request: pytest.FixtureRequest) -> NativeOps:
    return NativeOps(request.param, n_threads=2)


def _case(rng: np.random.Generator, ggml_type: GGMLType, dim: int, heads: int, kv_heads: int, d: int):
    wq = random_weights(rng, ggml_type, heads * d, dim)
    wk = random_weights(rng, ggml_type, kv_heads * d, dim)
    wv = random_weights(rng, ggml_type, kv_heads * d, dim)
    return wq, wk, wv


@pytest.mark.parametrize("ggml_type", [GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.F16], ids=lambda t: t.name)
@pytest.mark.parametrize(
    ("biases", "norms", "neox", "rope_dim", "factors"),
    [(False, False, False, 64, False), (True, False, True, 64, False), (False, True, True, 32, True)],
    ids=["llama", "qwen2", "qwen3-partial-rope"],
)
@pytest.mark.parametrize("n_tok", [1, 7])
@pytest.mark.parametrize("input_norm", [False, True], ids=["normed", "norm-inside"])
def test_qkv_in_one_call_is_the_composition(
    ops: NativeOps,
    ggml_type: GGMLType,
    biases: bool,
    norms: bool,
    neox: bool,
    rope_dim: int,
    factors: bool,
    n_tok: int,
    input_norm: bool,
) -> None:
    rng = np.random.default_rng(n_tok + rope_dim)
    dim, heads, kv_heads, d = 256, 4, 2, 64
    weights = ops.prepare(list(_case(rng, ggml_type, dim, heads, kv_heads, d)))
    bias = [rng.standard_normal(w.shape[0]).astype(np.float32) if biases else None for w in weights]
    q_norm, k_norm = rng.standard_normal((2, d)).astype(np.float32) if norms else (None, None)
    fac = rng.uniform(1.0, 4.0, rope_dim // 2).astype(np.float32) if factors else None
    x = random_activations(rng, n_tok, dim)
    positions = np.arange(40, 40 + n_tok, dtype=np.int64)
    w = QKVWeights(*weights, *bias, q_norm, k_norm)
    norm = rng.standard_normal(dim).astype(np.float32) if input_norm else None
    args = (x, w, positions, Rope(rope_dim, 10000.0, neox, 0.5, fac), heads, kv_heads, 1e-6, norm)
    fused = ops.qkv(*args)
    composed = composite.qkv(ops, *args)
    for got, want in zip(fused, composed, strict=True):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    reference = REFERENCE.qkv(*args)
    for got, want in zip(fused, reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * np.abs(want).max())


@pytest.mark.parametrize(
    "types",
    [
        (GGMLType.Q5_0, GGMLType.Q5_0, GGMLType.Q8_0),  # one pass: all take 8-bit blocks of 32
        (GGMLType.Q4_K, GGMLType.Q4_K, GGMLType.Q6_K),  # one pass: all take blocks of 256
        (GGMLType.Q4_K, GGMLType.Q5_0, GGMLType.Q8_0),  # activations differ: one product at a time
        (GGMLType.Q8_0, GGMLType.F16, GGMLType.Q8_0),  # a matrix without a packed layout
    ],
    ids=lambda ts: "-".join(t.name for t in ts),
)
@pytest.mark.parametrize("n_tok", [1, 9])
def test_qkv_of_mixed_types_is_the_composition(ops: NativeOps, types: tuple, n_tok: int) -> None:
    """Q4_K_M files mix types within a block; the projections that share an input pass over the
    threads together only where their activations agree, with the numbers of one product each."""
    rng = np.random.default_rng(n_tok)
    dim, heads, kv_heads, d = 256, 6, 2, 64
    shapes = [heads * d, kv_heads * d, kv_heads * d]
    weights = ops.prepare([random_weights(rng, t, n, dim) for t, n in zip(types, shapes, strict=True)])
    x = random_activations(rng, n_tok, dim)
    positions = np.arange(n_tok, dtype=np.int64)
    args = (x, QKVWeights(*weights), positions, Rope(d, 1e4, True), heads, kv_heads, 1e-6)
    fused = ops.qkv(*args)
    for got, want in zip(fused, composite.qkv(ops, *args), strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(fused, REFERENCE.qkv(*args), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * np.abs(want).max())
    gate, up = ops.prepare([random_weights(rng, t, 512, dim) for t in types[1:]])
    down = ops.prepare([random_weights(rng, types[0], dim, 512)])[0]
    want = composite.ffn(ops, x, gate, up, down, False)
    np.testing.assert_array_equal(ops.ffn(x, gate, up, down, False), want)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # the reference's SiLU of large inputs
@pytest.mark.parametrize("ggml_type", [GGMLType.Q8_0, GGMLType.Q6_K, GGMLType.BF16], ids=lambda t: t.name)
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("n_tok", [1, 9])
@pytest.mark.parametrize("input_norm", [False, True], ids=["normed", "norm-inside"])
def test_ffn_in_one_call_is_the_composition(
    ops: NativeOps, ggml_type: GGMLType, gelu: bool, n_tok: int, input_norm: bool
) -> None:
    rng = np.random.default_rng(n_tok + gelu)
    dim, width = 256, 512
    gate, up = (random_weights(rng, ggml_type, width, dim) for _ in range(2))
    down = random_weights(rng, ggml_type, dim, width)
    gate, up, down = ops.prepare([gate, up, down])
    x = random_activations(rng, n_tok, dim)
    norm = rng.standard_normal(dim).astype(np.float32) if input_norm else None
    fused = ops.ffn(x, gate, up, down, gelu, norm, 1e-5)
    np.testing.assert_array_equal(fused, composite.ffn(ops, x, gate, up, down, gelu, norm, 1e-5))
    want = REFERENCE.ffn(x, gate, up, down, gelu, norm, 1e-5)
    np.testing.assert_allclose(fused, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_pieces_refuse_weights_that_do_not_fit(ops: NativeOps) -> None:
    rng = np.random.default_rng(3)
    gate = random_weights(rng, GGMLType.Q8_0, 64, 96)
    down = random_weights(rng, GGMLType.Q8_0, 96, 32)  # rows of 32: gate's output has 64
    with pytest.raises(ValueError):
        ops.ffn(random_activations(rng, 1, 96), gate, gate, down, False)
    wq, wk, wv = _case(rng, GGMLType.Q8_0, 64, 2, 1, 32)
    x, positions = random_activations(rng, 1, 64), np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="rope_dim"):
        ops.qkv(x, QKVWeights(wq, wk, wv), positions, Rope(48, 1e4, False), 2, 1, 1e-6)
    with pytest.raises(ValueError):  # a bias of the wrong length
        ops.qkv(
            x, QKVWeights(wq, wk, wv, bq=np.zeros(3, np.float32)), positions, Rope(32, 1e4, False), 2, 1, 1e-6
        )


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 70000 is past f16: inf, both ways
@pytest.mark.parametrize("n_tok", [1, 5])
def test_attention_into_the_cache_is_the_composition(ops: NativeOps, n_tok: int) -> None:
    rng = np.random.default_rng(n_tok)
    s, kvh, h, d = 40, 2, 4, 64
    caches = [np.zeros((s, kvh, d), np.float16) for _ in range(4)]
    history = rng.standard_normal((2, 12, kvh, d)).astype(np.float16)
    for c in (caches[0], caches[2]):
        c[:12] = history[0]
    for c in (caches[1], caches[3]):
        c[:12] = history[1]
    q = rng.standard_normal((n_tok, h, d)).astype(np.float32)
    k, v = (rng.standard_normal((2, n_tok, kvh, d)) * 3).astype(np.float32)
    k[0, 0, :4] = [1e-7, -3e-5, 70000.0, np.float32(65519.0)]  # subnormal, overflow, the rounding edge
    pos = np.arange(12 + n_tok, dtype=np.int64)
    q_pos = pos[12:]
    fused = ops.attention_cached(q, k, v, caches[0], caches[1], pos, 12, q_pos, 0.125, 0)
    composed = composite.attention_cached(ops, q, k, v, caches[2], caches[3], pos, 12, q_pos, 0.125, 0)
    np.testing.assert_array_equal(
        caches[0].view(np.uint16), caches[2].view(np.uint16)
    )  # numpy's f16 rounding
    np.testing.assert_array_equal(caches[1].view(np.uint16), caches[3].view(np.uint16))
    assert not caches[0][12 + n_tok :].any()  # rows past the new ones untouched
    np.testing.assert_array_equal(fused, composed)
    with pytest.raises(ValueError, match="past"):
        ops.attention_cached(q, k, v, caches[0], caches[1], pos[: 12 + n_tok - 1], 12, q_pos, 0.125, 0)


def _block(rng: np.random.Generator, ops: NativeOps, types: tuple, qwen: bool, window: int, gelu: bool):
    """A block of width 256 (4 heads over 2 kv heads of 64, FFN 512) with weights of `types` (q/k/v and
    out, gate/up, down); Qwen-style biases and per-head norms when asked."""
    dim, heads, kv_heads, d, width = 256, 4, 2, 64, 512
    shapes = [(heads * d, dim), (kv_heads * d, dim), (kv_heads * d, dim), (dim, heads * d)]
    shapes += [(width, dim), (width, dim), (dim, width)]
    kinds = [types[0]] * 4 + [types[1]] * 2 + [types[2]]
    wq, wk, wv, wo, gate, up, down = ops.prepare(
        [random_weights(rng, t, n, k) for t, (n, k) in zip(kinds, shapes, strict=True)]
    )

    def vec(n: int, center: float) -> np.ndarray:  # norm weights near 1, biases near 0
        return (center + 0.2 * rng.standard_normal(n)).astype(np.float32)

    qkv = QKVWeights(wq, wk, wv)
    if qwen:
        biases = (vec(w.shape[0], 0) for w in (wq, wk, wv))
        qkv = QKVWeights(wq, wk, wv, *biases, vec(d, 1), vec(d, 1))
    rope = Rope(d, 1e4, qwen, 1.0, rng.uniform(1.0, 3.0, d // 2).astype(np.float32) if not qwen else None)
    a_norm, f_norm = vec(dim, 1), vec(dim, 1)
    ffn = (gate, up, down)
    return DecoderBlock(a_norm, qkv, wo, f_norm, *ffn, rope, heads, kv_heads, 1e-6, 0.125, window, gelu)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # the reference's SiLU of large inputs
@pytest.mark.parametrize(
    "types",
    [
        (GGMLType.Q8_0, GGMLType.Q8_0, GGMLType.Q8_0),
        (GGMLType.Q5_0, GGMLType.Q5_0, GGMLType.Q6_K),  # a Q4_K_M file's 896-wide model
        (GGMLType.Q4_K, GGMLType.Q4_K, GGMLType.Q4_K),
        (GGMLType.F16, GGMLType.BF16, GGMLType.Q4_0),
    ],
    ids=lambda ts: "-".join(t.name for t in ts),
)
@pytest.mark.parametrize(
    ("qwen", "window", "gelu"),
    [(False, 0, False), (True, 0, False), (True, 6, True)],
    ids=["llama", "qwen", "window-gelu"],
)
@pytest.mark.parametrize("n_tok", [1, 4])
def test_block_in_one_call_is_the_composition(
    ops: NativeOps, types: tuple, qwen: bool, window: int, gelu: bool, n_tok: int
) -> None:
    """A whole block in one call: the numbers of its pieces one by one (and the cache's rows too),
    and within the matmul bounds of the NumPy reference."""
    rng = np.random.default_rng(n_tok + window)
    spec = _block(rng, ops, types, qwen, window, gelu)
    plan = ops.block_plan(spec)
    n_ctx, past = 32, 10
    caches = [np.zeros((n_ctx, 2, 64), np.float16) for _ in range(6)]
    history = rng.standard_normal((2, past, 2, 64)).astype(np.float16)
    for i, c in enumerate(caches):
        c[:past] = history[i % 2]
    positions = np.arange(past, past + n_tok, dtype=np.int64)
    key_pos = np.arange(past + n_tok, dtype=np.int64)
    x = random_activations(rng, n_tok, 256)
    fused = ops.block(plan, x.copy(), positions, caches[0], caches[1], key_pos, past)
    composed = composite.block(ops, spec, x.copy(), positions, caches[2], caches[3], key_pos, past)
    np.testing.assert_array_equal(fused, composed)
    for a, b in ((caches[0], caches[2]), (caches[1], caches[3])):
        np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16))
    assert not caches[0][past + n_tok :].any()  # rows past the new ones untouched
    ref_plan = REFERENCE.block_plan(spec)
    reference = REFERENCE.block(ref_plan, x.copy(), positions, caches[4], caches[5], key_pos, past)
    # the block's products quantize their inputs to 8 bits: differences of a few ulps upstream move
    # single roundings, so the block as a whole is compared in norm
    assert np.linalg.norm(fused - reference) <= 5e-3 * np.linalg.norm(reference)


def test_block_refuses_what_does_not_fit(ops: NativeOps) -> None:
    rng = np.random.default_rng(5)
    spec = _block(rng, ops, (GGMLType.Q8_0,) * 3, False, 0, False)
    plan = ops.block_plan(spec)
    k_cache, v_cache = np.zeros((2, 8, 2, 64), np.float16)
    x, positions = random_activations(rng, 1, 256), np.array([3], np.int64)
    with pytest.raises(ValueError, match="past"):  # the new row is not among the keys attended over
        ops.block(plan, x, positions, k_cache, v_cache, np.arange(3, dtype=np.int64), 3)
    with pytest.raises(ValueError, match="k_cache"):  # a cache smaller than the keys
        ops.block(plan, x, positions, k_cache[:2], v_cache, np.arange(4, dtype=np.int64), 3)
    with pytest.raises(ValueError, match="x"):  # rows of the wrong width
        ops.block(plan, x[:, :128], positions, k_cache, v_cache, np.arange(4, dtype=np.int64), 3)
    with pytest.raises(TypeError, match="block_plan"):  # not a plan
        ops.block(object(), x, positions, k_cache, v_cache, np.arange(4, dtype=np.int64), 3)
    with pytest.raises(ValueError, match="shapes"):  # down's rows are not the model's width
        ops.block_plan(DecoderBlock(**{**spec.__dict__, "down": spec.gate}))
    with pytest.raises(ValueError, match="attn_norm"):
        ops.block_plan(DecoderBlock(**{**spec.__dict__, "attn_norm": np.ones(3, np.float32)}))
