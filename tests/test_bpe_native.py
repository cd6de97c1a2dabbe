"""The native byte-level BPE against a plain Python reference, and against the `tokenizers` library."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest

from conftest import vocab_path
from edgelm.gguf.reader import GGUFFile
from edgelm.gguf.string_array import StringArray
from edgelm.tokenizer import Tokenizer
from edgelm.tokenizer.bpe import BPEEncoder, _native_tables, _python_tables, build_bpe
from edgelm.tokenizer.pretokenize import PRE_TOKENIZERS
from edgelm.tokenizer.vocab import Vocab

native = pytest.importorskip("edgelm._native")


def reference_bpe(
    word: bytes,
    ranks: dict[tuple[int, int], tuple[int, int]],
    byte_ids: list[int],
    words: dict[bytes, int] | None = None,
) -> list[int]:
    """llama.cpp's merge order, the slow way: the lowest-rank pair, leftmost on ties, until none."""
    if words is not None and word in words:
        return [words[word]]
    syms = [byte_ids[b] for b in word]
    while True:
        best = None
        for i in range(len(syms) - 1):
            if syms[i] < 0 or syms[i + 1] < 0:
                continue
            hit = ranks.get((syms[i], syms[i + 1]))
            if hit is not None and (best is None or hit[0] < best[0]):
                best = (hit[0], i, hit[1])
        if best is None:
            return [s for s in syms if s >= 0]
        _, i, result = best
        syms[i : i + 2] = [result]


def random_tables(seed: int, n_merges: int = 300, alphabet: bytes = b"abcdef\x00\xff"):
    rng = random.Random(seed)
    byte_ids = [-1] * 256
    for i, b in enumerate(alphabet[:-1]):  # the last byte of the alphabet has no token
        byte_ids[b] = i
    n_tokens = len(alphabet) - 1
    left, right, result = [], [], []
    for _ in range(n_merges):
        a, b = rng.randrange(n_tokens), rng.randrange(n_tokens)
        if left and rng.random() < 0.05:  # a repeated pair: its first rank counts
            k = rng.randrange(len(left))
            a, b = left[k], right[k]
        left.append(a)
        right.append(b)
        result.append(n_tokens)
        n_tokens += 1
    ranks: dict[tuple[int, int], tuple[int, int]] = {}
    for rank, (a, b, r) in enumerate(zip(left, right, result, strict=True)):
        ranks.setdefault((a, b), (rank, r))
    arrays = [np.array(v, np.int32) for v in (left, right, result)]
    return arrays, np.array(byte_ids, np.int32), ranks, alphabet


@pytest.mark.parametrize("seed", range(5))
def test_native_merges_equal_the_reference(seed: int) -> None:
    (left, right, result), byte_ids, ranks, alphabet = random_tables(seed)
    bpe = native.BPE(left, right, result, byte_ids)
    rng = random.Random(100 + seed)
    words = [bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 60))) for _ in range(300)]
    words += [b"a" * 1000, b"ab" * 700]  # long runs: many merges, many stale queue entries
    for w in words:
        text = w.decode("latin-1")  # one char per byte below 0x80 only: encode bytes via UTF-8 below
        expected = reference_bpe(text.encode("utf-8"), ranks, list(byte_ids))
        assert bpe.encode([text]) == expected, w
    # several words at once, and (piece, offsets) tuples as a pre-tokenizer gives them
    texts = [w.decode("latin-1") for w in words[:50]]
    flat = [t for text in texts for t in reference_bpe(text.encode(), ranks, list(byte_ids))]
    assert bpe.encode(texts) == flat
    assert bpe.encode([(t, (0, 0)) for t in texts]) == flat


def test_whole_words_skip_the_merges() -> None:
    (left, right, result), byte_ids, ranks, _ = random_tables(7)
    n_tokens = int(result.max()) + 1
    rng = random.Random(3)
    raw = [bytes(rng.choice(b"abcdef") for _ in range(rng.randrange(1, 6))) for _ in range(n_tokens)]
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in raw])]).astype(np.int64)
    blob = np.frombuffer(b"".join(raw), np.uint8)
    bpe = native.BPE(left, right, result, byte_ids, blob, offsets, True)
    words = {}
    for tid, r in enumerate(raw):
        words.setdefault(r, tid)  # the first id of a repeated text
    for w in [*raw[:50], b"abcabc", b"fedcba", b"zzz"]:
        text = w.decode()
        assert bpe.encode([text]) == reference_bpe(w, ranks, list(byte_ids), words), w


