"""Bad model files fail fast with a `ModelFileError` naming the file and the key, tensor or field at fault.

Each file is written byte by byte here (the real writer refuses most of these), starting from the bytes
of `MINI_CONFIG`'s model and changing one thing.
"""

from __future__ import annotations

import math
import os
import re
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGUFEndian, GGUFWriter

from conftest import MINI_CONFIG, mini_fields, vocab_path
from edgelm.cli.main import main
from edgelm.errors import ModelFileError
from edgelm.gguf import reader
from edgelm.gguf.constants import SUPPORTED_TYPES, GGMLType, GGUFValueType
from edgelm.gguf.reader import GGUFFile, MetaField
from edgelm.models.config import ARCHITECTURES, ModelConfig
from edgelm.models.layout import expected_tensors
from edgelm.models.model_file import ModelFile

V = GGUFValueType
ALIGNMENT = 32
# No bad file may take longer than this to be refused, however large the numbers in it.
FAIL_FAST_S = 1.0
HUGE = (2**62, 2**64 - 1)
NATIVE_SCAN = reader._scan_strings  # the extension's walk over string arrays, None without it

# -- writing GGUF bytes --------------------------------------------------------------------------

_SCALAR_FORMATS = {
    V.UINT8: "<B",
    V.INT8: "<b",
    V.UINT16: "<H",
    V.INT16: "<h",
    V.UINT32: "<I",
    V.INT32: "<i",
    V.FLOAT32: "<f",
    V.BOOL: "<?",
    V.UINT64: "<Q",
    V.INT64: "<q",
    V.FLOAT64: "<d",
}


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def gstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return u64(len(b)) + b


def value(vtype: GGUFValueType, v: Any, sub_type: GGUFValueType | None = None) -> bytes:
    """The bytes of a value of `vtype` (an array is `v` items of `sub_type`)."""
    if vtype == V.STRING:
        return gstr(v)
    if vtype == V.ARRAY:
        assert sub_type is not None
        items = v.tolist() if isinstance(v, np.ndarray) else list(v)
        inner = b"".join(
            value(V.ARRAY, x[1], x[0]) if sub_type == V.ARRAY else value(sub_type, x) for x in items
        )
        return u32(sub_type) + u64(len(items)) + inner
    return struct.pack(_SCALAR_FORMATS[vtype], v)


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    """One metadata pair from the raw bytes of its value."""
    return gstr(key) + u32(vtype) + payload


def field(key: str, f: MetaField) -> bytes:
    return kv(key, f.type, value(f.type, f.value, f.sub_type))


@dataclass(frozen=True)
class RawTensor:
    """A tensor to write: its info, and how many data bytes follow (by default what its shape needs)."""

    name: str
    ne: tuple[int, ...]
    ggml_type: int = GGMLType.F32
    offset: int | None = None  # relative data offset; None: right after the previous tensor
    n_bytes: int | None = None


def tensor_bytes(ggml_type: int, ne: tuple[int, ...]) -> int:
    block_size, type_size = GGML_QUANT_SIZES[GGMLType(ggml_type)]
    return math.prod(ne) // block_size * type_size


