"""What keeps a loaded model small: lazy string arrays, the token index, KV pages, FFN blocks."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

import edgelm
from conftest import vocab_path
from edgelm.bench.speed import kv_cache_bytes, rss_limit_mb
from edgelm.gguf.constants import TYPE_SIZES, GGMLType, GGUFValueType
from edgelm.gguf.reader import GGUFFile
from edgelm.gguf.string_array import StringArray
from edgelm.kernels.ops import REFERENCE
from edgelm.models.layers import (
    FFN_BLOCK_BYTES,
    FFN_BLOCK_MAX_ROWS,
    FFN_BLOCK_MIN_ROWS,
    FFNWeights,
    feed_forward,
    ffn_block_rows,
)
from edgelm.runtime.kv_cache import reserve
from edgelm.tokenizer.token_index import TokenIndex
from edgelm.weights.qtensor import QTensor
from edgelm.weights.quantize import quantize

# -- the format's numbers, against the `gguf` package ---------------------------------------------


def test_enums_and_type_sizes_match_the_gguf_package() -> None:
    assert [(t.name, int(t)) for t in GGMLType] == [(t.name, int(t)) for t in gguf.GGMLQuantizationType]
    assert [(t.name, int(t)) for t in GGUFValueType] == [(t.name, int(t)) for t in gguf.GGUFValueType]
    ours = {int(t): size for t, size in TYPE_SIZES.items()}
    assert ours == {int(t): tuple(size) for t, size in gguf.GGML_QUANT_SIZES.items()}


# -- string arrays ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_vocab() -> GGUFFile:
    path = vocab_path("qwen2")
    if path is None:
        pytest.skip("no qwen2 vocab file")
    return GGUFFile.open(path)


def test_string_array_reads_what_the_reference_reader_reads(qwen_vocab: GGUFFile) -> None:
    tokens = qwen_vocab.get("tokenizer.ggml.tokens")
    assert isinstance(tokens, StringArray)
    ref = gguf.GGUFReader(qwen_vocab.path).fields["tokenizer.ggml.tokens"]
    ref_tokens = [ref.contents(i) for i in range(0, len(ref.data), 997)]
    assert [tokens[i] for i in range(0, len(tokens), 997)] == ref_tokens
    assert len(tokens) == len(ref.data)
    n = len(tokens)
    assert tokens[-1] == tokens[n - 1] and tokens[-n] == tokens[0]
    assert tokens[5:9] == [tokens[i] for i in range(5, 9)]
    assert tokens.raw(7) == tokens[7].encode("utf-8", "surrogateescape")
    assert list(tokens)[100:103] == tokens[100:103]
    with pytest.raises(IndexError):
        tokens[n]
    with pytest.raises(IndexError):
        tokens[-n - 1]


def test_string_array_keeps_bytes_that_are_not_utf8() -> None:
    buf = b"ab\xffcd"
    arr = StringArray(memoryview(buf), np.array([0, 2, 3]), np.array([2, 1, 2]))
    assert arr == ["ab", "\udcff", "cd"]
    assert arr.raw(1) == b"\xff"
    assert arr != ["ab", "x", "cd"] and arr != ["ab"]
    assert arr.nbytes == 5


# -- the token index -------------------------------------------------------------------------------


def test_token_index_agrees_with_a_dict(qwen_vocab: GGUFFile) -> None:
    tokens = qwen_vocab.get("tokenizer.ggml.tokens")
    index = TokenIndex(tokens)
    expected = {t: i for i, t in enumerate(tokens)}
    rng = np.random.default_rng(0)
    for tid in rng.integers(0, len(tokens), 2000).tolist():
        assert index[tokens[tid]] == expected[tokens[tid]] == tid
    for text in ("not-a-token-\u2603", "", "Ġthe" * 9):
        assert text not in index and index.get(text) is None and index.get(text, -1) == -1
    assert 5 not in index  # not a string
    assert index.first_duplicate() is None
    assert len(index) == len(tokens)


def test_token_index_finds_duplicates_and_returns_the_first_id() -> None:
    tokens = ["a", "b", "c", "b", "d"]
    index = TokenIndex(tokens)
    assert index.first_duplicate() == "b"
    assert index["b"] == 1


class _Colliding(str):
    """Strings that all hash alike: the index must still tell them apart."""

    def __hash__(self) -> int:
        return 42


def test_token_index_tells_colliding_hashes_apart() -> None:
    tokens = [_Colliding(t) for t in ("x", "y", "z", "y")]
    index = TokenIndex(tokens)
    assert index[_Colliding("z")] == 2 and index.get(_Colliding("w")) is None
    assert index.first_duplicate() == "y"
    assert TokenIndex(tokens[:3]).first_duplicate() is None


def _stored(items: list[bytes]) -> StringArray:
    lengths = np.array([len(b) for b in items], np.int64)
    return StringArray(memoryview(b"".join(items)), np.cumsum(lengths) - lengths, lengths)


def test_stored_token_index_agrees_with_a_dict(qwen_vocab: GGUFFile) -> None:
    tokens = qwen_vocab.get("tokenizer.ggml.tokens")
    index = TokenIndex.of_stored(tokens)
    if index is None:
        pytest.skip("built without the extension")
    expected = {t: i for i, t in enumerate(tokens)}
    rng = np.random.default_rng(1)
    for tid in rng.integers(0, len(tokens), 2000).tolist():
        assert index[tokens[tid]] == expected[tokens[tid]] == tid
    for text in ("not-a-token-\u2603", "", "Ġthe" * 9, "\ud800", "\udcc4\udca0"):
        assert text not in index and index.get(text) is None and index.get(text, -1) == -1
    assert 5 not in index and b"the" not in index
    assert index.first_duplicate() is None
    assert len(index) == len(tokens) and next(iter(index)) == tokens[0]


def test_stored_token_index_compares_texts_not_bytes() -> None:
    tokens = _stored([b"a", b"\xc3\xa9", b"\xc3", b"\xa9", b"a", b"\xc3\xa9\xff"])
    index = TokenIndex.of_stored(tokens)
    if index is None:
        pytest.skip("built without the extension")
    assert (index["a"], index["é"], index["\udcc3"], index["\udca9"], index["é\udcff"]) == (0, 1, 2, 3, 5)
    # the bytes of "é", but another text: stored bytes decode one way only
    assert "\udcc3\udca9" not in index and "\ud800" not in index
    assert index.first_duplicate() == "a"


def test_stored_token_index_leaves_empty_and_nul_strings_to_the_caller() -> None:
    pytest.importorskip("edgelm._native")
    assert TokenIndex.of_stored(_stored([b"a", b"b"])) is not None
    assert TokenIndex.of_stored(_stored([b"a", b""])) is None
    assert TokenIndex.of_stored(_stored([b"a", b"b\x00c"])) is None


def test_loaded_model_keeps_no_python_list_of_its_vocab(tiny_model) -> None:
    m = edgelm.load(tiny_model("tiny-qwen2"))
    vocab = m.tokenizer.vocab
    assert isinstance(vocab.tokens, StringArray)
    assert isinstance(vocab.token_to_id, TokenIndex)
    assert vocab.token_to_id._stored is not None or TokenIndex.of_stored(vocab.tokens) is None
    assert isinstance(vocab.merges, StringArray)
    assert m.tokenizer.token_to_id(vocab.tokens[300]) == 300


# -- KV cache and feed-forward blocks --------------------------------------------------------------


def test_reserved_cache_is_zeroed_and_writable() -> None:
    a = reserve((64, 2, 8))
    assert a.dtype == np.float16 and a.shape == (64, 2, 8) and not a.any()
    a[3] = 1.5
    assert a.sum() == 1.5 * 16
    assert reserve((0, 4)).shape == (0, 4)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gemma3"])
def test_kv_cache_bytes_is_what_the_engine_allocates(tiny_model, preset: str) -> None:
    path = tiny_model(preset)
    m = edgelm.load(path, n_ctx=4096)
    allocated = sum(c.k.nbytes + c.v.nbytes for c in m._cache.layers)
    assert kv_cache_bytes(path, 4096) == allocated
    assert rss_limit_mb(path, 4096) == pytest.approx((path.stat().st_size + allocated) * 1.15 / 2**20)


def test_ffn_block_rows_fit_the_budget() -> None:
    for width in (64, 1536, 4864, 8192, 100_000):
        rows = ffn_block_rows(width)
        assert FFN_BLOCK_MIN_ROWS <= rows <= FFN_BLOCK_MAX_ROWS and rows & (rows - 1) == 0
        assert rows == FFN_BLOCK_MIN_ROWS or rows * width * 4 <= FFN_BLOCK_BYTES
        assert rows == FFN_BLOCK_MAX_ROWS or 2 * rows * width * 4 > FFN_BLOCK_BYTES


@pytest.mark.parametrize("gelu", [False, True])
def test_blocked_feed_forward_equals_one_pass(gelu: bool) -> None:
    rng = np.random.default_rng(1)
    dim, width = 64, 8192  # 64-row blocks

    def q8(name: str, shape: tuple[int, int]) -> QTensor:
        packed = quantize(rng.standard_normal(shape).astype(np.float32), GGMLType.Q8_0)
        return QTensor.from_buffer(name, GGMLType.Q8_0, shape, packed)

    w = FFNWeights(q8("gate", (width, dim)), q8("up", (width, dim)), q8("down", (dim, width)))
    x = rng.standard_normal((150, dim)).astype(np.float32)
    assert ffn_block_rows(width) < len(x)
    one_pass = REFERENCE.ffn(x, w.gate, w.up, w.down, gelu)
    np.testing.assert_array_equal(feed_forward(REFERENCE, x, w, gelu), one_pass)
    norm = rng.standard_normal(dim).astype(np.float32)  # the input norm, applied per row
    one_pass = REFERENCE.ffn(x, w.gate, w.up, w.down, gelu, norm, 1e-5)
    np.testing.assert_array_equal(feed_forward(REFERENCE, x, w, gelu, norm, 1e-5), one_pass)


@pytest.mark.parametrize("name", ["silu_mul", "gelu_tanh_mul"])
def test_gate_in_place_equals_a_new_array(name: str) -> None:
    from edgelm.kernels.ops import select_ops

    rng = np.random.default_rng(2)
    g, u = rng.standard_normal((2, 37, 100)).astype(np.float32)
    for ops in {REFERENCE, select_ops()}:
        expected = getattr(ops, name)(g, u)
        g2 = g.copy()
        out = getattr(ops, name)(g2, u, out=g2)
        assert out is g2
        np.testing.assert_array_equal(out, expected)


def _mapped_rss_kb(path) -> int:
    """Resident KB of this process's mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(head[1])
    return total


