"""Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) on the `tokenizers` library.

The library runs the whole pipeline in native code: the pre-tokenizer's regex stages (as `Split`
steps with the expressions of `pretokenize`), the GPT-2 byte-to-character mapping and merges by
rank. llama.cpp merges the same way (lowest rank first, leftmost on ties), so a word's tokens agree.
The library needs every merge's parts and result to be tokens; a file with merges that are not is
used without them (llama.cpp would still apply them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from itertools import repeat
from operator import itemgetter
from typing import Final

import numpy as np
from tokenizers import Regex, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from edgelm.gguf.string_array import StringArray
from edgelm.tokenizer.pretokenize import PreTokenizerSpec, translate_regex

__all__ = ["BPEEncoder", "build_bpe", "byte_decoder", "byte_encoder", "unicode_vocab"]

logger = logging.getLogger(__name__)

# The word cache of the BPE model: repeated words are not merged again.
_BPE_CACHE_WORDS: Final = 100_000


@cache
def byte_encoder() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


@cache
def byte_decoder() -> dict[str, int]:
    """The inverse of `byte_encoder`."""
    return {c: b for b, c in byte_encoder().items()}


def unicode_vocab(tokens: Sequence[str]) -> dict[str, int]:
    """Text → id of the tokens that are valid UTF-8 (the library takes only valid text).

    No text can produce another token anyway: encoding replaces lone surrogates first.
    """
    texts = list(tokens)
    try:
        "".join(texts).encode("utf-8")
        return dict(zip(texts, range(len(texts)), strict=True))
    except UnicodeEncodeError:
        pass
    vocab = {}
    for tid, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            continue
        vocab[text] = tid
    return vocab


_LEFT_RIGHT: Final = itemgetter(0, 2)


class _MergePairs(Sequence[tuple[str, str]]):
    """The merges as (left, right) pairs, split at the first space, made one at a time.

    The library copies the pairs into its own memory while iterating, so a 150k-merge vocab never
    holds a Python list of pair tuples (~20 MB at its peak).
    """

    def __init__(self, merges: Sequence[str]) -> None:
        self._merges = merges

    def __len__(self) -> int:
        return len(self._merges)

    def __getitem__(self, index):  # type: ignore[no-untyped-def,override]
        if isinstance(index, slice):
            return [_LEFT_RIGHT(m.partition(" ")) for m in self._merges[index]]
        return _LEFT_RIGHT(self._merges[index].partition(" "))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return map(_LEFT_RIGHT, map(str.partition, self._merges, repeat(" ")))


def _split_merges(merges: Sequence[str], vocab: Mapping[str, int]) -> list[tuple[str, str]]:
    """Merges as pairs, keeping only those whose parts and result are tokens (the library needs that)."""
    pairs = []
    n_dropped = 0
    for merge in merges:
        pos = merge.find(" ", 1)
        if pos < 0:
            n_dropped += 1
            continue
        left, right = merge[:pos], merge[pos + 1 :]
        if left in vocab and right in vocab and left + right in vocab:
            pairs.append((left, right))
        else:
            n_dropped += 1
    if n_dropped:
        logger.warning("ignoring %d BPE merges whose parts or result are not tokens", n_dropped)
    return pairs


def build_bpe(tokens: Sequence[str], merges: Sequence[str], pre: PreTokenizerSpec) -> HFTokenizer:
    """A `tokenizers` tokenizer that turns one raw-text fragment into token ids as llama.cpp does.

    The library copies the vocab and merges into its own memory: the Python dict built here for it
    is dropped on return.
    """
    hf_vocab = unicode_vocab(tokens)
    try:
        model = models.BPE(
            hf_vocab, _MergePairs(merges), cache_capacity=_BPE_CACHE_WORDS, ignore_merges=pre.ignore_merges
        )
    except BaseException as e:
        # Checking every merge up front costs more than building; the library rejects bad ones
        # itself (a merge whose result is not a token makes it panic, which is no `Exception`).
        if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
            raise
        model = models.BPE(
            hf_vocab,
            _split_merges(merges, hf_vocab),
            cache_capacity=_BPE_CACHE_WORDS,
            ignore_merges=pre.ignore_merges,
        )
    tokenizer = HFTokenizer(model)
    tokenizer.pre_tokenizer = _pre_tokenizer(pre, byte_level=True)
    return tokenizer


class BPEEncoder:
    """Byte-level BPE with the merges in edgelm's native code: ~16 bytes a merge.

    The `tokenizers` library splits text with the pre-tokenizer's regexes (a few KB); the merges run
    over token ids on each piece's UTF-8 bytes (`edgelm._native.BPE`). A 150k vocab takes ~6 MB
    here where the library's BPE model takes ~35 MB (two string-keyed maps and the merge map).
    The id tables come from the token and merge strings where a file holds them, read in native
    code (`_native.bpe_tables`): no string is decoded.
    """

    def __init__(self, tokens: Sequence[str], merges: Sequence[str], pre: PreTokenizerSpec) -> None:
        from edgelm import _native

        tables = _native_tables(tokens, merges, pre.ignore_merges)
        if tables is None:
            tables = _python_tables(tokens, merges, pre.ignore_merges)
        left, right, result, byte_ids, raw, offsets, n_dropped = tables
        if n_dropped:
            logger.warning("ignoring %d BPE merges whose parts or result are not tokens", n_dropped)
        if pre.ignore_merges:
            self._bpe = _native.BPE(left, right, result, byte_ids, raw, offsets, True)
        else:
            self._bpe = _native.BPE(left, right, result, byte_ids)
        self._split = _pre_tokenizer(pre, byte_level=False).pre_tokenize_str

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        split, encode = self._split, self._bpe.encode
        return [encode(split(text)) for text in texts]  # (piece, offsets) pairs go straight in


# (left, right, result, byte_ids, raw token bytes, their offsets, merges dropped): what `_native.BPE` takes.
_Tables = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, int]


def _native_tables(tokens: Sequence[str], merges: Sequence[str], raw: bool) -> _Tables | None:
    """The tables read in native code from the strings' bytes; None where bytes would not compare as
    the strings do (a list with lone surrogates)."""
    from edgelm import _native

    packed_tokens, packed_merges = _packed(tokens), _packed(merges)
    if packed_tokens is None or packed_merges is None:
        return None
    left, right, result, byte_ids, raw_bytes, offsets, n_dropped = _native.bpe_tables(
        *packed_tokens, *packed_merges, raw
    )
    i32 = np.int32
    return (
        np.frombuffer(left, i32),
        np.frombuffer(right, i32),
        np.frombuffer(result, i32),
        np.frombuffer(byte_ids, i32),
        None if raw_bytes is None else np.frombuffer(raw_bytes, np.uint8),
        None if offsets is None else np.frombuffer(offsets, np.int64),
        n_dropped,
    )


def _packed(strings: Sequence[str]) -> tuple[memoryview | bytes, np.ndarray, np.ndarray] | None:
    """`strings` as one buffer of their bytes and each one's int64 start and length in it.

    Strings read from a file are their stored bytes (decoding them maps distinct bytes to distinct
    strings, one character per byte that is not UTF-8); other strings are their UTF-8, which only
    valid Unicode has: None for strings with lone surrogates.
    """
    if isinstance(strings, StringArray):
        buf, starts, lengths = strings.spans()
        return buf, np.ascontiguousarray(starts, np.int64), np.ascontiguousarray(lengths, np.int64)
    try:
        encoded = [s.encode("utf-8") for s in strings]
    except UnicodeEncodeError:
        return None
    lengths = np.fromiter(map(len, encoded), np.int64, count=len(encoded))
    starts = np.zeros_like(lengths)
    np.cumsum(lengths[:-1], out=starts[1:])
    return b"".join(encoded), starts, lengths


def _python_tables(tokens: Sequence[str], merges: Sequence[str], raw: bool) -> _Tables:
    texts = list(tokens)
    ids = dict(zip(texts, range(len(texts)), strict=True))
    left, right, result, n_dropped = _merge_ids(merges, ids)
    encoder = byte_encoder()
    byte_ids = np.array([ids.get(encoder[b], -1) for b in range(256)], dtype=np.int32)
    raw_bytes, offsets = _raw_token_bytes(texts) if raw else (None, None)
    return left, right, result, byte_ids, raw_bytes, offsets, n_dropped


def _merge_ids(
    merges: Sequence[str], ids: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(left, right, result) ids of each merge, best first, and how many merges were dropped for not
    being three tokens."""
    left: list[int] = []
    right: list[int] = []
    result: list[int] = []
    get = ids.get
    n_dropped = 0
    for merge in merges:
        pos = merge.find(" ", 1)
        a, b = merge[:pos], merge[pos + 1 :]
        la, rb, res = get(a), get(b), get(a + b)
        if pos < 0 or la is None or rb is None or res is None:
            n_dropped += 1
            continue
        left.append(la)
        right.append(rb)
        result.append(res)
    return np.array(left, np.int32), np.array(right, np.int32), np.array(result, np.int32), n_dropped


