"""Weights repacked at load (the R16 layout): the bytes against a NumPy statement of the layout, the
products against the NumPy reference on the file's layout, and the file pages given back."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("edgelm._native")

from edgelm import _native
from edgelm.gguf.constants import BLOCK_LAYOUTS, GGMLType
from edgelm.kernels import reference
from edgelm.kernels.native import NativeOps, available_isas
from edgelm.kernels.packed import Layout, PackedTensor
from test_native_kernels import random_activations, random_weights

R16 = 16
BLOCK32 = [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1]
K_QUANTS = [GGMLType.Q4_K, GGMLType.Q6_K]
R16_ISAS = [isa for isa in available_isas() if NativeOps(isa, 1)._k.r16_supported(GGMLType.Q8_0)]


def r16_block32(raw: np.ndarray, ggml_type: GGMLType, n_rows: int, k: int) -> np.ndarray:
    """The R16 layout of csrc/repack.h, written from its description: (n_rows, row_bytes) -> same."""
    ts = BLOCK_LAYOUTS[ggml_type].type_size
    nb = k // 32
    blocks = raw.reshape(n_rows // R16, R16, nb, ts).transpose(0, 2, 1, 3)  # (G, B, 16 rows, ts)
    with_min = ggml_type in (GGMLType.Q4_1, GGMLType.Q5_1)
    high = ggml_type in (GGMLType.Q5_0, GGMLType.Q5_1)
    heads = 4 if with_min else 2
    parts = [blocks[..., 0:2].reshape(*blocks.shape[:2], -1)]  # d of the 16 rows
    if with_min:
        parts.append(blocks[..., 2:4].reshape(*blocks.shape[:2], -1))
    if ggml_type == GGMLType.Q8_0:
        qs = blocks[..., 2:34] ^ np.uint8(0x80)  # (G, B, 16, 32): q + 128
        chunks = qs.reshape(*qs.shape[:3], 8, 4).transpose(0, 1, 3, 2, 4)  # (G, B, chunk, row, 4)
        parts.append(chunks.reshape(*blocks.shape[:2], -1))
    else:
        if high:
            qh = blocks[..., heads : heads + 4].copy().view("<u4")[..., 0].astype(np.uint64)  # (G, B, 16)
            plane = np.zeros((*blocks.shape[:2], R16, 4), np.uint8)  # (G, B, row, byte i): bit c
            for c in range(8):
                for i in range(4):
                    bit = (qh >> np.uint64(4 * c + i)) & np.uint64(1)
                    plane[..., i] |= (bit << np.uint64(c)).astype(np.uint8)
            parts.append(plane.reshape(*blocks.shape[:2], -1))
        qs = blocks[..., ts - 16 : ts]  # (G, B, 16, 16) packed nibbles
        vectors = qs.reshape(*qs.shape[:3], 4, 4).transpose(0, 1, 3, 2, 4)  # (G, B, vector, row, 4)
        parts.append(vectors.reshape(*blocks.shape[:2], -1))
    return np.concatenate(parts, axis=-1).reshape(n_rows, -1)


@pytest.mark.parametrize("ggml_type", BLOCK32, ids=lambda t: t.name)
def test_repack_writes_the_documented_layout(ggml_type: GGMLType) -> None:
    rng = np.random.default_rng(int(ggml_type))
    n_rows, k = 48, 96
    w = random_weights(rng, ggml_type, n_rows, k)
    dst = np.zeros_like(w.data)
    _native.Kernels("scalar", 1).repack_r16(w.data, dst, ggml_type, n_rows, k, 0, n_rows // R16)
    np.testing.assert_array_equal(dst, r16_block32(w.data, ggml_type, n_rows, k))
    part = np.zeros_like(w.data)  # a range of groups touches only its own rows
    _native.Kernels("scalar", 1).repack_r16(w.data, part, ggml_type, n_rows, k, 1, 2)
    np.testing.assert_array_equal(part[16:32], dst[16:32])
    assert not part[:16].any() and not part[32:].any()


def test_repack_refuses_what_does_not_fit() -> None:
    rng = np.random.default_rng(0)
    w = random_weights(rng, GGMLType.Q8_0, 32, 64)
    dst = np.zeros_like(w.data)
    with pytest.raises(ValueError, match="R16"):
        _native.Kernels("scalar", 1).repack_r16(
            w.data, dst, GGMLType.Q8_0, 32, 64, 0, 3
        )  # past the last group
    k_quant = random_weights(rng, GGMLType.Q2_K, 16, 256)
    with pytest.raises(ValueError, match="R16"):
        _native.Kernels("scalar", 1).repack_r16(
            k_quant.data, np.zeros_like(k_quant.data), GGMLType.Q2_K, 16, 256, 0, 1
        )
    with pytest.raises(ValueError, match="bytes"):
        _native.Kernels("scalar", 1).repack_r16(w.data, dst[:16], GGMLType.Q8_0, 32, 64, 0, 2)


@pytest.fixture(scope="module", params=R16_ISAS)
def ops(request: pytest.FixtureRequest) -> NativeOps:
    return NativeOps(request.param, n_threads=2)


@pytest.mark.parametrize("ggml_type", BLOCK32 + K_QUANTS, ids=lambda t: t.name)
@pytest.mark.parametrize(
    ("n_rows", "k", "n_tok"), [(16, 256, 1), (64, 512, 3), (48, 512, 9), (256, 1024, 21)]
)
def test_packed_products_match_the_reference(
    ops: NativeOps, ggml_type: GGMLType, n_rows: int, k: int, n_tok: int
) -> None:
    rng = np.random.default_rng(n_rows + k + n_tok)
    w = random_weights(rng, ggml_type, n_rows, k)
    (packed,) = ops.prepare([w])
    assert isinstance(packed, PackedTensor) and packed.layout is Layout.R16
    assert packed.source is w and packed.nbytes >= w.nbytes
    x = random_activations(rng, n_tok, k)
    got = ops.matmul(x, packed)
    ref = reference.matmul(x, w)
    bound = 1e-5 * np.abs(x).sum(axis=1, keepdims=True) * np.abs(w.dequantize()).max(axis=1)
    assert np.all(np.abs(got - ref) <= bound + 1e-30)
    # a token gets the same numbers alone as in any batch (decode and prefill kernels agree)
    for t in (0, n_tok - 1):
        np.testing.assert_array_equal(ops.matmul(x[t : t + 1], packed)[0], got[t])


@pytest.mark.parametrize("n_threads", [3, 64])
def test_decode_products_do_not_depend_on_how_the_work_is_shared(n_threads: int) -> None:
    """One token's products stream in chunks that shrink as the work runs out; two 6.7 MB matrices in
    one pass over 64 threads fill the chunk table (the last matrix keeps a chunk of its own).  Every
    row's sum is formed whole in one chunk, so any split gives one thread's numbers exactly."""
    if not R16_ISAS:
        pytest.skip("no R16 kernels on this machine")
    rng = np.random.default_rng(11)
    k, wide = 256, 16 * 1536
    gate, up = (random_weights(rng, GGMLType.Q8_0, wide, k) for _ in range(2))
    down = random_weights(rng, GGMLType.Q8_0, k, wide)
    x = random_activations(rng, 1, k)
    one, many = NativeOps(R16_ISAS[-1], 1), NativeOps(R16_ISAS[-1], n_threads)
    gate, up, down = one.prepare([gate, up, down])
    np.testing.assert_array_equal(many.ffn(x, gate, up, down, False), one.ffn(x, gate, up, down, False))
    np.testing.assert_array_equal(many.matmul(x, gate), one.matmul(x, gate))


def test_prepare_leaves_what_it_cannot_pack(ops: NativeOps) -> None:
    rng = np.random.default_rng(5)
    odd_rows = random_weights(rng, GGMLType.Q8_0, 24, 64)  # not a multiple of 16 rows
    assert ops.prepare([odd_rows])[0] is odd_rows
    f16 = random_weights(rng, GGMLType.F16, 32, 64)
    assert ops.prepare([f16])[0] is f16
    x = random_activations(rng, 2, 64)
    np.testing.assert_allclose(ops.matmul(x, odd_rows), reference.matmul(x, odd_rows), rtol=1e-5, atol=1e-4)


def test_packed_weights_need_kernels_that_read_them() -> None:
    rng = np.random.default_rng(6)
    w = random_weights(rng, GGMLType.Q8_0, 32, 64)
    packed = np.zeros_like(w.data)
    _native.Kernels("scalar", 1).repack_r16(w.data, packed, GGMLType.Q8_0, 32, 64, 0, 2)
    scalar = NativeOps("scalar", 1)
    with pytest.raises(ValueError, match="R16"):
        scalar._k.matmul(
            np.ones((1, 64), np.float32), packed, GGMLType.Q8_0, 32, 64, np.empty((1, 32), np.float32), 1
        )
    assert scalar.prepare([w])[0] is w  # the scalar kernels read the file's layout


def test_prepare_releases_each_slice_it_copied(ops: NativeOps, monkeypatch) -> None:
    import edgelm.kernels.native as native

    rng = np.random.default_rng(7)
    w = random_weights(rng, GGMLType.Q8_0, 160, 64)  # 10 groups
    monkeypatch.setattr(native, "REPACK_SLICE_BYTES", 3 * R16 * w.data.shape[1])  # 3 groups a slice
    released: list[tuple[int, int]] = []
    base = w.data.__array_interface__["data"][0]

    def release(view: np.ndarray) -> None:
        start = view.__array_interface__["data"][0] - base
        released.append((start, start + view.nbytes))

    (packed,) = ops.prepare([w], release)
    row = w.data.shape[1]
    slices = [(0, 48 * row), (48 * row, 96 * row), (96 * row, 144 * row), (144 * row, 160 * row)]
    assert released == [*slices, (0, 160 * row)]  # each slice, then the whole tensor once more
    x = random_activations(rng, 1, 64)
    np.testing.assert_array_equal(ops.matmul(x, packed), ops.matmul(x, ops.prepare([w])[0]))


@pytest.mark.parametrize("ggml_type", BLOCK32 + K_QUANTS, ids=lambda t: t.name)
def test_packed_products_do_not_lose_precision_to_offsets(ops: NativeOps, ggml_type: GGMLType) -> None:
    """Activations far from zero make sum(x) large: offsets and mins applied through it must not
    leave a large float difference to cancel (as llama.cpp, the integer sums carry them exactly)."""
    rng = np.random.default_rng(11)
    w = random_weights(rng, ggml_type, 64, 2048)
    (packed,) = ops.prepare([w])
    x = (rng.standard_normal((3, 2048)) * 0.2 + 3.0).astype(np.float32)  # mean far above the spread
    ref = reference.matmul(x, w)
    got = ops.matmul(x, packed)
    assert np.abs(got - ref).max() <= 2e-6 * np.abs(ref).max()
