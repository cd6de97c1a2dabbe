"""Quantizers against the references: `gguf`'s NumPy quantizers and llama.cpp's own C quantizers."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgelm.gguf.constants import BLOCK_LAYOUTS, QK_K, GGMLType
from edgelm.weights.quantize import QUANTIZABLE_TYPES, quantize

K_QUANTS = (GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K)
# Types `gguf.quants` quantizes itself (it claims bit-exactness with ggml for Q8_0).
GGUF_QUANTIZED = (
    GGMLType.F32,
    GGMLType.F16,
    GGMLType.BF16,
    GGMLType.Q8_0,
    GGMLType.Q4_0,
    GGMLType.Q4_1,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
)

# Relative RMS round-trip error on standard normal data, with some headroom over what the types reach
# (F16 2e-4, BF16 1.7e-3, Q8_0 5.4e-3, Q6_K 0.018, Q5_K 0.036, Q4_K 0.071, Q4_0 0.086).
MAX_RELATIVE_RMSE = {
    GGMLType.F32: 0.0,
    GGMLType.F16: 5e-4,
    GGMLType.BF16: 4e-3,
    GGMLType.Q8_0: 0.01,
    GGMLType.Q6_K: 0.03,
    GGMLType.Q5_K: 0.05,
    GGMLType.Q4_K: 0.1,
    GGMLType.Q4_0: 0.12,
    GGMLType.Q4_1: 0.1,
    GGMLType.Q5_0: 0.06,
    GGMLType.Q5_1: 0.05,
}


def _datasets() -> dict[str, np.ndarray]:
    """Rows of QK_K multiples (valid for every type), each stressing a different branch."""
    rng = np.random.default_rng(1234)
    normal = rng.standard_normal((16, 1024)).astype(np.float32)
    # Per-weight magnitudes over ~5 decades: sub-block scales that round to 0 against the largest.
    wild = (rng.standard_normal((8, 1024)) * np.exp(rng.uniform(-6, 6, (8, 1024)))).astype(np.float32)
    # Each 16-weight group gets one treatment: huge, zero, constant, all positive, coarse, or left alone.
    groups = rng.standard_normal((64, QK_K // 16, 16)).astype(np.float32)
    kind = rng.integers(0, 6, groups.shape[:2])
    groups[kind == 0] *= np.float32(1e4)
    groups[kind == 1] = 0.0
    groups[kind == 2] = groups[kind == 2][:, :1]
    groups[kind == 3] = np.abs(groups[kind == 3]) + 3
    groups[kind == 4] = np.round(groups[kind == 4] * 2) / 2
    return {
        "normal": normal,
        "scaled_rows": normal * np.exp(rng.uniform(-8, 8, (16, 1))).astype(np.float32),
        "wild": wild,
        "groups": groups.reshape(4, -1),
        "negative": -rng.uniform(1, 2, (4, 512)).astype(np.float32),
        "heavy_tail": rng.standard_t(2, (8, 1024)).astype(np.float32),
        "zeros": np.zeros((2, 512), np.float32),
        "constant": np.full((2, 512), 0.37, np.float32),
        "one_hot": np.eye(2, 512, 7, dtype=np.float32) * 5,
    }


DATASETS = _datasets()

# Magnitudes where fp16 scales underflow or overflow and the C code runs into inf and NaN: garbage
# out, but the same garbage as llama.cpp.
_rng = np.random.default_rng(99)
EXTREMES = {
    "subnormal": (_rng.standard_normal((4, 512)) * 1e-38).astype(np.float32),
    "tiny": (_rng.standard_normal((4, 512)) * 1e-36).astype(np.float32),
    "huge": (_rng.standard_normal((4, 512)) * 1e20).astype(np.float32),
}


def _gguf_bytes(values: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
    # gguf returns F32 / F16 as float arrays; compare their bytes.
    return np.ascontiguousarray(gguf.quants.quantize(values, ggml_type)).view(np.uint8)


def _block_mismatches(ours: np.ndarray, ref: np.ndarray, ggml_type: GGMLType) -> int:
    type_size = BLOCK_LAYOUTS[ggml_type].type_size
    return int((ours.reshape(-1, type_size) != ref.reshape(-1, type_size)).any(axis=1).sum())


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("ggml_type", GGUF_QUANTIZED, ids=lambda t: t.name)
def test_matches_gguf_reference(ggml_type: GGMLType, name: str) -> None:
    values = DATASETS[name]
    ours = quantize(values, ggml_type)
    ref = _gguf_bytes(values, ggml_type)
    assert ours.shape == ref.shape
    assert _block_mismatches(ours, ref, ggml_type) == 0


@pytest.fixture(scope="module")
def ggml_quantize() -> Callable[[np.ndarray, GGMLType], np.ndarray]:
    """llama.cpp's `ggml_quantize_chunk` from the ggml library llama-cpp-python ships."""
    llama_cpp = pytest.importorskip("llama_cpp")
    libs = sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-base.*"))
    if not libs:
        pytest.skip("llama-cpp-python ships no libggml-base")
    lib = ctypes.CDLL(str(libs[0]))
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,  # enum ggml_type
        ctypes.c_void_p,  # const float * src
        ctypes.c_void_p,  # void * dst
        ctypes.c_int64,  # start
        ctypes.c_int64,  # nrows
        ctypes.c_int64,  # n_per_row
        ctypes.c_void_p,  # const float * imatrix: NULL selects the *_ref quantizers
    ]

    def run(values: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
        values = np.ascontiguousarray(values, dtype=np.float32)
        n_per_row = values.shape[-1]
        n_rows = values.size // n_per_row
        block_size, type_size = BLOCK_LAYOUTS[ggml_type]
        out = np.zeros((n_rows, n_per_row // block_size * type_size), np.uint8)
        lib.ggml_quantize_init(int(ggml_type))
        written = lib.ggml_quantize_chunk(
            int(ggml_type), values.ctypes.data, out.ctypes.data, 0, n_rows, n_per_row, None
        )
        assert written == out.size
        return out.reshape(*values.shape[:-1], -1)

    return run


@pytest.mark.llama_cpp
@pytest.mark.parametrize("name", [*DATASETS, *EXTREMES])
@pytest.mark.parametrize("ggml_type", (*K_QUANTS, *GGUF_QUANTIZED[3:]), ids=lambda t: t.name)
def test_matches_llama_cpp(
    ggml_quantize: Callable[[np.ndarray, GGMLType], np.ndarray], ggml_type: GGMLType, name: str
) -> None:
    values = DATASETS[name] if name in DATASETS else EXTREMES[name]
    ours = quantize(values, ggml_type)
    ref = ggml_quantize(values, ggml_type)
    assert ours.shape == ref.shape
    assert _block_mismatches(ours, ref, ggml_type) == 0


@pytest.mark.parametrize("ggml_type", sorted(QUANTIZABLE_TYPES, key=lambda t: t.name), ids=lambda t: t.name)
def test_round_trip_error(ggml_type: GGMLType) -> None:
    values = DATASETS["normal"]
    restored = gguf.quants.dequantize(quantize(values, ggml_type), ggml_type)
    assert restored.shape == values.shape
    rel_rmse = np.sqrt(np.mean((restored - values) ** 2) / np.mean(values**2))
    assert rel_rmse <= MAX_RELATIVE_RMSE[ggml_type]


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("ggml_type", K_QUANTS, ids=lambda t: t.name)
def test_k_quants_decode_finite(ggml_type: GGMLType, name: str) -> None:
    values = DATASETS[name]
    restored = gguf.quants.dequantize(quantize(values, ggml_type), ggml_type)
    assert np.isfinite(restored).all()
    if name in ("zeros", "constant", "one_hot"):
        # Exactly representable: zero, one value per block, or a single spike.
        np.testing.assert_allclose(restored, values, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("ggml_type", sorted(QUANTIZABLE_TYPES, key=lambda t: t.name), ids=lambda t: t.name)
def test_keeps_leading_dims(ggml_type: GGMLType) -> None:
    values = DATASETS["normal"][:6, :512].reshape(2, 3, 512)
    block_size, type_size = BLOCK_LAYOUTS[ggml_type]
    packed = quantize(values, ggml_type)
    assert packed.dtype == np.uint8
    assert packed.shape == (2, 3, 512 // block_size * type_size)
    # Rows are independent: quantizing one row alone gives the same bytes.
    np.testing.assert_array_equal(packed[1, 2], quantize(values[1, 2], ggml_type))


def test_quantizable_types() -> None:
    expected = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"}
    assert {t.name for t in QUANTIZABLE_TYPES} == expected


def test_unsupported_type_names_it_and_lists_supported() -> None:
    with pytest.raises(ValueError, match="Q2_K") as excinfo:
        quantize(np.zeros((1, QK_K), np.float32), GGMLType.Q2_K)
    assert "Q4_K" in str(excinfo.value)


@pytest.mark.parametrize(("ggml_type", "block_size"), [(GGMLType.Q4_K, 256), (GGMLType.Q8_0, 32)])
def test_row_length_not_a_block_multiple(ggml_type: GGMLType, block_size: int) -> None:
    with pytest.raises(ValueError, match=rf"\b100\b.*\b{block_size}\b"):
        quantize(np.zeros((2, 100), np.float32), ggml_type)


def test_scalar_is_rejected() -> None:
    with pytest.raises(ValueError, match="scalar"):
        quantize(np.float32(1.0), GGMLType.F32)
