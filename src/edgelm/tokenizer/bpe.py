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

from tokenizers import Regex, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from edgelm.tokenizer.pretokenize import PreTokenizerSpec, translate_regex

__all__ = ["build_bpe", "byte_decoder", "byte_encoder", "unicode_vocab"]

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
    steps = [pre_tokenizers.Split(Regex(translate_regex(expr)), behavior="isolated") for expr in pre.regexes]
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    return tokenizer