def test_release_drops_the_pages_and_keeps_the_bytes(tiny_model) -> None:
    path = tiny_model("tiny-llama", "f32")
    f = GGUFFile.open(path)
    name = max(f.tensors, key=lambda n: f.tensors[n].n_bytes)
    data = f.tensor_data(name)
    expected = data.copy()
    data.sum()  # every page resident
    before = _mapped_rss_kb(path)
    f.release(data)
    after = _mapped_rss_kb(path)
    assert before - after >= data.nbytes // 1024 - 8  # all but the partial pages at both ends
    np.testing.assert_array_equal(data, expected)  # read back from the page cache
    with pytest.raises(ValueError, match="not inside"):
        f.release(expected)
    GGUFFile.parse(str(path), path.read_bytes()).release(expected[:10])  # bytes: nothing to drop


def test_a_loaded_model_does_not_hold_its_weights_twice(tiny_model) -> None:
    from edgelm.kernels.packed import PackedTensor

    path = tiny_model("tiny-qwen2", "q8_0")
    m = edgelm.load(path)
    layers = m.transformer.layers
    weights = [
        w
        for layer in layers
        for w in (
            layer.attn.qkv.wq,
            layer.attn.qkv.wk,
            layer.attn.qkv.wv,
            layer.attn.wo,
            *vars(layer.ffn).values(),
        )
    ]
    packed = sum(w.nbytes for w in weights if isinstance(w, PackedTensor))
    if not packed:
        pytest.skip("these kernels read the file's layout")
    # The file's pages under the repacked tensors were given back (a page at each end may stay).
    assert _mapped_rss_kb(path) * 1024 <= path.stat().st_size - packed + 2 * 4096 * len(weights)


