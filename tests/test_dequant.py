"""Dequantization against `gguf`'s reference, bit for bit, on random packed bytes of every type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import quants
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelm.gguf.constants import BLOCK_LAYOUTS, QK_K, GGMLType
from edgelm.weights import dequant
from edgelm.weights.dequant import dequantize

F16_BYTES = 2
SUPPORTED = sorted(BLOCK_LAYOUTS, key=lambda t: t.value)


def _f16_fields(ggml_type: GGMLType) -> tuple[int, ...]:
    """Byte offsets of the f16 scale fields (d, and m / dmin) inside one block, from ggml-common.h."""
    type_size = BLOCK_LAYOUTS[ggml_type].type_size
    return {
        GGMLType.Q4_0: (0,),
        GGMLType.Q4_1: (0, F16_BYTES),
        GGMLType.Q5_0: (0,),
        GGMLType.Q5_1: (0, F16_BYTES),
        GGMLType.Q8_0: (0,),
        GGMLType.Q2_K: (QK_K // 16 + QK_K // 4, QK_K // 16 + QK_K // 4 + F16_BYTES),
        GGMLType.Q3_K: (type_size - F16_BYTES,),
        GGMLType.Q4_K: (0, F16_BYTES),
        GGMLType.Q5_K: (0, F16_BYTES),
        GGMLType.Q6_K: (type_size - F16_BYTES,),
    }.get(ggml_type, ())


def _random_tensor(rng: np.random.Generator, ggml_type: GGMLType, shape: tuple[int, ...]) -> np.ndarray:
    """Random packed bytes (rows, row bytes) whose f16 scales are finite: any sign, zero, subnormal."""
    block_size, type_size = BLOCK_LAYOUTS[ggml_type]
    n_blocks = int(np.prod(shape)) // block_size
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for offset in _f16_fields(ggml_type):
        bits = rng.integers(0, 1 << 16, size=n_blocks, dtype=np.uint16)
        # An all-ones exponent is inf or NaN; clearing its top bit keeps the value finite.
        bits[(bits & 0x7C00) == 0x7C00] &= np.uint16(0xBFFF)
        blocks[:, offset : offset + F16_BYTES] = bits.view(np.uint8).reshape(n_blocks, F16_BYTES)
    return blocks.reshape(-1, shape[-1] // block_size * type_size)


def _reference(raw: np.ndarray, ggml_type: GGMLType, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(quants.dequantize(raw, ggml_type), dtype=np.float32).reshape(shape)


def _assert_bits_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    # Comparing bits holds NaN payloads and the sign of zero to the reference as well.
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual.view(np.uint32), expected.view(np.uint32))


def _row_len(ggml_type: GGMLType, n_blocks: int) -> int:
    return BLOCK_LAYOUTS[ggml_type].block_size * n_blocks


@pytest.mark.parametrize("ggml_type", SUPPORTED, ids=lambda t: t.name)
@pytest.mark.parametrize("rows, n_blocks", [(1, 1), (3, 2), (5, 7)])
def test_matches_gguf_reference(ggml_type: GGMLType, rows: int, n_blocks: int) -> None:
    rng = np.random.default_rng([ggml_type.value, rows, n_blocks])
    shape = (rows, _row_len(ggml_type, n_blocks))
    raw = _random_tensor(rng, ggml_type, shape)
    _assert_bits_equal(dequantize(raw, ggml_type, shape), _reference(raw, ggml_type, shape))


@pytest.mark.parametrize("ggml_type", SUPPORTED, ids=lambda t: t.name)
def test_many_chunks_with_a_partial_last_one(ggml_type: GGMLType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dequant, "_CHUNK_ELEMENTS", _row_len(ggml_type, 7))
    rng = np.random.default_rng(ggml_type.value)
    shape = (4, 3, _row_len(ggml_type, 5))  # 60 blocks: 8 chunks of 7 and one of 4
    raw = _random_tensor(rng, ggml_type, shape)
    _assert_bits_equal(dequantize(raw, ggml_type, shape), _reference(raw, ggml_type, shape))


@settings(max_examples=40, deadline=None)
@given(
    ggml_type=st.sampled_from(SUPPORTED),
    rows=st.integers(1, 4),
    n_blocks=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_shapes_match_reference(ggml_type: GGMLType, rows: int, n_blocks: int, seed: int) -> None:
    shape = (rows, _row_len(ggml_type, n_blocks))
    raw = _random_tensor(np.random.default_rng(seed), ggml_type, shape)
    _assert_bits_equal(dequantize(raw, ggml_type, shape), _reference(raw, ggml_type, shape))


@pytest.mark.parametrize("ggml_type", [GGMLType.F32, GGMLType.F16, GGMLType.BF16], ids=lambda t: t.name)
def test_float_types_keep_nan_and_inf(ggml_type: GGMLType) -> None:
    itemsize = BLOCK_LAYOUTS[ggml_type].type_size
    specials = {
        GGMLType.F32: np.array([np.nan, -np.inf, np.inf, -0.0], dtype=np.float32),
        GGMLType.F16: np.array([np.nan, -np.inf, np.inf, -0.0], dtype=np.float16),
        GGMLType.BF16: (
            np.array([np.nan, -np.inf, np.inf, -0.0], dtype=np.float32).view(np.uint32) >> 16
        ).astype(np.uint16),
    }[ggml_type]
    raw = np.frombuffer(specials.tobytes(), dtype=np.uint8).reshape(1, 4 * itemsize)
    out = dequantize(raw, ggml_type, (1, 4))
    _assert_bits_equal(out, _reference(raw, ggml_type, (1, 4)))
    assert np.isnan(out[0, 0]) and np.isneginf(out[0, 1]) and np.isposinf(out[0, 2])
    assert np.signbit(out[0, 3])


@pytest.mark.parametrize("ggml_type", [GGMLType.Q4_K, GGMLType.Q8_0, GGMLType.F32], ids=lambda t: t.name)
def test_reads_a_read_only_memmap_at_an_odd_offset(ggml_type: GGMLType, tmp_path: Path) -> None:
    shape = (3, _row_len(ggml_type, 2))
    raw = _random_tensor(np.random.default_rng(7), ggml_type, shape)
    path = tmp_path / "tensor.bin"
    path.write_bytes(b"\x00" * 3 + raw.tobytes())  # an offset that aligns to nothing
    mapped = np.memmap(path, dtype=np.uint8, mode="r", offset=3, shape=raw.shape)
    before = np.array(mapped)

    out = dequantize(mapped, ggml_type, shape)

    _assert_bits_equal(out, _reference(raw, ggml_type, shape))
    np.testing.assert_array_equal(np.asarray(mapped), before)
    assert out.flags.writeable and out.flags.c_contiguous
    assert not np.shares_memory(out, mapped)


def test_accepts_flat_bytes_and_any_rank() -> None:
    shape = (2, 3, _row_len(GGMLType.Q6_K, 1))
    raw = _random_tensor(np.random.default_rng(3), GGMLType.Q6_K, shape)
    out = dequantize(raw.reshape(-1), GGMLType.Q6_K, shape)
    _assert_bits_equal(out, _reference(raw, GGMLType.Q6_K, shape))


def test_empty_tensor() -> None:
    out = dequantize(np.empty(0, dtype=np.uint8), GGMLType.Q4_0, (0, 64))
    assert out.shape == (0, 64) and out.dtype == np.float32


def test_block_dtypes_match_the_layouts() -> None:
    for ggml_type, layout in BLOCK_LAYOUTS.items():
        assert dequant._FORMATS[ggml_type].block.itemsize == layout.type_size, ggml_type.name


def test_unsupported_type_names_it_and_lists_supported() -> None:
    with pytest.raises(ValueError, match=r"IQ2_XXS.*Q4_K") as info:
        dequantize(np.zeros(66, dtype=np.uint8), GGMLType.IQ2_XXS, (1, 256))
    for ggml_type in SUPPORTED:
        assert ggml_type.name in str(info.value)


def test_wrong_byte_count_gives_both_numbers() -> None:
    type_size = BLOCK_LAYOUTS[GGMLType.Q8_0].type_size
    with pytest.raises(ValueError, match=rf"{2 * type_size}.*{2 * type_size - 1}"):
        dequantize(np.zeros(2 * type_size - 1, dtype=np.uint8), GGMLType.Q8_0, (1, 64))


def test_row_not_a_multiple_of_the_block_size() -> None:
    with pytest.raises(ValueError, match=r"block size 256"):
        dequantize(np.zeros(144, dtype=np.uint8), GGMLType.Q4_K, (2, 128))
