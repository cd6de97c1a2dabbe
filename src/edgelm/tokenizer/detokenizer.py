"""Token ids back to text: each token's bytes, llama.cpp's detokenize rules, and a streaming decoder.

A token's bytes ("piece") follow llama.cpp's `token_to_piece`: control and unknown tokens are empty
unless special tokens are rendered, user-defined ones are their text, normal ones are decoded
(GPT-2 byte mapping for BPE, "▁" to space for SPM), byte tokens `<0xXX>` are that byte.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

from edgelm.tokenizer.bpe import byte_decoder
from edgelm.tokenizer.spm import SPACE
from edgelm.tokenizer.vocab import TokenAttr, Vocab, VocabType

if TYPE_CHECKING:
    from edgelm.tokenizer.tokenizer import Tokenizer

__all__ = ["Pieces", "StreamingDetokenizer", "clean_spaces"]

_HIDDEN: Final = TokenAttr.UNKNOWN | TokenAttr.CONTROL  # empty unless special tokens are rendered
_RAW: Final = _HIDDEN | TokenAttr.USER_DEFINED  # rendered as their text


def _text_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _hex_byte(text: str) -> int:
    """The byte of a `<0xXX>` token (what C's strtol makes of the two characters: 0 if not hex)."""
    try:
        return int(text[3:5], 16) & 0xFF
    except ValueError:
        return 0


def _codepoints(raw: bytes) -> list[int]:
    """Code points as llama.cpp's lenient UTF-8 reader sees them (a bad byte is U+FFFD, no other checks)."""
    cps = []
    i, n = 0, len(raw)
    while i < n:
        b0 = raw[i]
        if b0 < 0x80:
            cps.append(b0)
            i += 1
            continue
        length = 2 if b0 & 0xE0 == 0xC0 else 3 if b0 & 0xF0 == 0xE0 else 4 if b0 & 0xF8 == 0xF0 else 0
        tail = raw[i + 1 : i + length]
        if length == 0 or len(tail) < length - 1 or any(b & 0xC0 != 0x80 for b in tail):
            cps.append(0xFFFD)
            i += 1
            continue
        cp = b0 & (0x7F >> length)
        for b in tail:
            cp = (cp << 6) | (b & 0x3F)
        cps.append(cp)
        i += length
    return cps


def _decode_byte_level(text: str) -> bytes:
    """The bytes a byte-level BPE token stands for (llama.cpp's `llama_decode_text`)."""
    table = byte_decoder()
    try:
        return bytes(table[c] for c in text)
    except KeyError:
        pass
    # Characters outside the byte alphabet are spelled out, with the whole token, as llama.cpp does.
    raw = _text_bytes(text)
    out = bytearray()
    for cp in _codepoints(raw):
        ch = chr(min(cp, 0x10FFFF))
        b = table.get(ch)
        if b is not None:
            out.append(b)
        else:
            out += b"[UNK_BYTE_0x" + ch.encode("utf-8", "surrogatepass").hex().encode() + raw + b"]"
    return bytes(out)


class Pieces:
    """The bytes of every token, computed on first use."""

    def __init__(self, vocab: Vocab) -> None:
        self._vocab = vocab
        self._cache: list[bytes | None] = [None] * vocab.n_tokens
        self._hidden = (vocab.attrs & _HIDDEN) != 0

    def __len__(self) -> int:
        return len(self._cache)

    def _compute(self, token_id: int) -> bytes:
        vocab = self._vocab
        text = vocab.tokens[token_id]
        attr = int(vocab.attrs[token_id])
        if attr & _RAW:
            return _text_bytes(text)
        if attr & TokenAttr.NORMAL:
            if vocab.type is VocabType.SPM:
                return _text_bytes(text.replace(SPACE, " "))
            return _decode_byte_level(text)
        if attr & TokenAttr.BYTE:
            return bytes((_hex_byte(text),))
        return b""  # unused and undefined tokens

    def piece(self, token_id: int, special: bool = False) -> bytes:
        """The bytes of `token_id`; control and unknown tokens are empty unless `special`."""
        if not special and self._hidden[token_id]:
            return b""
        piece = self._cache[token_id]
        if piece is None:
            piece = self._cache[token_id] = self._compute(token_id)
        return piece

    def join(self, ids: Sequence[int], special: bool = False, lstrip_first: bool = False) -> bytes:
        """The pieces of `ids` concatenated; `lstrip_first` drops one leading space of the first."""
        cache, hidden, compute = self._cache, self._hidden, self._compute
        parts = []
        for tid in ids:
            if not special and hidden[tid]:
                parts.append(b"")
                continue
            piece = cache[tid]
            if piece is None:
                piece = cache[tid] = compute(tid)
            parts.append(piece)
        if lstrip_first and parts and parts[0][:1] == b" ":
            parts[0] = parts[0][1:]
        return b"".join(parts)


# llama.cpp's clean-up of decoded text (`clean_up_tokenization_spaces`), as substitutions.
_SPACE_BEFORE_PUNCT: Final = re.compile(rb" (?=[?!.,])")
_SPACED_APOSTROPHE: Final = re.compile(rb" ' ")
_SPACE_BEFORE_CONTRACTION: Final = re.compile(rb" (?='(?:[sm]|re|ve))")


def clean_spaces(text: bytes) -> bytes:
    """Remove spaces before `?!.,`, around a lone `'` and before `'s 'm 're 've`."""
    text = _SPACE_BEFORE_PUNCT.sub(b"", text)
    if b" '" in text:
        text = _SPACED_APOSTROPHE.sub(b"'", text)
        text = _SPACE_BEFORE_CONTRACTION.sub(b"", text)
    return text


def detokenize(vocab: Vocab, pieces: Pieces, ids: Sequence[int], special: bool = False) -> bytes:
    """llama.cpp's `llama_detokenize` (not removing BOS/EOS): the bytes `ids` stand for."""
    # A leading space the tokenizer added is removed again, from the first token only.
    text = pieces.join(ids, special=special, lstrip_first=vocab.add_space_prefix)
    if vocab.clean_spaces:
        text = clean_spaces(text)
    return text


class StreamingDetokenizer:
    """Turns token ids into text as they arrive, never splitting a UTF-8 character.

    Each token's piece is appended verbatim (no leading-space removal, no clean-up), as a
    generation loop prints them; bytes that can never form a valid character come out as U+FFFD.

    Usage::

        stream = StreamingDetokenizer(tokenizer)
        for tid in generated_ids:
            print(stream.add(tid), end="", flush=True)
        print(stream.flush())
    """

    def __init__(self, tokenizer: Tokenizer, special: bool = False) -> None:
        self._tokenizer = tokenizer
        self._special = special
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []

    def add(self, token_id: int) -> str:
        """Feed one token; return the text it completes (maybe empty)."""
        piece = self._tokenizer.token_to_piece(token_id, special=self._special)
        text = self._decoder.decode(piece)
        if text:
            self._parts.append(text)
        return text

    def add_many(self, token_ids: Iterable[int]) -> str:
        """Feed several tokens; return the text they complete."""
        return "".join([self.add(t) for t in token_ids])

    def flush(self) -> str:
        """End of stream: whatever incomplete character is left, as U+FFFD."""
        text = self._decoder.decode(b"", final=True)
        if text:
            self._parts.append(text)
        return text

    @property
    def text(self) -> str:
        """All text emitted so far."""
        return "".join(self._parts)

    def reset(self) -> None:
        """Start a new stream."""
        self._decoder.reset()
        self._parts.clear()