def _mapped_pages(view: np.ndarray) -> int:
    """How many pages under `view` this process has mapped (/proc/self/pagemap's present bit)."""
    import os
    import struct

    page = 4096
    start = view.__array_interface__["data"][0] // page
    end = (view.__array_interface__["data"][0] + view.nbytes + page - 1) // page
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        entries = os.pread(fd, (end - start) * 8, start * 8)
    finally:
        os.close(fd)
    return sum(1 for (e,) in struct.iter_unpack("<Q", entries) if e >> 63)


def test_embedding_lookups_map_no_file_pages(tiny_model) -> None:
    m = edgelm.load(tiny_model("tiny-qwen2", "q8_0"))
    t = m.transformer
    embd = t.tok_embd
    head = getattr(t.output, "data", None)
    if head is not None and np.shares_memory(head, embd.data):
        pytest.skip("these kernels read the tied output head in place (no repacking): it maps the table")
    ids = list(range(3, 500, 7))
    m.generate(ids, max_tokens=4, temperature=0.0)
    # The rows were read from the file, not through the mapping: at most the two pages it shares with
    # its neighbours in the file are mapped.
    assert _mapped_pages(embd.data) <= 2
    embd.rows(np.array(ids))  # through the mapping: its pages come in
    assert _mapped_pages(embd.data) > 10


