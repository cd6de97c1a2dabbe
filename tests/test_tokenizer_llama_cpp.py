"""The tokenizer against llama.cpp itself (through llama-cpp-python) on texts beyond its test vectors."""

from __future__ import annotations

import ctypes
import random
import weakref
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from conftest import vocab_path
from edgelm.gguf.constants import GGUFValueType
from edgelm.gguf.reader import GGUFFile, MetaField
from edgelm.gguf.writer import write_gguf
from edgelm.tokenizer import Tokenizer
from edgelm.tokenizer.pretokenize import PRE_TOKENIZERS

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.llama_cpp

VOCABS = ("gpt-2", "llama-bpe", "llama-spm", "qwen2")


@llama_cpp.llama_log_callback
def _quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    pass


class LlamaCppVocab:
    """llama.cpp's tokenizer of a GGUF file, through the C API."""

    def __init__(self, path: Path) -> None:
        llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        assert self.model, f"llama.cpp cannot load {path}"
        weakref.finalize(self, llama_cpp.llama_model_free, self.model)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)

    def tokenize(self, data: bytes, add_special: bool, parse_special: bool) -> list[int]:
        n = len(data) + 16
        buf = (llama_cpp.llama_token * n)()
        k = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n, add_special, parse_special)
        if k < 0:
            n = -k
            buf = (llama_cpp.llama_token * n)()
            k = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n, add_special, parse_special)
        return list(buf[:k])

    def detokenize(self, ids: list[int], special: bool) -> bytes:
        arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
        size = 64 + 16 * len(ids)
        out = ctypes.create_string_buffer(size)
        k = llama_cpp.llama_detokenize(self.vocab, arr, len(ids), out, size, False, special)
        if k < 0:
            size = -k
            out = ctypes.create_string_buffer(size)
            k = llama_cpp.llama_detokenize(self.vocab, arr, len(ids), out, size, False, special)
        return out.raw[:k]

    def piece(self, token_id: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(512)
        k = llama_cpp.llama_token_to_piece(self.vocab, token_id, buf, 512, 0, special)
        return buf.raw[:k]


@cache
def pair(name: str) -> tuple[Tokenizer, LlamaCppVocab]:
    path = vocab_path(name)
    if path is None:
        pytest.skip(f"vocab {name} not available")
    return Tokenizer.from_gguf(path), LlamaCppVocab(path)


POOLS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " \t\n\r\v\f",
    "'\"!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`",
    "éèàüöäßçñÉÄÖÜ",
    "нещоБългарски",
    "我想在工作天中文字日本語のテキスト한국어",
    "ქართულიעבריתالعربية",
    "😀🦙🚀✅😶\u200d🌫️👍🏽",
    "\u00a0\u2000\u2028\u3000\u0085\u200b\ufeff",
    "०१२३٠١٢٣",
    "\u0301\u0308\u20dd",
    "\x00\x01\x1f\x7f",
    "'s 'T 're 'VE 'll 'd",
    " <s></s><unk><|endoftext|><|im_start|><|im_end|><|begin_of_text|><|eot_id|>[PAD151646]",
)


def random_texts(seed: int, n: int) -> Iterator[str]:
    rng = random.Random(seed)
    for i in range(n):
        if i % 4 == 3:  # any code point of any plane
            cps = (rng.randrange(0x110000) for _ in range(rng.randrange(1, 30)))
            yield "".join(chr(c) for c in cps if not 0xD800 <= c <= 0xDFFF)
        else:
            parts = (
                rng.choice(rng.choice(POOLS)) * rng.choice((1, 1, 2, 3, 7))
                for _ in range(rng.randrange(1, 50))
            )
            yield "".join(parts)


FIXED_TEXTS = (
    "",
    " ",
    "    \n\n\t\t  x  ",
    " " * 33 + "a" + "\n" * 17,
    "def f(x):\n    return {'a': [1, 2, 3]}  # ok?\n",
    "1234567890 3.14159 1,000,000 0x1F",
    "I'm sure it's what we'd've done, didn't they? 'quoted' \" ' \"",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
    "<s>[INST] hi [/INST]</s>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
)


@pytest.mark.parametrize("name", VOCABS)
def test_encode_matches_llama_cpp(name: str) -> None:
    tok, ref = pair(name)
    mismatches = []
    for text in (*FIXED_TEXTS, *random_texts(hash(name) & 0xFFFF, 800)):
        for add_special in (False, True):
            for parse_special in (False, True):
                ours = tok.encode(text, add_special=add_special, parse_special=parse_special)
                theirs = ref.tokenize(text.encode(), add_special, parse_special)
                if ours != theirs:
                    mismatches.append((text, add_special, parse_special, ours, theirs))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[0]}"


@pytest.mark.parametrize("name", VOCABS)
def test_decode_matches_llama_cpp(name: str) -> None:
    tok, ref = pair(name)
    rng = random.Random(1)
    sequences = [ref.tokenize(t.encode(), True, True) for t in (*FIXED_TEXTS, *random_texts(2, 200))]
    # Arbitrary ids too: byte tokens, partial characters, control tokens anywhere.
    sequences += [[rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 40))] for _ in range(300)]
    sequences += [[tok.bos_id or 0, *s] for s in sequences[:50]]
    for ids in sequences:
        for special in (False, True):
            assert tok.decode_bytes(ids, special=special) == ref.detokenize(ids, special), ids