def gguf_bytes(
    kvs: list[bytes],
    tensors: list[RawTensor],
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
) -> bytes:
    infos, data = [], bytearray()
    for t in tensors:
        offset = len(data) if t.offset is None else t.offset
        infos.append(
            gstr(t.name) + u32(len(t.ne)) + b"".join(map(u64, t.ne)) + u32(t.ggml_type) + u64(offset)
        )
        data += bytes(tensor_bytes(t.ggml_type, t.ne) if t.n_bytes is None else t.n_bytes)
        data += bytes(-len(data) % ALIGNMENT)
    head = magic + u32(version) + u64(len(tensors) if n_tensors is None else n_tensors)
    head += u64(len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(infos)
    return head + bytes(-len(head) % ALIGNMENT) + data


def mini_kvs(
    changes: dict[str, MetaField | bytes | None] | None = None, cfg: ModelConfig = MINI_CONFIG
) -> list[bytes]:
    """`cfg`'s metadata, each changed key set to a field, to raw `kv` bytes, or removed (None)."""
    fields: dict[str, MetaField | bytes | None] = {**mini_fields(cfg), **(changes or {})}
    return [v if isinstance(v, bytes) else field(k, v) for k, v in fields.items() if v is not None]


def mini_tensors(cfg: ModelConfig = MINI_CONFIG) -> list[RawTensor]:
    return [
        RawTensor(s.name, s.ne, GGMLType.F32 if len(s.ne) == 1 else GGMLType.F16)
        for s in expected_tensors(cfg)
    ]


def with_tensor(tensors: list[RawTensor], name: str, **changes: Any) -> list[RawTensor]:
    assert any(t.name == name for t in tensors)
    return [replace(t, **changes) if t.name == name else t for t in tensors]


def mini_bytes(**kw: Any) -> bytes:
    return gguf_bytes(mini_kvs(), mini_tensors(), **kw)


# -- checking ------------------------------------------------------------------------------------


def refused(path: Path | str, *fragments: str) -> str:
    """Open `path`, expect a quick `ModelFileError` naming the file and every fragment; its message."""
    start = time.perf_counter()
    with pytest.raises(ModelFileError) as info:
        ModelFile.open(path)
    elapsed = time.perf_counter() - start
    msg = str(info.value)
    assert elapsed < FAIL_FAST_S, f"took {elapsed:.2f} s: {msg}"
    assert msg.startswith(f"{path}: "), msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    assert "\n" not in msg
    assert len(msg) < 500 + len(str(path)), msg
    return msg


def bad(tmp_path: Path, data: bytes, *fragments: str) -> str:
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    return refused(path, *fragments)


def test_the_unchanged_bytes_load(tmp_path: Path) -> None:
    path = tmp_path / "mini.gguf"
    path.write_bytes(mini_bytes())
    m = ModelFile.open(path)
    assert replace(m.config, norm_eps=MINI_CONFIG.norm_eps) == MINI_CONFIG
    assert set(m.tensors) == {s.name for s in expected_tensors(MINI_CONFIG)}


# -- the path ------------------------------------------------------------------------------------


def test_nonexistent_path(tmp_path: Path) -> None:
    refused(tmp_path / "missing.gguf", "cannot open", "No such file")


def test_directory(tmp_path: Path) -> None:
    refused(tmp_path, "cannot open", "directory")


def test_empty_file(tmp_path: Path) -> None:
    bad(tmp_path, b"", "not a GGUF file", "0 bytes")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "pipe.gguf"
    os.mkfifo(path)
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            ModelFile.open(path)
        except BaseException as e:
            errors.append(e)

    worker = threading.Thread(target=open_it, daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "blocked opening a FIFO"
    assert len(errors) == 1 and isinstance(errors[0], ModelFileError)
    assert str(path) in str(errors[0]) and "not a regular file" in str(errors[0])


def test_path_with_a_nul_byte() -> None:
    with pytest.raises(ModelFileError, match="cannot open"):
        ModelFile.open("model\0.gguf")


# -- the header ----------------------------------------------------------------------------------


@pytest.mark.parametrize("magic", [b"GGML", b"FUGG", b"\0\0\0\0", b"PK\3\4"])
def test_not_a_gguf_bad_magic(tmp_path: Path, magic: bytes) -> None:
    bad(tmp_path, mini_bytes(magic=magic), "not a GGUF file", repr(magic), "b'GGUF'")


def test_not_a_gguf_text_file(tmp_path: Path) -> None:
    bad(tmp_path, b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n", "not a GGUF file")


@pytest.mark.parametrize("version", [0, 1, 4, 0xFFFF, 2**32 - 1])
def test_unsupported_gguf_version(tmp_path: Path, version: int) -> None:
    bad(tmp_path, mini_bytes(version=version), f"unsupported GGUF version {version}", "supported: 2, 3")


def test_big_endian_file(tmp_path: Path) -> None:
    path = tmp_path / "big-endian.gguf"
    writer = GGUFWriter(path, "llama", endianess=GGUFEndian.BIG)
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    refused(path, "big-endian GGUF files are not supported")


@pytest.mark.parametrize("n", [*HUGE, 2**32])
def test_absurd_tensor_count(tmp_path: Path, n: int) -> None:
    data = mini_bytes(n_tensors=n)
    bad(tmp_path, data, f"tensor count {n}", f"{len(data)}-byte file")


@pytest.mark.parametrize("n", [*HUGE, 2**32])
def test_absurd_metadata_key_count(tmp_path: Path, n: int) -> None:
    data = mini_bytes(n_kv=n)
    bad(tmp_path, data, f"metadata key count {n}", f"{len(data)}-byte file")


def test_fewer_tensors_than_the_count_says(tmp_path: Path) -> None:
    tensors = mini_tensors()
    bad(tmp_path, gguf_bytes(mini_kvs(), tensors, n_tensors=len(tensors) + 1), "tensor")


# -- truncation ----------------------------------------------------------------------------------


def _regions() -> dict[str, int]:
    """Where to cut the mini file: a byte inside each of its parts."""
    meta_end = 24 + sum(map(len, mini_kvs()))
    full = mini_bytes()
    data_start = GGUFFile.parse("mini", full).data_offset
    return {
        "inside the metadata": meta_end // 2,
        "inside a string array": full.index(gstr("<unk>")) + 20,
        "at the end of the metadata": meta_end,
        "inside the tensor infos": (meta_end + data_start) // 2,
        "at the start of the tensor data": data_start,
        "inside the tensor data": (data_start + len(full)) // 2,
        "without its last byte": len(full) - 1,
    }


@pytest.mark.parametrize("where", list(_regions()))
def test_truncated_file(tmp_path: Path, where: str) -> None:
    cut = _regions()[where]
    bad(tmp_path, mini_bytes()[:cut], f"past the end of the file ({cut} bytes; truncated file?)")


@pytest.mark.parametrize("cut", [1, 4, 16, 23])
def test_truncated_inside_the_header(tmp_path: Path, cut: int) -> None:
    bad(tmp_path, mini_bytes()[:cut], "not a GGUF file", f"only {cut} bytes")


def test_tensor_data_past_end_of_file(tmp_path: Path) -> None:
    tensors = with_tensor(mini_tensors(), "blk.0.ffn_up.weight", offset=1 << 20)
    data = gguf_bytes(mini_kvs(), tensors)
    msg = bad(tmp_path, data, "'blk.0.ffn_up.weight'", "past the end of the file", f"{len(data)} bytes")
    start, end = map(int, re.search(r"\[(\d+), (\d+)\)", msg).groups())  # type: ignore[union-attr]
    assert end - start == tensor_bytes(GGMLType.F16, (16, 32)) and start > len(data)


def test_tensor_data_partly_past_end_of_file(tmp_path: Path) -> None:
    # Every tensor's data starts inside the file, the last one's ends 2 bytes after it.
    data = mini_bytes()
    last = mini_tensors()[-1]
    bad(tmp_path, data[: len(data) - 2], repr(last.name), f"{len(data) - 2} bytes")


# -- strings and arrays --------------------------------------------------------------------------


@pytest.mark.parametrize("n", HUGE)
def test_absurd_key_name_length(tmp_path: Path, n: int) -> None:
    data = gguf_bytes([*mini_kvs(), u64(n) + b"general.x"], mini_tensors())
    bad(tmp_path, data, f"metadata key #{len(mini_kvs())} name", f"string length {n}")


@pytest.mark.parametrize("n", HUGE)
def test_absurd_string_value_length(tmp_path: Path, n: int) -> None:
    raw = kv("general.name", V.STRING, u64(n) + b"mini")
    data = gguf_bytes(mini_kvs({"general.name": raw}), mini_tensors())
    bad(tmp_path, data, "'general.name'", f"string length {n}")


@pytest.mark.parametrize("n", HUGE)
def test_absurd_string_length_inside_an_array(tmp_path: Path, n: int) -> None:
    raw = kv("tokenizer.ggml.tokens", V.ARRAY, u32(V.STRING) + u64(2) + gstr("a") + u64(n) + b"b")
    data = gguf_bytes(mini_kvs({"tokenizer.ggml.tokens": raw}), mini_tensors())
    bad(tmp_path, data, "'tokenizer.ggml.tokens'", "string 1", f"length {n}")


# -- string arrays, walked natively and in Python ------------------------------------------------


def _read_both_ways(data: bytes, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What parsing `data` gives with the extension's walk over string arrays and with the Python loop:
    the string arrays and where the tensor data starts, or the error message."""
    if NATIVE_SCAN is None:
        pytest.skip("built without the extension")
    outcomes = []
    for scan in (NATIVE_SCAN, None):
        monkeypatch.setattr(reader, "_scan_strings", scan)
        try:
            f = GGUFFile.parse("x.gguf", data)
        except ModelFileError as e:
            outcomes.append(str(e))
            continue
        arrays = {k: list(v.value) for k, v in f.fields.items() if v.sub_type == V.STRING}
        outcomes.append(f"{arrays!r} {f.data_offset}")
    return outcomes


def _tokens_array() -> tuple[bytes, int, list[int]]:
    """The mini file, where its token array starts, and where each of its strings' lengths is and
    the last string ends."""
    full = mini_bytes()
    tokens = mini_fields()["tokenizer.ggml.tokens"].value
    start = full.index(gstr(tokens[0])) - 12  # the element type and count come first
    positions = []
    pos = start + 12
    for t in tokens:
        positions.append(pos)
        pos += len(gstr(t))
    return full, start, [*positions, pos]


def test_string_arrays_cut_short_read_alike_with_and_without_the_extension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full, start, positions = _tokens_array()
    for cut in range(start, positions[-1]):
        native, python = _read_both_ways(full[:cut], monkeypatch)
        assert native == python, cut
        assert "tokenizer.ggml.tokens" in native or cut < start + 12, (cut, native)
    native, python = _read_both_ways(full, monkeypatch)
    assert native == python and "'<unk>'" in native


@pytest.mark.parametrize("length", [1, 2, 100, 2**31, *HUGE])
def test_damaged_string_lengths_read_alike_with_and_without_the_extension(
    monkeypatch: pytest.MonkeyPatch, length: int
) -> None:
    full, _, positions = _tokens_array()
    for i, pos in enumerate(positions[:-1]):
        data = full[:pos] + u64(length) + full[pos + 8 :]
        native, python = _read_both_ways(data, monkeypatch)
        assert native == python, (i, length)


def test_the_native_walk_refuses_positions_outside_the_buffer() -> None:
    if NATIVE_SCAN is None:
        pytest.skip("built without the extension")
    assert NATIVE_SCAN(b"abc", 3, 0) == (0, 3, None, b"", b"")
    assert NATIVE_SCAN(u64(1) + b"x" + u64(5), 0, 2)[:3] == (1, 9, 5)
    for pos, count in ((4, 0), (-1, 0), (0, -1)):
        with pytest.raises(ValueError):
            NATIVE_SCAN(b"abc", pos, count)


def test_vocab_string_arrays_read_alike_with_and_without_the_extension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = vocab_path("qwen2")
    if path is None or NATIVE_SCAN is None:
        pytest.skip("no qwen2 vocab file, or built without the extension")
    native = GGUFFile.open(path)
    monkeypatch.setattr(reader, "_scan_strings", None)
    python = GGUFFile.open(path)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
        a, b = native.fields[key].value.spans(), python.fields[key].value.spans()
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert native.data_offset == python.data_offset


@pytest.mark.parametrize("n", HUGE)
def test_absurd_tensor_name_length(tmp_path: Path, n: int) -> None:
    data = bytearray(gguf_bytes(mini_kvs(), mini_tensors()))
    first_info = 24 + sum(map(len, mini_kvs()))
    data[first_info : first_info + 8] = u64(n)
    bad(tmp_path, bytes(data), "tensor #0 name", f"string length {n}")


@pytest.mark.parametrize("sub_type", [V.UINT8, V.UINT32, V.FLOAT64, V.BOOL, V.STRING, V.ARRAY])
@pytest.mark.parametrize("n", HUGE)
def test_absurd_array_length(tmp_path: Path, sub_type: GGUFValueType, n: int) -> None:
    raw = kv("tokenizer.ggml.scores", V.ARRAY, u32(sub_type) + u64(n) + bytes(16))
    data = gguf_bytes(mini_kvs({"tokenizer.ggml.scores": raw}), mini_tensors())
    bad(tmp_path, data, "'tokenizer.ggml.scores'", f"array of {n} {sub_type.name} values", "end of the file")


def test_nested_arrays_are_read(tmp_path: Path) -> None:
    nested = [(V.UINT32, [1, 2]), (V.UINT32, []), (V.UINT32, [3])]
    raw = kv("general.nested", V.ARRAY, value(V.ARRAY, nested, V.ARRAY))
    path = tmp_path / "nested.gguf"
    path.write_bytes(gguf_bytes([*mini_kvs(), raw], mini_tensors()))
    m = ModelFile.open(path)
    got = m.gguf.metadata["general.nested"]
    assert [a.tolist() for a in got] == [[1, 2], [], [3]]
    assert m.gguf.fields["general.nested"].sub_type == V.ARRAY


def nested_array(depth: int) -> bytes:
    """The value bytes of an array of arrays ... `depth` deep around one empty UINT8 array."""
    payload = u32(V.UINT8) + u64(0)
    for _ in range(depth - 1):
        payload = u32(V.ARRAY) + u64(1) + payload
    return payload


def test_arrays_nested_8_deep_are_read(tmp_path: Path) -> None:
    path = tmp_path / "nested.gguf"
    path.write_bytes(
        gguf_bytes([*mini_kvs(), kv("general.nested", V.ARRAY, nested_array(8))], mini_tensors())
    )
    got = ModelFile.open(path).gguf.metadata["general.nested"]
    for _ in range(7):
        assert isinstance(got, list) and len(got) == 1
        got = got[0]
    assert isinstance(got, np.ndarray) and got.dtype == np.uint8 and got.size == 0


@pytest.mark.parametrize("depth", [9, 10_000])
def test_deeply_nested_arrays(tmp_path: Path, depth: int) -> None:
    data = gguf_bytes([*mini_kvs(), kv("general.nested", V.ARRAY, nested_array(depth))], mini_tensors())
    bad(tmp_path, data, "'general.nested'", "nested more than 8 deep")


@pytest.mark.parametrize("raw_type", [13, 255, 2**32 - 1])
def test_unknown_value_type(tmp_path: Path, raw_type: int) -> None:
    data = gguf_bytes([*mini_kvs(), kv("general.odd", raw_type, u32(0))], mini_tensors())
    bad(tmp_path, data, "'general.odd'", f"unknown value type {raw_type}")


def test_unknown_array_element_type(tmp_path: Path) -> None:
    data = gguf_bytes([*mini_kvs(), kv("general.odd", V.ARRAY, u32(77) + u64(1) + u32(0))], mini_tensors())
    bad(tmp_path, data, "'general.odd'", "unknown value type 77")


def test_absurdly_long_key_is_quoted_short(tmp_path: Path) -> None:
    key = "general." + "x" * 10_000
    msg = bad(tmp_path, gguf_bytes([*mini_kvs(), kv(key, 99, u32(0))], mini_tensors()), "(10008 characters)")
    assert "unknown value type 99" in msg


def test_duplicate_key(tmp_path: Path) -> None:
    kvs = mini_kvs()
    again = field("llama.block_count", MetaField(3, V.UINT32))
    bad(tmp_path, gguf_bytes([*kvs, again], mini_tensors()), "'llama.block_count'", "appears twice")


# -- tensor infos --------------------------------------------------------------------------------


def test_duplicate_tensor(tmp_path: Path) -> None:
    tensors = mini_tensors()
    data = gguf_bytes(mini_kvs(), [*tensors, tensors[3]])
    bad(tmp_path, data, repr(tensors[3].name), "appears twice")


def test_tensor_name_longer_than_the_format_allows(tmp_path: Path) -> None:
    tensors = [*mini_tensors(), RawTensor("blk.0." + "x" * 100, (16,))]
    bad(tmp_path, gguf_bytes(mini_kvs(), tensors), f"tensor #{len(tensors) - 1} name", "106 bytes long", "64")


@pytest.mark.parametrize("offset", [4, 31, 48])
def test_misaligned_tensor_offset(tmp_path: Path, offset: int) -> None:
    tensors = with_tensor(mini_tensors(), "blk.0.attn_k.weight", offset=offset)
    data = gguf_bytes(mini_kvs(), tensors)
    bad(tmp_path, data, "'blk.0.attn_k.weight'", f"data offset {offset}", f"aligned to {ALIGNMENT}")


def test_offset_misaligned_for_a_custom_alignment(tmp_path: Path) -> None:
    kvs = [*mini_kvs(), field("general.alignment", MetaField(64, V.UINT32))]
    data = gguf_bytes(kvs, with_tensor(mini_tensors(), "output_norm.weight", offset=32 * 33))
    bad(tmp_path, data, "'output_norm.weight'", "aligned to 64")


@pytest.mark.parametrize(
    "alignment",
    [
        MetaField(0, V.UINT32),
        MetaField(3, V.UINT32),
        MetaField(48, V.UINT32),
        MetaField("32", V.STRING),
        MetaField(32.0, V.FLOAT32),
        MetaField(np.arange(10**5, dtype=np.uint32), V.ARRAY, V.UINT32),
    ],
    ids=["zero", "three", "48", "string", "float", "array"],
)
def test_bad_alignment(tmp_path: Path, alignment: MetaField) -> None:
    data = gguf_bytes([*mini_kvs(), field("general.alignment", alignment)], mini_tensors())
    bad(tmp_path, data, "'general.alignment'", "is not a power of two")


@pytest.mark.parametrize("ne", [(), (1, 1, 1, 1, 16)], ids=["0 dims", "5 dims"])
def test_dimension_count(tmp_path: Path, ne: tuple[int, ...]) -> None:
    tensors = with_tensor(mini_tensors(), "output_norm.weight", ne=ne, n_bytes=64)
    bad(tmp_path, gguf_bytes(mini_kvs(), tensors), "'output_norm.weight'", f"{len(ne)} dimensions", "1 to 4")


def test_absurd_dimension_count(tmp_path: Path) -> None:
    data = bytearray(mini_bytes())
    first_info = 24 + sum(map(len, mini_kvs()))
    name_len = len(gstr(mini_tensors()[0].name))
    data[first_info + name_len : first_info + name_len + 4] = u32(2**32 - 1)
    bad(tmp_path, bytes(data), "'token_embd.weight'", f"{2**32 - 1} dimensions")


@pytest.mark.parametrize(
    "ne", [(16, 0), (0, 16), (2**40,), (16, 2**40), (2**64 - 1, 2**64 - 1), (2**32, 2**32, 2**32, 2**32)]
)
def test_dimension_size(tmp_path: Path, ne: tuple[int, ...]) -> None:
    tensors = with_tensor(mini_tensors(), "token_embd.weight", ne=ne, n_bytes=512)
    data = gguf_bytes(mini_kvs(), tensors)
    bad(tmp_path, data, "'token_embd.weight'", f"shape {list(ne)}", f"{len(data)}-byte file")


@pytest.mark.parametrize("type_id", [4, 5, 31, 99, 2**32 - 1])
def test_unknown_ggml_type_id(tmp_path: Path, type_id: int) -> None:
    tensors = with_tensor(mini_tensors(), "blk.0.attn_q.weight", ggml_type=type_id, n_bytes=512)
    bad(tmp_path, gguf_bytes(mini_kvs(), tensors), "'blk.0.attn_q.weight'", f"unknown ggml type id {type_id}")


UNSUPPORTED_TYPES = sorted(set(GGMLType) - SUPPORTED_TYPES, key=int)


@pytest.mark.parametrize("ggml_type", UNSUPPORTED_TYPES, ids=lambda t: t.name)
def test_known_but_unsupported_tensor_type(tmp_path: Path, ggml_type: GGMLType) -> None:
    block_size = GGML_QUANT_SIZES[ggml_type][0]
    extra = RawTensor("blk.0.extra.weight", (block_size, 2), ggml_type)
    msg = bad(
        tmp_path, gguf_bytes(mini_kvs(), [*mini_tensors(), extra]), "'blk.0.extra.weight'", ggml_type.name
    )
    for t in SUPPORTED_TYPES:
        assert t.name in msg.split("supported:")[1]


@pytest.mark.parametrize(
    ("ggml_type", "row"), [(GGMLType.Q4_0, 33), (GGMLType.Q6_K, 32), (GGMLType.IQ2_XXS, 16)]
)
def test_row_length_not_a_multiple_of_the_block_size(tmp_path: Path, ggml_type: GGMLType, row: int) -> None:
    extra = RawTensor("blk.0.extra.weight", (row, 4), ggml_type, n_bytes=1024)
    block_size = GGML_QUANT_SIZES[ggml_type][0]
    bad(
        tmp_path,
        gguf_bytes(mini_kvs(), [*mini_tensors(), extra]),
        "'blk.0.extra.weight'",
        f"row length {row} is not a multiple of the {ggml_type.name} block size {block_size}",
    )


# -- model metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["mamba", "LLAMA", "", "llama\0"])
def test_unknown_architecture_lists_the_supported_ones(tmp_path: Path, arch: str) -> None:
    data = gguf_bytes(mini_kvs({"general.architecture": MetaField(arch, V.STRING)}), mini_tensors())
    msg = bad(tmp_path, data, f"unknown architecture {arch!r}")
    assert msg.endswith(f"(supported: {', '.join(sorted(ARCHITECTURES))})")


@pytest.mark.parametrize(
    "arch",
    [
        MetaField(7, V.UINT32),
        MetaField(["llama"], V.ARRAY, V.STRING),
        MetaField(np.zeros(3), V.ARRAY, V.FLOAT64),
    ],
    ids=["uint32", "string array", "float array"],
)
def test_architecture_that_is_not_a_string(tmp_path: Path, arch: MetaField) -> None:
    data = gguf_bytes(mini_kvs({"general.architecture": arch}), mini_tensors())
    bad(tmp_path, data, "'general.architecture'", "is not a string")


REQUIRED_KEYS = [
    "general.architecture",
    "llama.block_count",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.context_length",
]


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    bad(tmp_path, gguf_bytes(mini_kvs({key: None}), mini_tensors()), f"missing required key {key!r}")


def test_missing_sliding_window_of_an_architecture_that_needs_it(tmp_path: Path) -> None:
    cfg = replace(MINI_CONFIG, arch="gemma3", sliding_window=4, sliding_window_pattern=6)
    kvs = mini_kvs({"gemma3.attention.sliding_window": None}, cfg)
    bad(
        tmp_path, gguf_bytes(kvs, mini_tensors(cfg)), "missing required key 'gemma3.attention.sliding_window'"
    )


def test_optional_keys_fall_back(tmp_path: Path) -> None:
    """Without vocab_size, key_length, head_count_kv ... the model still loads, sizes taken from elsewhere."""
    optional = ["llama.vocab_size", "llama.attention.head_count_kv", "llama.rope.freq_base"]
    kvs = mini_kvs(dict.fromkeys(optional) | {"llama.attention.head_count_kv": MetaField(1, V.UINT32)})
    path = tmp_path / "sparse.gguf"
    path.write_bytes(gguf_bytes(kvs, mini_tensors()))
    assert ModelFile.open(path).config.vocab_size == MINI_CONFIG.vocab_size


WRONG_TYPES = {
    "llama.block_count": [
        MetaField("1", V.STRING),
        MetaField(1.0, V.FLOAT32),
        MetaField(True, V.BOOL),
        MetaField(np.ones(1, dtype=np.uint32), V.ARRAY, V.UINT32),
        MetaField(["x"] * 10_000, V.ARRAY, V.STRING),
    ],
    "llama.embedding_length": [MetaField("16", V.STRING), MetaField(16.0, V.FLOAT64)],
    "llama.attention.head_count_kv": [MetaField(np.ones(2, dtype=np.int32), V.ARRAY, V.INT32)],
    "llama.vocab_size": [
        MetaField("16", V.STRING),
        MetaField(16.0, V.FLOAT32),
        MetaField(np.full(4, 16, dtype=np.uint32), V.ARRAY, V.UINT32),
    ],
    "llama.rope.freq_base": [MetaField("1e4", V.STRING), MetaField(True, V.BOOL)],
    "llama.attention.layer_norm_rms_epsilon": [MetaField("1e-6", V.STRING)],
    "llama.rope.scaling.type": [
        MetaField(1, V.UINT32),
        MetaField(["linear", "none"], V.ARRAY, V.STRING),
        MetaField(np.ones(2, dtype=np.uint8), V.ARRAY, V.UINT8),
    ],
}


@pytest.mark.parametrize(
    ("key", "bad_field"),
    [(k, f) for k, fs in WRONG_TYPES.items() for f in fs],
    ids=[
        f"{k}-{f.type.name}{'-' + f.sub_type.name if f.sub_type else ''}"
        for k, fs in WRONG_TYPES.items()
        for f in fs
    ],
)
def test_wrongly_typed_metadata(tmp_path: Path, key: str, bad_field: MetaField) -> None:
    data = gguf_bytes(mini_kvs({key: bad_field}), mini_tensors())
    bad(tmp_path, data, repr(key), "is not")


def test_tokens_that_are_not_a_list(tmp_path: Path) -> None:
    kvs = mini_kvs({"llama.vocab_size": None, "tokenizer.ggml.tokens": MetaField(16, V.UINT32)})
    bad(tmp_path, gguf_bytes(kvs, mini_tensors()), "'tokenizer.ggml.tokens'", "is not a list")


NOT_POSITIVE = [
    ("llama.block_count", MetaField(0, V.UINT32)),
    ("llama.block_count", MetaField(-1, V.INT32)),
    ("llama.embedding_length", MetaField(0, V.UINT32)),
    ("llama.feed_forward_length", MetaField(-32, V.INT64)),
    ("llama.attention.head_count", MetaField(0, V.UINT32)),
    ("llama.attention.head_count", MetaField(-2, V.INT32)),
    ("llama.attention.head_count_kv", MetaField(0, V.UINT32)),
    ("llama.attention.key_length", MetaField(0, V.UINT32)),
    ("llama.context_length", MetaField(-1, V.INT32)),
    ("llama.vocab_size", MetaField(0, V.UINT32)),
    ("llama.vocab_size", MetaField(-16, V.INT32)),
    ("llama.rope.dimension_count", MetaField(0, V.UINT16)),
    ("llama.rope.freq_base", MetaField(0.0, V.FLOAT32)),
    ("llama.rope.freq_base", MetaField(-1e4, V.FLOAT32)),
    ("llama.rope.freq_base", MetaField(math.nan, V.FLOAT32)),
    ("llama.rope.freq_base", MetaField(math.inf, V.FLOAT64)),
    ("llama.attention.layer_norm_rms_epsilon", MetaField(0.0, V.FLOAT32)),
    ("llama.attention.layer_norm_rms_epsilon", MetaField(-1e-6, V.FLOAT32)),
]


@pytest.mark.parametrize(("key", "bad_field"), NOT_POSITIVE, ids=[f"{k}={f.value}" for k, f in NOT_POSITIVE])
def test_zero_negative_or_not_finite_values(tmp_path: Path, key: str, bad_field: MetaField) -> None:
    data = gguf_bytes(mini_kvs({key: bad_field}), mini_tensors())
    bad(tmp_path, data, repr(key), f"{bad_field.value!r}" if bad_field.type != V.FLOAT32 else "")


@pytest.mark.parametrize("n", [2, 2**40, 2**64 - 1])
def test_more_blocks_than_tensors_fails_fast(tmp_path: Path, n: int) -> None:
    kvs = mini_kvs({"llama.block_count": MetaField(n, V.UINT64)})
    n_tensors = len(mini_tensors())
    if n <= n_tensors:
        bad(tmp_path, gguf_bytes(kvs, mini_tensors()), "missing tensor 'blk.1.attn_norm.weight'")
    else:
        bad(tmp_path, gguf_bytes(kvs, mini_tensors()), "'llama.block_count'", str(n), f"{n_tensors} tensors")


@pytest.mark.parametrize(
    ("key", "n"),
    [("llama.embedding_length", 2**40), ("llama.attention.head_count", 2**63), ("llama.vocab_size", 2**50)],
)
def test_absurd_sizes_fail_fast_on_the_first_tensor(tmp_path: Path, key: str, n: int) -> None:
    bad(
        tmp_path,
        gguf_bytes(mini_kvs({key: MetaField(n, V.UINT64)}), mini_tensors()),
        "tensor",
        "metadata implies",
    )


def test_head_count_not_a_multiple_of_kv_heads(tmp_path: Path) -> None:
    kvs = mini_kvs({"llama.attention.head_count_kv": MetaField(3, V.UINT32)})
    bad(
        tmp_path,
        gguf_bytes(kvs, mini_tensors()),
        "'llama.attention.head_count': 2 is not a multiple of 'llama.attention.head_count_kv' 3",
    )


def test_width_not_a_multiple_of_the_head_count(tmp_path: Path) -> None:
    kvs = mini_kvs({"llama.attention.head_count": MetaField(3, V.UINT32), "llama.attention.key_length": None})
    bad(
        tmp_path,
        gguf_bytes(kvs, mini_tensors()),
        "'llama.embedding_length': 16 is not a multiple of 'llama.attention.head_count' 3",
    )


# -- tensors against the config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ne"),
    [
        ("blk.0.attn_q.weight", (16, 8)),
        ("blk.0.attn_q.weight", (8, 16)),
        ("token_embd.weight", (16, 17)),
        ("blk.0.attn_norm.weight", (16, 1)),
        ("blk.0.ffn_down.weight", (16, 32)),
        ("output_norm.weight", (17,)),
    ],
)
def test_tensor_shape_not_matching_the_config(tmp_path: Path, name: str, ne: tuple[int, ...]) -> None:
    want = next(s.ne for s in expected_tensors(MINI_CONFIG) if s.name == name)
    tensors = with_tensor(mini_tensors(), name, ne=ne)
    bad(tmp_path, gguf_bytes(mini_kvs(), tensors), repr(name), f"shape {list(ne)}", f"implies {list(want)}")


def test_config_not_matching_the_tensors(tmp_path: Path) -> None:
    kvs = mini_kvs({"llama.vocab_size": MetaField(32000, V.UINT32)})
    bad(tmp_path, gguf_bytes(kvs, mini_tensors()), "'token_embd.weight'", "[16, 16]", "[16, 32000]")


def test_missing_tensor(tmp_path: Path) -> None:
    tensors = [t for t in mini_tensors() if t.name != "blk.0.ffn_gate.weight"]
    bad(tmp_path, gguf_bytes(mini_kvs(), tensors), "missing tensor 'blk.0.ffn_gate.weight'", "llama")


# -- the command line ----------------------------------------------------------------------------

CLI_CASES = {
    "bad magic": mini_bytes(magic=b"GGML"),
    "version": mini_bytes(version=4),
    "truncated": mini_bytes()[:300],
    "tensor count": mini_bytes(n_tensors=2**62),
    "empty": b"",
}


@pytest.mark.parametrize("case", [*CLI_CASES, "missing", "directory"])
def test_cli_info_prints_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    path = tmp_path / "bad.gguf"
    if case in CLI_CASES:
        path.write_bytes(CLI_CASES[case])
    elif case == "directory":
        path.mkdir()
    assert main(["info", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"edgelm: error: {path}: "), err


def test_cli_info_in_a_process_exits_1_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(mini_bytes()[:300])
    r = subprocess.run(
        [sys.executable, "-m", "edgelm.cli.main", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""
    assert r.stderr.startswith(f"edgelm: error: {path}: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