def test_a_file_replaced_while_loading_is_refused(tiny_model, tmp_path, monkeypatch) -> None:
    import shutil

    from edgelm.models.model_file import ModelFile
    from edgelm.models.registry import build_model

    path = tmp_path / "m.gguf"
    shutil.copy(tiny_model("tiny-llama", "q8_0"), path)
    mf = ModelFile.open(path)
    replacement = tmp_path / "other.gguf"
    shutil.copy(tiny_model("tiny-llama", "q8_0", seed=1), replacement)
    replacement.replace(path)  # a new file under the old name: the mapping still holds the old one
    with pytest.raises(edgelm.ModelFileError, match="changed on disk"):
        build_model(mf)


# -- the arena of repacked weights ---------------------------------------------------------------


def _vma_field(address: int, field: str) -> int | None:
    """A field of /proc/self/smaps (THPeligible, AnonHugePages in kB) for the mapping holding
    `address`; None where the kernel does not tell."""
    current = None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                current = lo <= address < hi
            elif current and head == field + ":":
                return int(line.split()[1])
    return None


@pytest.mark.parametrize("huge", [False, True])
def test_the_arena_is_zeroed_writable_memory(monkeypatch, huge: bool) -> None:
    from edgelm.kernels import arena

    monkeypatch.setattr(arena, "HUGE_PAGES", huge)
    n = 3 * arena.HUGE_PAGE_BYTES + 12345  # a part page at the end
    a = arena.anonymous_bytes(n)
    assert a.shape == (n,) and a.dtype == np.uint8 and not a.any()
    a[::4093] = 7
    assert int(a.sum()) == 7 * len(range(0, n, 4093))
    assert arena.anonymous_bytes(0).shape == (0,)


def _huge_pages_here() -> bool:
    import mmap

    return hasattr(mmap, "MADV_HUGEPAGE") and _vma_field(id(0), "THPeligible") is not None


def test_the_arena_takes_base_pages_once_huge_ones_come_slowly(monkeypatch) -> None:
    from edgelm.kernels import arena

    if not _huge_pages_here():
        pytest.skip("no transparent huge pages here")
    monkeypatch.setattr(arena, "SLOW_HUGE_FAULT_S", -1.0)  # every fault counts as slow
    page = arena.HUGE_PAGE_BYTES
    a = arena.anonymous_bytes(8 * page)
    base = a.__array_interface__["data"][0]
    tail = base + (arena.SLOW_HUGE_FAULTS + 1) * page  # past the pages touched before giving up
    assert _vma_field(tail + page, "THPeligible") == 0
    assert not a.any()
    a[:] = 1
    assert int(a.sum()) == a.size