def test_bad_tables_are_refused() -> None:
    ids = np.zeros(3, np.int32)
    byte_ids = np.full(256, -1, np.int32)
    with pytest.raises(ValueError, match="one length"):
        native.BPE(ids, ids[:2], ids, byte_ids)
    with pytest.raises(ValueError, match="256"):
        native.BPE(ids, ids, ids, byte_ids[:10])
    with pytest.raises(ValueError, match="negative"):
        native.BPE(np.array([-1], np.int32), ids[:1], ids[:1], byte_ids)
    with pytest.raises(TypeError):
        native.BPE(ids.astype(np.int64), ids, ids, byte_ids)
    with pytest.raises(ValueError, match="offsets"):
        native.BPE(ids, ids, ids, byte_ids, np.zeros(4, np.uint8), np.array([0, 9], np.int64), True)
    bpe = native.BPE(ids, ids, ids, byte_ids)
    with pytest.raises(TypeError):
        bpe.encode([b"bytes"])


def _random_text(rng: random.Random, n: int) -> str:
    pieces = [
        "hello", " world", "  ", "\n\n", "\t", "don't", "I'm", "3.14159", "1,000,000", "über", "naïve",
        "нещо", "我想在apple工作", "日本語", "🦙", "🚀✅", "x" * 40, "\u00a0", "\r\n", "'s", "--", "...", "é",
    ]  # fmt: skip
    return "".join(
        rng.choice(pieces) if rng.random() < 0.7 else chr(rng.randrange(32, 0x3000)) for _ in range(n)
    )


@pytest.mark.parametrize("name", ["gpt-2", "llama-bpe", "qwen2"])
def test_native_encoder_equals_the_library(name: str) -> None:
    path = vocab_path(name)
    if path is None:
        pytest.skip(f"no {name} vocab file")
    vocab = Vocab.from_metadata(GGUFFile.open(path).metadata)
    assert vocab.pre is not None
    ours = BPEEncoder(vocab.tokens, vocab.merges, vocab.pre)
    library = build_bpe(vocab.tokens, vocab.merges, vocab.pre)
    rng = random.Random(name)
    texts = [_random_text(rng, rng.randrange(1, 40)) for _ in range(300)]
    expected = [e.ids for e in library.encode_batch_fast(texts, add_special_tokens=False)]
    assert ours.encode_batch(texts) == expected


def test_tokenizer_uses_the_native_encoder() -> None:
    path = vocab_path("qwen2")
    if path is None:
        pytest.skip("no qwen2 vocab file")
    assert isinstance(Tokenizer.from_gguf(path)._encoder, BPEEncoder)


# -- the tables read natively from the vocab's strings -------------------------------------------------


def stored(items: list[bytes]) -> StringArray:
    """Strings as a file holds them: each after its 8-byte length, read back without decoding."""
    buf = b"".join(len(b).to_bytes(8, "little") + b for b in items)
    lengths = np.array([len(b) for b in items], np.int64)
    starts = np.cumsum(lengths + 8) - lengths
    return StringArray(memoryview(buf), starts, lengths)


def assert_tables_agree(tokens: Sequence[str], merges: Sequence[str]) -> int:
    """The native tables equal the Python ones, raw token bytes included; the merges dropped."""
    ours = _native_tables(tokens, merges, True)
    assert ours is not None
    expected = _python_tables(tokens, merges, True)
    names = ("left", "right", "result", "byte_ids", "raw", "offsets")
    for name, a, b in zip(names, ours[:6], expected[:6], strict=True):
        assert a is not None and b is not None
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert ours[6] == expected[6]
    return ours[6]


@pytest.mark.parametrize("name", ["gpt-2", "llama-bpe", "qwen2"])
def test_native_tables_equal_the_python_tables(name: str) -> None:
    path = vocab_path(name)
    if path is None:
        pytest.skip(f"no {name} vocab file")
    md = GGUFFile.open(path).metadata
    tokens, merges = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.merges"]
    assert isinstance(tokens, StringArray) and isinstance(merges, StringArray)
    assert assert_tables_agree(tokens, merges) == 0
    # the same strings as lists, and a few merges that are no tokens' parts
    extra = ["Ġthe Ġthe", "Ġthe nosuchtoken", "nospace", "", " ", "Ġ Ġ Ġ"]
    assert assert_tables_agree(list(tokens[:5000]), [*merges[:3000], *extra]) >= len(extra)