@pytest.mark.parametrize("name", VOCABS)
def test_pieces_and_attributes_match_llama_cpp(name: str) -> None:
    tok, ref = pair(name)
    rng = random.Random(3)
    ids = sorted(
        set(rng.sample(range(tok.vocab_size), min(tok.vocab_size, 5000))) | set(tok.vocab.special_tokens)
    )
    for tid in ids:
        for special in (False, True):
            assert tok.token_to_piece(tid, special) == ref.piece(tid, special), tid
        assert int(tok.vocab.attrs[tid]) == llama_cpp.llama_vocab_get_attr(ref.vocab, tid), tid
    v = ref.vocab

    def opt(token_id: int) -> int | None:
        return None if token_id < 0 else token_id

    assert tok.bos_id == opt(llama_cpp.llama_vocab_bos(v))
    assert tok.eos_id == opt(llama_cpp.llama_vocab_eos(v))
    assert tok.eot_id == opt(llama_cpp.llama_vocab_eot(v))
    assert tok.pad_id == opt(llama_cpp.llama_vocab_pad(v))
    assert tok.add_bos == llama_cpp.llama_vocab_get_add_bos(v)
    assert tok.add_eos == llama_cpp.llama_vocab_get_add_eos(v)
    assert tok.vocab_size == llama_cpp.llama_vocab_n_tokens(v)
    eog = {t for t in range(tok.vocab_size) if llama_cpp.llama_vocab_is_eog(v, t)}
    assert tok.eog_ids == eog


# -- every pre-tokenizer, on a vocab file rewritten with its name --------------------------------

# A few in the fast suite; all of them with `-m slow`.
_FAST = ("default", "smollm", "deepseek-coder", "gpt-4o")


def _check_pre_tokenizer(pre: str, tmp_path: Path, n_texts: int) -> None:
    base = vocab_path("llama-bpe")
    if base is None:
        pytest.skip("vocab llama-bpe not available")
    fields = dict(GGUFFile.open(base).fields)
    fields["tokenizer.ggml.pre"] = MetaField(pre, GGUFValueType.STRING)
    path = tmp_path / f"vocab-{pre}.gguf"
    write_gguf(path, "llama", fields, [])
    tok, ref = Tokenizer.from_gguf(path), LlamaCppVocab(path)
    for text in (*FIXED_TEXTS, *random_texts(7, n_texts)):
        ids = ref.tokenize(text.encode(), True, False)
        assert tok.encode(text) == ids, (pre, text)
        assert tok.decode_bytes(ids) == ref.detokenize(ids, False), (pre, text)


@pytest.mark.parametrize("pre", _FAST)
def test_pre_tokenizer_matches_llama_cpp(pre: str, tmp_path: Path) -> None:
    _check_pre_tokenizer(pre, tmp_path, 300)


@pytest.mark.slow
@pytest.mark.parametrize("pre", sorted(PRE_TOKENIZERS))
def test_every_pre_tokenizer_matches_llama_cpp(pre: str, tmp_path: Path) -> None:
    _check_pre_tokenizer(pre, tmp_path, 1500)


# -- special-token handling on altered vocabs ----------------------------------------------------


def _altered(
    name: str, tmp_path: Path, changes: dict[int | str, tuple[str, int]], general_name: str | None
) -> Path:
    """The vocab file `name` with tokens (by id or text) given a new (text, type), maybe another name."""
    base = vocab_path(name)
    if base is None:
        pytest.skip(f"vocab {name} not available")
    fields = dict(GGUFFile.open(base).fields)
    tokens = list(fields["tokenizer.ggml.tokens"].value)
    token_types = fields["tokenizer.ggml.token_type"].value.copy()
    for key, (text, token_type) in changes.items():
        tid = key if isinstance(key, int) else tokens.index(key)
        tokens[tid], token_types[tid] = text, token_type
    fields["tokenizer.ggml.tokens"] = MetaField(tokens, GGUFValueType.ARRAY, GGUFValueType.STRING)
    fields["tokenizer.ggml.token_type"] = MetaField(token_types, GGUFValueType.ARRAY, GGUFValueType.INT32)
    if general_name is not None:
        fields["general.name"] = MetaField(general_name, GGUFValueType.STRING)
    path = tmp_path / f"{name}-altered.gguf"
    write_gguf(path, "llama", fields, [])
    return path


ALTERED = [
    # A user-defined end token is made a control token by its text, so it needs parse_special.
    (
        "gpt-2",
        {"<|endoftext|>": ("<|endoftext|>", 4), "Ġthe": ("Ġthe", 4), "ing": ("ing", 4), "Ġ(": ("Ġ(", 3)},
        None,
    ),
    # phi-3 files: special tokens swallow the white space after them.
    (
        "llama-spm",
        {31000: ("<|endoftext|>", 3), 31001: ("<|user|>", 3), 31002: ("<|end|>", 4), "▁the": ("▁the", 4)},
        "Phi-3-mini-4k-instruct",
    ),
]


@pytest.mark.parametrize(("name", "changes", "general_name"), ALTERED)
def test_altered_special_tokens_match_llama_cpp(
    name: str, changes: dict[int | str, tuple[str, int]], general_name: str | None, tmp_path: Path
) -> None:
    path = _altered(name, tmp_path, changes, general_name)
    tok, ref = Tokenizer.from_gguf(path), LlamaCppVocab(path)
    texts = [*FIXED_TEXTS, "the thing is <|endoftext|> the  (x)\n the", "ingesting  ing ing\n\ning"]
    texts += ["<|user|>  \n hi<|end|>\n <|endoftext|> the", " <|user|><|user|>x  <|end|>"]
    texts += list(random_texts(11, 200))
    for text in texts:
        for parse_special in (False, True):
            ids = ref.tokenize(text.encode(), True, parse_special)
            assert tok.encode(text, parse_special=parse_special) == ids, (text, parse_special)
            for special in (False, True):
                assert tok.decode_bytes(ids, special) == ref.detokenize(ids, special), (text, ids)
    assert tok.eog_ids == {t for t in range(tok.vocab_size) if llama_cpp.llama_vocab_is_eog(ref.vocab, t)}