def test_base_pages_become_huge_in_the_background_and_keep_their_bytes(monkeypatch) -> None:
    from edgelm.kernels import arena

    if not _huge_pages_here():
        pytest.skip("no transparent huge pages here")
    monkeypatch.setattr(arena, "SLOW_HUGE_FAULT_S", -1.0)  # base pages after the first three
    page = arena.HUGE_PAGE_BYTES
    a = arena.anonymous_bytes(8 * page)
    a[:] = np.arange(a.size, dtype=np.uint64).astype(np.uint8) ^ np.uint8(0x5A)
    expected = a.copy()
    tail = a.__array_interface__["data"][0] + 6 * page
    before = _vma_field(tail, "AnonHugePages")
    thread = arena.huge_pages_later(a[page:], delay_s=0.0)  # a view, as the model's tensors are
    assert thread is not None
    thread.join(timeout=30)
    assert not thread.is_alive()
    np.testing.assert_array_equal(a, expected)
    after = _vma_field(tail, "AnonHugePages")
    import os

    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if (major, minor) < (6, 1):
        pytest.skip("this kernel does not collapse pages on request (MADV_COLLAPSE, Linux 6.1)")
    assert before == 0  # the tail was on base pages
    assert after is not None and after >= 4 * page // 1024  # and is huge now
    assert arena.huge_pages_later(a[:100]) is None  # less than a huge page: nothing to do


def test_load_work_left_for_later_starts_after_the_first_step(tiny_model, monkeypatch) -> None:
    m = edgelm.load(tiny_model("tiny-qwen2", "q8_0"))
    tf = m.transformer
    calls: list[list] = []
    monkeypatch.setattr(type(tf.ops), "settle", lambda self, weights: calls.append(list(weights)))
    prepared = list(tf.unsettled)
    assert tf.output in prepared and tf.layers[0].ffn.gate in prepared
    cache = tf.new_cache(16)
    tf.forward(np.array([1, 2, 3]), np.arange(3), [cache])
    assert len(calls) == 1
    assert all(a is b for a, b in zip(calls[0], prepared, strict=True))
    tf.forward(np.array([4]), np.array([3]), [cache])
    assert len(calls) == 1 and not tf.unsettled


def test_a_forked_child_leaves_its_parents_pages_shared(monkeypatch) -> None:
    import os

    from edgelm.kernels import arena

    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    monkeypatch.setattr(arena, "SLOW_HUGE_FAULT_S", -1.0)
    a = arena.anonymous_bytes(4 * arena.HUGE_PAGE_BYTES)
    a[:] = 3
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing to collapse (its pages are its parent's, shared)
        code = 0 if arena.huge_pages_later(a) is None else 1
        os.write(w, bytes([code]))
        os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"\x00"
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    thread = arena.huge_pages_later(a, delay_s=0.0)  # the parent made them: it may
    assert thread is not None or not arena.HUGE_PAGES
    if thread is not None:
        thread.join(timeout=30)


def test_huge_pages_can_be_turned_off() -> None:
    import os
    import subprocess
    import sys

    code = "import edgelm.kernels.arena as a; print(a.HUGE_PAGES)"
    env = {**os.environ, "EDGELM_HUGE_PAGES": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_memory_dropped_before_its_huge_pages_is_left_alone() -> None:
    import gc
    import weakref

    from edgelm.kernels import arena

    a = arena.anonymous_bytes(4 * arena.HUGE_PAGE_BYTES)
    gone = weakref.ref(a)
    thread = arena.huge_pages_later(a[1:], delay_s=0.5)
    if thread is None:
        pytest.skip("no huge pages later here")
    del a
    gc.collect()
    assert gone() is None  # the waiting thread does not hold the mapping
    thread.join(timeout=30)
    assert not thread.is_alive()