# Duplicates (the last id wins), an empty token, spaces inside tokens and merges, merges with no space
# after the first character, with parts or a result that are not tokens.
HAND_TOKENS = ["a", "b", "ab", "c", "abc", "a b", " ", "é", "x", "é", "ĠA", "Ġ", "A", "", "b c", "bb", "ab"]
HAND_MERGES = [
    "a b", "ab c", "a b c", "x y", "a x", "nospace", " a", "  ", "a ", "é é", "Ġ A", "b b", "ab", "",
    " ", "é x", "a b", "ĠA é",
]  # fmt: skip


def test_native_tables_of_a_hand_made_vocab() -> None:
    n_dropped = assert_tables_agree(HAND_TOKENS, HAND_MERGES)
    assert n_dropped == 11
    encode = [s.encode() for s in HAND_TOKENS], [s.encode() for s in HAND_MERGES]
    assert assert_tables_agree(stored(encode[0]), stored(encode[1])) == n_dropped
    assert assert_tables_agree(stored(encode[0]), HAND_MERGES) == n_dropped
    assert assert_tables_agree(HAND_TOKENS, stored(encode[1])) == n_dropped
    tables = _native_tables(HAND_TOKENS, HAND_MERGES, False)
    assert tables is not None
    left, right, result, byte_ids, *_ = tables
    assert (left[0], right[0], result[0]) == (0, 1, 16)  # "ab" is token 2 and 16: the last id
    assert (byte_ids[ord("a")], byte_ids[ord(" ")], byte_ids[ord("z")]) == (0, 11, -1)  # " " is "Ġ"


def test_native_tables_of_bytes_that_are_not_utf8() -> None:
    """Stored strings decode one character per ill-formed byte: parts that split a character apart do not
    join to the token of that character."""
    tokens = [
        b"\xc3", b"\xa9", b"\xc3\xa9", b"\xe2\x82", b"\xac", b"\xe2\x82\xac", b"\xe2", b"\x82\xac",
        b"\xff", b"a", b"\xffa", b"\xc3\xa9a", b"\xf0\x9f", b"\x98\x80", b"\xf0\x9f\x98\x80", b"\xed",
        b"\xa0\x80", b"\xed\xa0\x80", b"\xc4", b"\xa0", b"\xc4\xa0", b"\xc5\x80", b"\xc2\xa0\xc3",
    ]  # fmt: skip
    merges = [b"a " + t for t in tokens] + [t + b" a" for t in tokens]
    merges += [a + b" " + b for a in tokens for b in tokens]
    assert assert_tables_agree(stored(tokens), stored(merges)) > 0


@pytest.mark.parametrize("seed", range(4))
def test_native_tables_of_random_bytes(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = [bytes([b]) for b in b"ab \xc3\xa9\xe2\x82\xac\xf0\x9f\xff\xed"]  # lead bytes, continuations
    tokens = [b"".join(rng.choices(alphabet, k=rng.randrange(0, 4))) for _ in range(300)]
    merges = [rng.choice(tokens) + b" " + rng.choice(tokens) for _ in range(2000)]
    merges += [b"".join(rng.choices(alphabet, k=rng.randrange(0, 7))) for _ in range(300)]
    assert_tables_agree(stored(tokens), stored(merges))


def test_strings_with_lone_surrogates_take_the_python_path() -> None:
    tokens = ["a", "b", "ab", "\ud800", "a\udcff"]
    assert _native_tables(tokens, ["a b"], False) is None
    assert _native_tables(["a", "b", "ab"], ["a b", "\ud800 b"], False) is None
    encoder = BPEEncoder(tokens, ["a b"], PRE_TOKENIZERS["default"])
    assert encoder.encode_batch(["ab", "ba"]) == [[2], [1, 0]]


def test_bad_string_spans_are_refused() -> None:
    buf, starts, lengths = b"abc", np.array([0, 1], np.int64), np.array([1, 2], np.int64)
    native.bpe_tables(buf, starts, lengths, buf, starts, lengths)
    with pytest.raises(ValueError, match="inside the buffer"):
        native.bpe_tables(buf, starts, lengths + 1, buf, starts, lengths)
    with pytest.raises(ValueError, match="inside the buffer"):
        native.bpe_tables(buf, starts, lengths, buf, starts - 2, lengths)
    with pytest.raises(ValueError, match="differ in length"):
        native.bpe_tables(buf, starts, lengths[:1], buf, starts, lengths)
    with pytest.raises(TypeError):
        native.bpe_tables(buf, starts.astype(np.int32), lengths, buf, starts, lengths)
