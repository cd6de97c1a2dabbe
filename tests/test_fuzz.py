"""Damaged files: a mutated model file opens or fails with `ModelFileError`, quickly, never otherwise.

And the reader agrees with `gguf`'s reference reader on every file both can read: the real vocab files,
synthetic models, and the mutated files.
"""

from __future__ import annotations

import itertools
import math
import random
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFReader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import vocab_path
from edgelm.errors import ModelFileError
from edgelm.gguf.constants import GGUFValueType
from edgelm.gguf.reader import GGUFFile
from edgelm.gguf.string_array import StringArray
from edgelm.models.model_file import ModelFile

V = GGUFValueType
# Opening a few-KB file takes about a millisecond; anything near this means a loop over a bad count.
MAX_OPEN_S = 2.0

# -- where the numbers are ----------------------------------------------------------------------

_SCALAR_SIZES = {V.UINT8: 1, V.INT8: 1, V.BOOL: 1, V.UINT16: 2, V.INT16: 2, V.UINT32: 4, V.INT32: 4}
_SCALAR_SIZES |= {V.FLOAT32: 4, V.UINT64: 8, V.INT64: 8, V.FLOAT64: 8}


def header_numbers(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every integer in a valid file's header: counts, lengths, type ids, dims, offsets."""
    out: list[tuple[int, int]] = [(4, 4), (8, 8), (16, 8)]
    pos = 24

    def take(width: int) -> int:
        nonlocal pos
        out.append((pos, width))
        (v,) = struct.unpack_from("<I" if width == 4 else "<Q", data, pos)
        pos += width
        return int(v)

    def string() -> None:
        nonlocal pos
        n = take(8)
        pos += n

    def value(vtype: int) -> None:
        nonlocal pos
        if vtype == V.STRING:
            string()
        elif vtype == V.ARRAY:
            sub_type, count = take(4), take(8)
            for _ in range(count):
                value(sub_type)
        else:
            pos += _SCALAR_SIZES[V(vtype)]

    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    for _ in range(n_kv):
        string()
        value(take(4))
    for _ in range(n_tensors):
        string()
        for _ in range(take(4)):
            take(8)
        take(4)
        take(8)
    return out


# -- mutations ----------------------------------------------------------------------------------

# Values that sit on the edges of the checks: zero, one, small type ids, powers of two, all ones.
INTERESTING = sorted(
    {0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 16, 31, 32, 33, 64, 255, 256}
    | {2**k + d for k in (15, 16, 31, 32, 40, 62, 63, 64) for d in (-1, 0)} - {2**64}
)


@st.composite
def mutated(draw: st.DrawFn, data: bytes, numbers: list[tuple[int, int]], header_end: int) -> bytes:
    """`data` with one to three edits, three in four of them inside the header."""
    buf = bytearray(data)
    # Where to edit comes from a seeded generator: Hypothesis' integers crowd at the low end (the magic).
    rng = random.Random(draw(st.integers(0, 2**64 - 1)))

    def position() -> int:
        end = min(header_end if rng.random() < 0.75 else len(buf), len(buf))
        return rng.randrange(max(1, end))

    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["number", "number", "bytes", "flip", "insert", "delete", "cut"]))
        if kind == "number":
            at, width = rng.choice(numbers)
            if at + width > len(buf):
                continue
            old = int.from_bytes(buf[at : at + width], "little")
            new = draw(
                st.one_of(
                    st.sampled_from(INTERESTING),
                    st.integers(-64, 64).map(lambda d, old=old: old + d),
                    st.sampled_from([len(buf), len(buf) - at, header_end]),
                )
            )
            buf[at : at + width] = (new % 2 ** (8 * width)).to_bytes(width, "little")
        elif kind == "bytes":
            at = position()
            new = draw(st.binary(min_size=1, max_size=8))
            buf[at : at + len(new)] = new
        elif kind == "flip":
            at = position()
            if at < len(buf):
                buf[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            at = position()
            buf[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            at = position()
            del buf[at : at + draw(st.integers(1, 16))]
        else:
            del buf[position() :]
    return bytes(buf)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def mini_bytes(mini_model: Path) -> bytes:
    return mini_model.read_bytes()


def _fuzz_once(path: Path, data: bytes) -> tuple[ModelFile | None, str | None]:
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        return ModelFile.open(path), None
    except ModelFileError as e:
        msg = str(e)
        assert msg.startswith(f"{path}: ") and len(msg) < 1000, msg
        return None, msg
    finally:
        elapsed = time.perf_counter() - start
        assert elapsed < MAX_OPEN_S, f"open took {elapsed:.2f} s"


def test_mutated_model_files_open_or_fail_cleanly(mini_bytes: bytes, scratch: Path) -> None:
    numbers = header_numbers(mini_bytes)
    header_end = GGUFFile.parse("mini", mini_bytes).data_offset
    counter = itertools.count()
    outcomes: dict[str, int] = {"opened": 0, "refused": 0, "agreed": 0}

    @settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=mutated(mini_bytes, numbers, header_end))
    def check(data: bytes) -> None:
        # A fresh name each time: a mapping of the previous file may still be alive.
        path = scratch / f"m{next(counter)}.gguf"
        try:
            model, _ = _fuzz_once(path, data)
            outcomes["opened" if model is not None else "refused"] += 1
            reference = _reference(path) if model is not None else None
            if reference is not None:
                assert_same_as_reference(path, reference)
                outcomes["agreed"] += 1
        finally:
            path.unlink(missing_ok=True)

    check()
    # The mutations must reach past the first check often, and leave the file loadable sometimes.
    assert outcomes["refused"] > 200 and outcomes["opened"] > 20 and outcomes["agreed"] > 10, outcomes


# -- agreement with the reference reader ---------------------------------------------------------


def _reference(path: Path) -> tuple[GGUFReader, dict[str, Any]] | None:
    """The reference reader's view of `path`: (reader, every key's value), None where it cannot read it."""
    try:
        ref = GGUFReader(path)
        values = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    except Exception:  # the reference is stricter in places (UTF-8, alignment type): nothing to compare
        return None
    return ref, values


def _flat(v: Any) -> Any:
    """A metadata value as the reference gives it: nested arrays flattened, numbers as Python values."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, StringArray):
        return list(v)
    if isinstance(v, list):
        nested = (list, np.ndarray, StringArray)
        return [x for item in v for x in (_flat(item) if isinstance(item, nested) else [item])]
    return v


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def assert_same_as_reference(path: Path, reference: tuple[GGUFReader, dict[str, Any]] | None = None) -> None:
    """Every key's types and value, every tensor's type, shape, offset and bytes as `GGUFReader` has them."""
    ours = GGUFFile.open(path)
    reference = reference or _reference(path)
    assert reference is not None, "the reference reader cannot read it"
    ref, values = reference
    assert list(ours.fields) == list(values)
    for key, field in ours.fields.items():
        types = ref.fields[key].types
        assert field.type == types[0], key
        if field.type == V.ARRAY and len(types) > 1:  # an empty array has no element type in the reference
            assert field.sub_type == types[1], key
        assert _same(_flat(field.value), values[key]), key
    assert ours.data_offset == ref.data_offset
    assert [t.name for t in ours] == [t.name for t in ref.tensors]
    for t, rt in zip(ours, ref.tensors, strict=True):
        assert (t.ggml_type, t.ne, t.offset, t.n_bytes) == (
            rt.tensor_type,
            tuple(rt.shape.tolist()),
            rt.data_offset,
            rt.n_bytes,
        ), t.name
        assert ours.tensor_data(t.name).tobytes() == bytes(
            ref.data[rt.data_offset : rt.data_offset + rt.n_bytes]
        )


VOCABS = ["llama-spm", "gpt-2", "qwen2", "llama-bpe"]


@pytest.mark.parametrize("name", VOCABS)
def test_vocab_files_read_like_the_reference(name: str) -> None:
    path = vocab_path(name)
    if path is None:
        pytest.skip(f"no ggml-vocab-{name}.gguf here")
    assert_same_as_reference(path)


@pytest.mark.parametrize(
    ("preset", "quant"), [("tiny-qwen2", "f16"), ("tiny-gemma3", "f32"), ("tiny-llama", "bf16")]
)
def test_synthetic_models_read_like_the_reference(tiny_model, preset: str, quant: str) -> None:
    assert_same_as_reference(tiny_model(preset, quant))


def test_mini_model_reads_like_the_reference(mini_model: Path) -> None:
    assert_same_as_reference(mini_model)
