"""SentencePiece BPE (`tokenizer.ggml.model = "llama"`) on the `tokenizers` library.

llama.cpp's SPM tokenizer starts from the UTF-8 characters of the text and repeatedly joins the
adjacent pair whose concatenation is a token with the highest score (leftmost on ties); characters
left that are not tokens become `<0xXX>` byte tokens. That is BPE whose merges are every pair
`(a, b)` of tokens with `a + b` a token, ranked by the score of `a + b`, with byte fallback, which
is how the `tokenizers` model is built here.

Ranks are unique, so pairs of equal score are ordered statically (by the id of the token they make,
then the shorter left part first) where llama.cpp takes the leftmost in the text; the two differ
only if such pairs overlap in a text, and no difference shows on llama.cpp's test vectors, long
runs of spaces (whose tokens share one score in Llama's vocab) or random text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from edgelm.tokenizer.bpe import unicode_vocab

__all__ = ["SPACE", "build_spm", "spm_merges"]

SPACE = "\u2581"  # "▁", how SentencePiece writes a space


def spm_merges(tokens: Sequence[str], vocab: Mapping[str, int], scores: np.ndarray) -> list[tuple[str, str]]:
    """Every pair of tokens that concatenates to a token, best (highest score of the result) first."""
    found: list[tuple[float, int, int, str, str]] = []
    append = found.append
    get = vocab.get
    for tid, text in enumerate(tokens):
        n = len(text)
        if n < 2:
            continue
        for i in range(1, n):
            left = text[:i]
            if left in vocab:
                right = text[i:]
                if get(right) is not None:
                    append((-float(scores[tid]), tid, i, left, right))
    found.sort()
    return [(left, right) for _, _, _, left, right in found]


def build_spm(tokens: Sequence[str], scores: np.ndarray | None) -> HFTokenizer:
    """A `tokenizers` tokenizer for one whitespace-escaped text fragment."""
    if scores is None:
        scores = np.zeros(len(tokens), dtype=np.float32)
    texts = list(tokens)
    hf_vocab = unicode_vocab(texts)
    merges = spm_merges(texts, hf_vocab, scores)
    model = models.BPE(hf_vocab, merges, byte_fallback=True, cache_capacity=0)
    return HFTokenizer(model)
