"""The native byte-level BPE against a plain Python reference, and against the `tokenizers` library."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import vocab_path
from edgelm.gguf.reader import GGUFFile
from edgelm.tokenizer import Tokenizer
from edgelm.tokenizer.bpe import BPEEncoder, build_bpe
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
