"""`Tokenizer`: text to token ids and back, as llama.cpp does for the same GGUF file."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgelm.gguf.reader import GGUFFile
from edgelm.tokenizer.bpe import BPEEncoder, build_bpe
from edgelm.tokenizer.detokenizer import Pieces, StreamingDetokenizer, detokenize
from edgelm.tokenizer.pretokenize import PreTokenizerSpec
from edgelm.tokenizer.spm import SPACE, build_spm
from edgelm.tokenizer.vocab import TokenAttr, Vocab, VocabType

if TYPE_CHECKING:
    from tokenizers import Tokenizer as HFTokenizer

    from edgelm.tokenizer.chat_template import ChatTemplate

__all__ = ["Tokenizer"]

# Special tokens matched in raw text only with `parse_special` (user-defined ones always are).
_PARSED_ON_REQUEST = TokenAttr.CONTROL | TokenAttr.UNKNOWN
_WHITESPACE = frozenset(" \t\n\v\f\r")  # C's isspace, for the strip attributes
_SURROGATE = re.compile("[\ud800-\udfff]")


class Tokenizer:
    """Encodes text to token ids and decodes ids to text for one vocabulary.

    Build it with `Tokenizer.from_gguf(path)` or, from an open file, `Tokenizer.from_metadata(md)`.
    llama.cpp tokenizes UTF-8 bytes; here text is a `str`, tokenized as its UTF-8 encoding. Lone
    surrogates, which have no UTF-8 form, are replaced by U+FFFD first. Decoding turns bytes that
    are not valid UTF-8 (a token sequence may end inside a character) into U+FFFD; `decode_bytes`
    gives the raw bytes.
    """

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._pieces = Pieces(vocab)
        self._encoder: _Encoder
        if vocab.type is VocabType.SPM:
            self._encoder = _LibraryEncoder(build_spm(vocab.tokens, vocab.scores))
        else:
            assert vocab.pre is not None
            self._encoder = _bpe_encoder(vocab.tokens, vocab.merges, vocab.pre)
        attrs = vocab.attrs
        self._special_texts = [(t, vocab.tokens[t], int(attrs[t])) for t in vocab.special_tokens]
        self._chat_template: ChatTemplate | None = None

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """The tokenizer of a GGUF file (a model or a vocab-only file)."""
        gguf = GGUFFile.open(path)
        return cls.from_metadata(gguf.metadata, path=gguf.path)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object], path: str | None = None) -> Tokenizer:
        """The tokenizer described by GGUF metadata; `path` only names the file in errors."""
        return cls(Vocab.from_metadata(metadata, path))

    # -- properties ------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.vocab.n_tokens

    @property
    def bos_id(self) -> int | None:
        return self.vocab.special.bos

    @property
    def eos_id(self) -> int | None:
        return self.vocab.special.eos

    @property
    def eot_id(self) -> int | None:
        return self.vocab.special.eot

    @property
    def pad_id(self) -> int | None:
        return self.vocab.special.pad

    @property
    def unk_id(self) -> int | None:
        return self.vocab.special.unk

    @property
    def eog_ids(self) -> frozenset[int]:
        """Ids that end generation (EOS, EOT and the like)."""
        return self.vocab.eog_ids

    @property
    def add_bos(self) -> bool:
        """Whether `encode(..., add_special=True)` starts with BOS."""
        return self.vocab.add_bos

    @property
    def add_eos(self) -> bool:
        """Whether `encode(..., add_special=True)` ends with EOS."""
        return self.vocab.add_eos

    def is_special(self, token_id: int) -> bool:
        """Whether `token_id` is a control or unknown token (not rendered by `decode` by default)."""
        self._check_id(token_id)
        return bool(self.vocab.attrs[token_id] & (TokenAttr.CONTROL | TokenAttr.UNKNOWN))

    def is_eog(self, token_id: int) -> bool:
        return token_id in self.vocab.eog_ids

    def id_to_token(self, token_id: int) -> str:
        """The token's text as stored in the vocab (e.g. "Ġthe", "▁the", "<|im_end|>")."""
        self._check_id(token_id)
        return self.vocab.tokens[token_id]

    def token_to_id(self, text: str) -> int | None:
        """The id of the token whose stored text is `text`, if any."""
        return self.vocab.token_to_id.get(text)

    # -- encoding --------------------------------------------------------------------------------

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`.

        `add_special` adds BOS/EOS as the vocab asks (`add_bos`, `add_eos`); `parse_special` turns
        control-token texts such as "<|im_start|>" into their ids instead of tokenizing the
        characters. User-defined tokens are always matched.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() takes str, not {type(text).__name__}")
        text = _valid_unicode(text)
        vocab = self.vocab
        out: list[int] = []
        if add_special and vocab.add_bos:
            out.append(self._required(vocab.special.bos, "BOS"))
        self._encode_fragments(self._partition(text, parse_special), out)
        if add_special and vocab.add_eos:
            out.append(self._required(vocab.special.eos, "EOS"))
        return out

    def _encode_fragments(self, fragments: list[str | int], out: list[int]) -> None:
        """Tokenize the raw-text fragments (all in one call) and interleave the special ids."""
        if self.vocab.type is VocabType.SPM:
            texts = self._spm_texts(fragments)
        else:
            texts = [f for f in fragments if isinstance(f, str)]
        encoded = iter(self._encoder.encode_batch(texts) if texts else ())
        for f in fragments:
            if isinstance(f, str):
                out.extend(next(encoded))
            else:
                out.append(f)

    def _spm_texts(self, fragments: list[str | int]) -> list[str]:
        """SPM fragments as SentencePiece sees them: spaces as "▁", a leading one after special tokens."""
        add_space_prefix = self.vocab.add_space_prefix
        texts = []
        prev_special = True  # the first fragment gets the prefix too
        for f in fragments:
            if isinstance(f, str):
                if add_space_prefix and prev_special:
                    f = " " + f
                texts.append(f.replace(" ", SPACE))
                prev_special = False
            else:
                prev_special = True
        return texts

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Split special-token texts out of `text` (llama.cpp's `tokenizer_st_partition`).

        Tokens are taken longest first; each one is cut out of every raw fragment left.
        """
        fragments: list[str | int] = [text] if text else []
        if not fragments:
            return fragments
        for token_id, token_text, attr in self._special_texts:
            if not parse_special and attr & _PARSED_ON_REQUEST:
                continue
            if token_text not in text:
                continue
            lstrip = attr & TokenAttr.LSTRIP
            rstrip = attr & TokenAttr.RSTRIP
            out: list[str | int] = []
            for frag in fragments:
                if not isinstance(frag, str) or token_text not in frag:
                    out.append(frag)
                    continue
                pos = 0
                while True:
                    match = frag.find(token_text, pos)
                    if match < 0:
                        if pos < len(frag):
                            out.append(frag[pos:])
                        break
                    left = frag[pos:match]
                    if lstrip:
                        left = left.rstrip(" \t\n\v\f\r")
                    if left:
                        out.append(left)
                    out.append(token_id)
                    pos = match + len(token_text)
                    if rstrip:
                        while pos < len(frag) and frag[pos] in _WHITESPACE:
                            pos += 1
            fragments = out
        return fragments

    # -- decoding --------------------------------------------------------------------------------

    def decode(self, ids: Sequence[int], special: bool = False) -> str:
        """The text of `ids` (llama.cpp's `llama_detokenize`).

        Control tokens (BOS, EOS, ...) are rendered only with `special=True`. A leading space added
        by SPM tokenization is removed from the first token; BPE vocabs with `clean_spaces` drop
        spaces before punctuation. Bytes that are not valid UTF-8 become U+FFFD.
        """
        ids = self._check_ids(ids)
        return detokenize(self.vocab, self._pieces, ids, special).decode("utf-8", "replace")

    def decode_bytes(self, ids: Sequence[int], special: bool = False) -> bytes:
        """Like `decode`, but the raw bytes (which may end inside a UTF-8 character)."""
        ids = self._check_ids(ids)
        return detokenize(self.vocab, self._pieces, ids, special)

    def token_to_piece(self, token_id: int, special: bool = False) -> bytes:
        """The bytes one token contributes to the text; empty for hidden special tokens."""
        self._check_id(token_id)
        return self._pieces.piece(token_id, special)

    def stream(self, special: bool = False) -> StreamingDetokenizer:
        """A streaming detokenizer for this vocab."""
        return StreamingDetokenizer(self, special=special)

    # -- chat ------------------------------------------------------------------------------------

    @property
    def chat_template(self) -> ChatTemplate:
        """The file's chat template, or the ChatML default when it has none."""
        if self._chat_template is None:
            from edgelm.tokenizer.chat_template import ChatTemplate

            self._chat_template = ChatTemplate.from_tokenizer(self)
        return self._chat_template

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> str:
        """Render `messages` (and `tools`) into a prompt with the model's chat template."""
        return self.chat_template.render(
            messages, add_generation_prompt=add_generation_prompt, tools=tools, **kwargs
        )

    # -- helpers ---------------------------------------------------------------------------------

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.vocab.n_tokens:
            raise ValueError(f"token id {token_id} is out of range [0, {self.vocab.n_tokens})")

    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        """`ids` as a list of ints, all in range."""
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        n = self.vocab.n_tokens
        if ids and not (min(ids) >= 0 and max(ids) < n):
            bad = next(t for t in ids if not 0 <= t < n)
            raise ValueError(f"token id {bad} is out of range [0, {n})")
        return ids

    def _required(self, token_id: int | None, what: str) -> int:
        if token_id is None:
            raise ValueError(f"the vocab asks for {what} but has no {what} token")
        return token_id

    def __repr__(self) -> str:
        kind = self.vocab.type.name
        pre = f", pre={self.vocab.pre.kind!r}" if self.vocab.pre else ""
        return f"Tokenizer({kind}{pre}, {self.vocab.n_tokens} tokens)"


class _Encoder(Protocol):
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """The token ids of each raw-text fragment."""
        ...


class _LibraryEncoder:
    """A `tokenizers` tokenizer as an `_Encoder`."""

    def __init__(self, hf: HFTokenizer) -> None:
        self._hf = hf

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._hf.encode_batch_fast(list(texts), add_special_tokens=False)]


def _bpe_encoder(tokens: Sequence[str], merges: Sequence[str], pre: PreTokenizerSpec) -> _Encoder:
    """The native BPE when the extension is built, else the `tokenizers` library's (more memory)."""
    try:
        return BPEEncoder(tokens, merges, pre)
    except ImportError:
        return _LibraryEncoder(build_bpe(tokens, merges, pre))


def _valid_unicode(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text
