"""Native kernels against the NumPy reference, on random data, for every ISA this machine runs.

Matrix products differ from the reference only by float summation order (both round the activations
the same way first), so they are held to 1e-5 of |x| |w_row|; elementwise ops to a few ulp; attention
also to the odd f16 rounding flip of a softmax weight.  Skipped when the extension is not built.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("edgelm._native")

from edgelm.gguf.constants import BLOCK_LAYOUTS, QK_K, GGMLType
from edgelm.kernels import ops as ops_module
from edgelm.kernels import reference
from edgelm.kernels.native import NativeOps, available_isas, register
from edgelm.weights.qtensor import QTensor

ISAS = available_isas()
MATMUL_TYPES = [
    GGMLType.F32,
    GGMLType.F16,
    GGMLType.BF16,
    GGMLType.Q8_0,
    GGMLType.Q4_0,
    GGMLType.Q4_1,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
    GGMLType.Q2_K,
    GGMLType.Q3_K,
    GGMLType.Q4_K,
    GGMLType.Q5_K,
    GGMLType.Q6_K,
]
F16_BYTES = 2
# Byte offsets of the f16 scale fields inside one block (ggml-common.h).
_SCALE_FIELDS: dict[GGMLType, tuple[int, ...]] = {
    GGMLType.Q4_0: (0,),
    GGMLType.Q4_1: (0, F16_BYTES),
    GGMLType.Q5_0: (0,),
    GGMLType.Q5_1: (0, F16_BYTES),
    GGMLType.Q8_0: (0,),
    GGMLType.Q2_K: (QK_K // 16 + QK_K // 4, QK_K // 16 + QK_K // 4 + F16_BYTES),
    GGMLType.Q3_K: (BLOCK_LAYOUTS[GGMLType.Q3_K].type_size - F16_BYTES,),
    GGMLType.Q4_K: (0, F16_BYTES),
    GGMLType.Q5_K: (0, F16_BYTES),
    GGMLType.Q6_K: (BLOCK_LAYOUTS[GGMLType.Q6_K].type_size - F16_BYTES,),
}


@pytest.fixture(scope="module", params=ISAS)
def ops(request: pytest.FixtureRequest) -> NativeOps:
    return NativeOps(request.param, n_threads=2)


def random_weights(rng: np.random.Generator, ggml_type: GGMLType, n_rows: int, k: int) -> QTensor:
    """Random packed rows: any quant bits, finite scales of either sign (some zero)."""
    if ggml_type == GGMLType.F32:
        raw = rng.standard_normal((n_rows, k), dtype=np.float32).view(np.uint8)
    elif ggml_type == GGMLType.F16:
        raw = rng.standard_normal((n_rows, k)).astype(np.float16).view(np.uint8)
    elif ggml_type == GGMLType.BF16:
        bits = rng.standard_normal((n_rows, k), dtype=np.float32).view(np.uint32) >> np.uint32(16)
        raw = bits.astype(np.uint16).view(np.uint8)
    else:
        block_size, type_size = BLOCK_LAYOUTS[ggml_type]
        n_blocks = n_rows * k // block_size
        raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        for offset in _SCALE_FIELDS[ggml_type]:
            scales = (rng.standard_normal(n_blocks) * 0.05).astype(np.float16)
            scales[rng.random(n_blocks) < 0.05] = 0
            raw[:, offset : offset + F16_BYTES] = scales.view(np.uint8).reshape(n_blocks, F16_BYTES)
    return QTensor.from_buffer("w", ggml_type, (n_rows, k), np.ascontiguousarray(raw).reshape(-1))


def random_activations(rng: np.random.Generator, n_tok: int, k: int) -> np.ndarray:
    x = rng.standard_normal((n_tok, k), dtype=np.float32) * rng.uniform(0.1, 10.0, size=(n_tok, 1))
    x = x.astype(np.float32)
    x[0, :32] = 0.0  # an all-zero block: scale 0
    if n_tok > 1:
        x[1, :8] = 3.0  # ties of the largest magnitude, both signs
        x[1, 8:16] = -3.0
    return x


def assert_matmul_close(actual: np.ndarray, x: np.ndarray, w: QTensor) -> None:
    expected = reference.matmul(x, w)
    xq = reference.quantize_activations(x, w.ggml_type).astype(np.float64)
    wd = w.dequantize().astype(np.float64)
    bound = np.linalg.norm(xq, axis=1)[:, None] * np.linalg.norm(wd, axis=1)[None, :]
    assert actual.shape == expected.shape and actual.dtype == np.float32
    excess = np.abs(actual.astype(np.float64) - expected) - (1e-5 * bound + 1e-30)
    assert excess.max() <= 0, (
        f"worst excess {excess.max()} at {np.unravel_index(excess.argmax(), excess.shape)}"
    )


@pytest.mark.parametrize("ggml_type", MATMUL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_tok", [1, 3, 4, 9, 21])
def test_matmul(ops: NativeOps, ggml_type: GGMLType, n_tok: int) -> None:
    rng = np.random.default_rng([ggml_type.value, n_tok])
    k = 2 * QK_K if BLOCK_LAYOUTS[ggml_type].block_size == QK_K else 96  # 3 blocks of 32: an odd count
    w = random_weights(rng, ggml_type, 37, k)  # rows not a multiple of any tile
    x = random_activations(rng, n_tok, k)
    assert_matmul_close(ops.matmul(x, w), x, w)


@pytest.mark.parametrize("ggml_type", [GGMLType.Q8_0, GGMLType.Q5_0, GGMLType.Q4_K, GGMLType.Q6_K], ids=str)
def test_matmul_threads_split_rows(ops: NativeOps, ggml_type: GGMLType) -> None:
    """Big enough for every thread to take part, with a ragged last share."""
    rng = np.random.default_rng(7)
    w = random_weights(rng, ggml_type, 301, 1024)
    for n_tok in (1, 33):
        x = random_activations(rng, n_tok, 1024)
        assert_matmul_close(ops.matmul(x, w), x, w)


def test_matmul_rejects_wrong_width(ops: NativeOps) -> None:
    w = random_weights(np.random.default_rng(0), GGMLType.Q8_0, 4, 64)
    with pytest.raises(ValueError):
        ops.matmul(np.zeros((2, 32), np.float32), w)


@pytest.mark.parametrize("ggml_type", MATMUL_TYPES, ids=lambda t: t.name)
def test_embedding_matches_dequantize(ops: NativeOps, ggml_type: GGMLType) -> None:
    rng = np.random.default_rng(ggml_type.value)
    w = random_weights(rng, ggml_type, 11, QK_K)
    ids = np.array([3, 0, 10, 3])
    np.testing.assert_array_equal(ops.embedding(w, ids).view(np.uint32), w.rows(ids).view(np.uint32))
    with pytest.raises(IndexError):
        ops.embedding(w, np.array([11]))


@pytest.mark.parametrize("ggml_type", [GGMLType.Q8_0, GGMLType.Q6_K, GGMLType.BF16], ids=lambda t: t.name)
def test_embedding_rows_read_from_the_file(ops: NativeOps, ggml_type: GGMLType, tmp_path) -> None:
    import os

    from edgelm.weights.qtensor import FileRows

    rng = np.random.default_rng(ggml_type.value + 1)
    w = random_weights(rng, ggml_type, 11, QK_K)
    path = tmp_path / "rows.bin"
    path.write_bytes(b"header!" + w.data.tobytes())  # the tensor 7 bytes into the file
    fd = os.open(path, os.O_RDONLY)
    try:
        rows = FileRows(fd, 7)
        ids = np.array([3, 0, 10, 3])
        want = w.rows(ids).view(np.uint32)
        np.testing.assert_array_equal(ops.embedding(w, ids, rows).view(np.uint32), want)
        np.testing.assert_array_equal(reference.embedding(w, ids, rows).view(np.uint32), want)
        for read in (ops.embedding, reference.embedding):
            with pytest.raises(IndexError):
                read(w, np.array([11]), rows)
            with pytest.raises(OSError, match="shorter"):
                read(w, np.array([10]), FileRows(fd, 7 + w.data.shape[1]))  # past the file's end
    finally:
        os.close(fd)


def test_rms_norm(ops: NativeOps) -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((5, 3, 72)) * 4).astype(np.float32)
    weight = rng.standard_normal(72).astype(np.float32)
    np.testing.assert_allclose(ops.rms_norm(x, weight, 1e-6), reference.rms_norm(x, weight, 1e-6), rtol=1e-6)


@pytest.mark.parametrize("with_factors", [False, True])
def test_rope_angles(ops: NativeOps, with_factors: bool) -> None:
    rng = np.random.default_rng(2)
    positions = np.array([0, 1, 7, 100, 4095, 32767, 3])
    factors = rng.uniform(1.0, 8.0, 32).astype(np.float32) if with_factors else None
    cos, sin = ops.rope_angles(positions, 64, 10000.0, 0.25, factors)
    ref_cos, ref_sin = reference.rope_angles(positions, 64, 10000.0, 0.25, factors)
    np.testing.assert_allclose(cos, ref_cos, atol=2e-7)
    np.testing.assert_allclose(sin, ref_sin, atol=2e-7)


@pytest.mark.parametrize("neox", [False, True])
def test_rope(ops: NativeOps, neox: bool) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 80)).astype(np.float32)
    cos, sin = reference.rope_angles(np.array([0, 5, 9, 1000]), 64, 10000.0)  # rotates 64 of 80 dims
    np.testing.assert_array_equal(ops.rope(x, cos, sin, neox), reference.rope(x, cos, sin, neox))


def test_activations(ops: NativeOps) -> None:
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(1001) * 8).astype(np.float32)
    x[:5] = [-200.0, 200.0, 0.0, -90.0, 1e-30]
    u = rng.standard_normal(1001).astype(np.float32)
    with np.errstate(over="ignore"):
        silu, gelu = reference.silu(x), reference.gelu_tanh(x)
    np.testing.assert_allclose(ops.silu(x), silu, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ops.gelu_tanh(x), gelu, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ops.silu_mul(x, u), silu * u, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ops.gelu_tanh_mul(x, u), gelu * u, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("n_tok", "n_keys", "n_heads", "n_kv_heads", "head_dim", "window"),
    [
        (1, 50, 6, 2, 64, 0),  # decode, grouped heads
        (7, 40, 4, 4, 32, 0),  # prefill chunk after a prefix
        (6, 30, 8, 2, 64, 8),  # sliding window
        (3, 9, 2, 1, 20, 0),  # head width not a multiple of a vector
        (1, 1000, 14, 2, 64, 0),  # decode split into key blocks over the threads
        (1, 1000, 9, 3, 64, 20),  # split decode with a window: whole blocks masked in the ring
        (1, 777, 9, 3, 40, 300),  # split decode, uneven last block, odd head width
        (1, 600, 20, 2, 64, 0),  # a kv group of 10 query heads: more than one tile of heads
        (1, 300, 5, 1, 32, 0),  # a group of 5, head width of two AVX-512 vectors
    ],
)
def test_attention(
    ops: NativeOps, n_tok: int, n_keys: int, n_heads: int, n_kv_heads: int, head_dim: int, window: int
) -> None:
    rng = np.random.default_rng([n_tok, n_keys, head_dim])
    q = rng.standard_normal((n_tok, n_heads, head_dim)).astype(np.float32)
    k = rng.standard_normal((n_keys, n_kv_heads, head_dim)).astype(np.float16)
    v = rng.standard_normal((n_keys, n_kv_heads, head_dim)).astype(np.float16)
    k_pos = np.arange(n_keys)
    q_pos = k_pos[-n_tok:]
    scale = head_dim**-0.5
    expected = reference.attention(q, k, v, q_pos, k_pos, scale, window)
    np.testing.assert_allclose(ops.attention(q, k, v, q_pos, k_pos, scale, window), expected, atol=2e-3)
    # A ring buffer holds keys out of order, with empty slots at an impossible position.
    order = rng.permutation(n_keys)
    k_ring, v_ring, pos_ring = k[order], v[order], k_pos[order]
    pos_ring[order == 0] = np.iinfo(np.int64).max
    expected = reference.attention(q, k_ring, v_ring, q_pos, pos_ring, scale, window)
    actual = ops.attention(q, k_ring, v_ring, q_pos, pos_ring, scale, window)
    np.testing.assert_allclose(actual, expected, atol=2e-3)


def test_register_adds_each_isa() -> None:
    backends: dict = {}
    register(backends)
    for isa in ISAS:
        one = backends[isa](1)
        assert isinstance(one, NativeOps) and one.n_threads == 1
        assert backends[isa](1) is one  # one thread pool per ISA and thread count
    assert set(ISAS) <= set(ops_module.BACKENDS)


def test_select_ops_by_name() -> None:
    for isa in ISAS:
        assert ops_module.select_ops(isa).name == isa


def test_unrunnable_isa_is_refused() -> None:
    missing = [name for name in ops_module.BACKENDS if name != "numpy" and name not in ISAS]
    for name in missing:
        with pytest.raises(ValueError, match="cannot run"):
            ops_module.select_ops(name)


def test_concurrent_calls_share_one_pool(ops: NativeOps) -> None:
    """Calls from several Python threads at once: one holds the pool, the others run on their own."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(8)
    w = random_weights(rng, GGMLType.Q8_0, 256, 512)
    xs = [random_activations(rng, n_tok, 512) for n_tok in (1, 16, 3, 40) * 4]
    expected = [ops.matmul(x, w) for x in xs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda x: ops.matmul(x, w), xs))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)