def _raw_token_bytes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The bytes each token stands for (GPT-2's byte alphabet undone), packed, and their offsets.

    A token with a character outside the alphabet gets no bytes: no byte-level word can equal it.
    """
    lut = np.full(_ALPHABET_END, -1, np.int16)
    for b, ch in byte_encoder().items():
        lut[ord(ch)] = b
    cps = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), np.uint32)
    values = np.where(cps < _ALPHABET_END, lut[np.minimum(cps, _ALPHABET_END - 1)], -1)
    lengths = np.fromiter(map(len, texts), np.int64, count=len(texts))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    bad = np.zeros(len(texts), np.int64)
    nonempty = lengths > 0
    bad[nonempty] = np.add.reduceat((values < 0).astype(np.int64), starts[nonempty])
    keep = np.repeat(bad == 0, lengths)
    raw = values[keep].astype(np.uint8)
    offsets = np.concatenate([[0], np.cumsum(np.where(bad == 0, lengths, 0))]).astype(np.int64)
    return raw, offsets


# One past the last character of GPT-2's byte alphabet (U+0100..U+0143 stand for unprintable bytes).
_ALPHABET_END: Final = 0x144


def _pre_tokenizer(pre: PreTokenizerSpec, byte_level: bool) -> pre_tokenizers.PreTokenizer:
    steps = [pre_tokenizers.Split(Regex(translate_regex(expr)), behavior="isolated") for expr in pre.regexes]
    if byte_level:
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    return pre_tokenizers.Sequence(steps)
