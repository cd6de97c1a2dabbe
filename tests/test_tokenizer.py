"""Tokenizer: llama.cpp's test vectors, round trips, special tokens, bad input, streaming, metadata."""

from __future__ import annotations

import random
import re
import unicodedata
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from conftest import vocab_path
from edgelm.errors import EdgelmError, ModelFileError
from edgelm.gguf.constants import GGUFValueType
from edgelm.gguf.reader import GGUFFile, MetaField
from edgelm.gguf.writer import write_gguf
from edgelm.tokenizer import StreamingDetokenizer, TokenAttr, Tokenizer
from edgelm.tokenizer import unicode_data as ud
from edgelm.tokenizer.detokenizer import clean_spaces
from edgelm.tokenizer.pretokenize import PRE_TOKENIZERS, split_words, translate_regex

VOCABS = ("gpt-2", "llama-bpe", "llama-spm", "qwen2")
# llama.cpp's test files separate inputs with this line.
SEPARATOR = "\n__ggml_vocab_test__\n"


@cache
def tokenizer(name: str) -> Tokenizer:
    path = vocab_path(name)
    if path is None:
        pytest.skip(f"vocab {name} not available")
    return Tokenizer.from_gguf(path)


@cache
def metadata(name: str) -> dict[str, object]:
    path = vocab_path(name)
    if path is None:
        pytest.skip(f"vocab {name} not available")
    return dict(GGUFFile.open(path).metadata)


def read_vectors(gguf: Path) -> list[tuple[str, list[int]]]:
    """The (input, expected ids) pairs of llama.cpp's `.inp` / `.out` files, read as its test does."""
    raw = gguf.with_name(gguf.name + ".inp").read_bytes().decode("utf-8")
    inputs = []
    pos = 0
    while pos < len(raw):
        nxt = raw.find(SEPARATOR, pos)
        if nxt < 0:
            inputs.append(raw[pos:])
            break
        inputs.append(raw[pos:nxt])
        pos = nxt + len(SEPARATOR)
    lines = gguf.with_name(gguf.name + ".out").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(inputs), "input and output files disagree on the number of tests"
    return [(text, [int(t) for t in line.split()]) for text, line in zip(inputs, lines, strict=True)]


# -- llama.cpp's test vectors --------------------------------------------------------------------


@pytest.mark.parametrize("name", VOCABS)
def test_llama_cpp_vectors(name: str) -> None:
    tok = tokenizer(name)
    vectors = read_vectors(vocab_path(name))  # type: ignore[arg-type]
    assert len(vectors) >= 40
    failures = [(text, tok.encode(text, add_special=False), ids) for text, ids in vectors]
    failures = [f for f in failures if f[1] != f[2]]
    assert not failures, f"{len(failures)}/{len(vectors)} vectors differ, first: {failures[0]}"


@pytest.mark.parametrize("name", VOCABS)
def test_vectors_round_trip(name: str) -> None:
    """decode(encode(x)) == x, except where llama.cpp's own decode cleans spaces up."""
    tok = tokenizer(name)
    for text, ids in read_vectors(vocab_path(name)):  # type: ignore[arg-type]
        decoded = tok.decode(ids)
        expected = clean_spaces(text.encode()).decode() if tok.vocab.clean_spaces else text
        assert decoded == expected, (text, ids)


# -- metadata and special tokens -----------------------------------------------------------------


EXPECTED_SPECIALS = {
    # name: (bos, eos, eot, add_bos, eog)
    "gpt-2": (50256, 50256, 50256, False, {50256}),
    "llama-bpe": (128000, 128001, 128009, True, {128001, 128009}),
    "llama-spm": (1, 2, None, True, {2}),
    "qwen2": (151643, 151643, 151645, False, {128247, 151643, 151645}),
}


@pytest.mark.parametrize("name", VOCABS)
def test_special_tokens(name: str) -> None:
    tok = tokenizer(name)
    bos, eos, eot, add_bos, eog = EXPECTED_SPECIALS[name]
    assert (tok.bos_id, tok.eos_id, tok.eot_id, tok.add_bos, tok.add_eos) == (bos, eos, eot, add_bos, False)
    assert tok.eog_ids == eog
    assert tok.vocab_size == len(metadata(name)["tokenizer.ggml.tokens"])  # type: ignore[arg-type]
    assert tok.is_special(bos) and tok.is_special(eos)
    assert not tok.is_special(tok.encode("a", add_special=False)[0])
    ids = tok.encode("Hi", add_special=True)
    assert (ids[0] == bos) == add_bos


def test_parse_special() -> None:
    tok = tokenizer("qwen2")
    im_start, im_end = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
    text = "<|im_start|>user\nhi<|im_end|>"
    parsed = tok.encode(text, add_special=False, parse_special=True)
    assert parsed[0] == im_start and parsed[-1] == im_end
    plain = tok.encode(text, add_special=False)
    assert im_start not in plain and len(plain) > len(parsed)
    assert tok.decode(parsed) == "user\nhi"
    assert tok.decode(parsed, special=True) == text
    # User-defined tokens are matched even without parse_special.
    pad = tok.token_to_id("[PAD151646]")
    assert tok.encode("a[PAD151646]b", add_special=False)[1] == pad


def test_spm_space_prefix() -> None:
    tok = tokenizer("llama-spm")
    assert tok.vocab.add_space_prefix
    hello = tok.encode("Hello", add_special=False)
    assert tok.id_to_token(hello[0]) == "▁Hello"
    assert tok.decode(hello) == "Hello"
    # After a special token, the text gets the prefix again.
    ids = tok.encode("<s>Hello", add_special=False, parse_special=True)
    assert ids == [tok.bos_id, *hello]
    assert tok.encode("Hello", add_special=True) == [tok.bos_id, *hello]
    # Characters outside the vocab fall back to byte tokens.
    ids = tok.encode("\U0001f999", add_special=False)
    assert [tok.id_to_token(t) for t in ids[1:]] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]
    assert tok.decode(ids) == "\U0001f999"


def test_decode_rejects_bad_ids() -> None:
    tok = tokenizer("gpt-2")
    for bad in (-1, tok.vocab_size, 10**9):
        with pytest.raises(ValueError, match=str(bad)):
            tok.decode([1, bad])
        with pytest.raises(ValueError, match=str(bad)):
            tok.token_to_piece(bad)
    assert tok.decode([]) == ""
    ids = tok.encode("numpy ids", add_special=False)
    assert tok.decode(np.array(ids, dtype=np.int32)) == "numpy ids"
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"bytes")  # type: ignore[arg-type]


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VOCABS)
def test_lone_surrogates_become_replacement_characters(name: str) -> None:
    tok = tokenizer(name)
    for text in ("\ud800", "a\udfffb", "x\ud83d", "\udc80\udc81"):
        expected = re.sub("[\ud800-\udfff]", "\ufffd", text)
        assert tok.encode(text) == tok.encode(expected)
        assert tok.decode(tok.encode(text, add_special=False)) == expected


@pytest.mark.parametrize("name", VOCABS)
def test_nul_and_control_characters(name: str) -> None:
    tok = tokenizer(name)
    text = "a\x00b\x00\x00c\x01\x1f\x7f\x00"
    ids = tok.encode(text, add_special=False)
    assert tok.decode(ids) == text
    assert tok.encode("\x00", add_special=False)


@pytest.mark.parametrize("name", VOCABS)
def test_every_plane_round_trips(name: str) -> None:
    """Characters of every Unicode plane (llama.cpp's test-tokenizer-1 checks all of them)."""
    tok = tokenizer(name)
    rng = random.Random(0)
    for plane in range(17):
        chars = []
        while len(chars) < 200:
            cp = (plane << 16) | rng.randrange(0x10000)
            if not 0xD800 <= cp <= 0xDFFF:
                chars.append(chr(cp))
        for text in ("".join(chars), " ".join(chars)):
            ids = tok.encode(text, add_special=False)
            assert tok.decode_bytes(ids) == (
                clean_spaces(text.encode()) if tok.vocab.clean_spaces else text.encode()
            )


@pytest.mark.parametrize("name", VOCABS)
def test_one_megabyte_line(name: str) -> None:
    tok = tokenizer(name)
    text = ("tokenizer 12345 éß 日本語 🦙 " * 40_000)[: 1 << 20]  # one line, no newline
    ids = tok.encode(text, add_special=False)
    assert len(ids) > 100_000
    assert tok.decode(ids) == text
    long_word = "x" * (1 << 17)
    assert tok.decode(tok.encode(long_word, add_special=False)) == long_word


def test_empty_text() -> None:
    for name in VOCABS:
        tok = tokenizer(name)
        assert tok.encode("", add_special=False) == []
        assert tok.encode("") == ([tok.bos_id] if tok.add_bos else [])


# -- streaming -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VOCABS)
def test_streaming_never_splits_a_character(name: str) -> None:
    tok = tokenizer(name)
    text = "Hi 🦙 日本語! 😶‍🌫️ end \U0001f999"
    ids = tok.encode(text, add_special=False)
    stream = StreamingDetokenizer(tok)
    chunks = [stream.add(t) for t in ids]
    chunks.append(stream.flush())
    for chunk in chunks:
        assert "\ufffd" not in chunk
    pieces = b"".join(tok.token_to_piece(t) for t in ids).decode()
    assert "".join(chunks) == stream.text == pieces
    # Some token ends inside a character, so some step emitted nothing.
    assert "" in chunks[:-1]


def test_streaming_invalid_bytes() -> None:
    tok = tokenizer("llama-spm")
    byte = {b: tok.token_to_id(f"<0x{b:02X}>") for b in (0xF0, 0x9F, 0xFF, 0x41)}
    stream = tok.stream()
    assert stream.add(byte[0xF0]) == ""
    assert stream.add(byte[0x9F]) == ""
    assert stream.add(byte[0x41]) == "\ufffdA"  # an incomplete character before "A"
    assert stream.add(byte[0xFF]) == "\ufffd"  # never valid: out at once
    assert stream.add(byte[0xF0]) == ""
    assert stream.flush() == "\ufffd"
    stream.reset()
    assert stream.text == ""


def test_streaming_special_tokens() -> None:
    tok = tokenizer("llama-bpe")
    ids = tok.encode("<|begin_of_text|>hi<|eot_id|>", add_special=False, parse_special=True)
    assert tok.stream().add_many(ids) == "hi"
    assert tok.stream(special=True).add_many(ids) == "<|begin_of_text|>hi<|eot_id|>"


# -- metadata errors and defaults ----------------------------------------------------------------


def test_metadata_errors() -> None:
    md = metadata("gpt-2")
    with pytest.raises(ModelFileError, match=re.escape("tokenizer.ggml.model")):
        Tokenizer.from_metadata({k: v for k, v in md.items() if k != "tokenizer.ggml.model"})
    with pytest.raises(ModelFileError, match="unsupported tokenizer model 'bert'"):
        Tokenizer.from_metadata({**md, "tokenizer.ggml.model": "bert"})
    with pytest.raises(ModelFileError, match=r"pre-tokenizer.*'no-such-pre'"):
        Tokenizer.from_metadata({**md, "tokenizer.ggml.pre": "no-such-pre"})
    with pytest.raises(ModelFileError, match=re.escape("tokenizer.ggml.tokens")):
        Tokenizer.from_metadata({**md, "tokenizer.ggml.tokens": "abc"})
    with pytest.raises(ModelFileError, match="merges"):
        Tokenizer.from_metadata({k: v for k, v in md.items() if k != "tokenizer.ggml.merges"})
    with pytest.raises(ModelFileError, match="appears twice"):
        tokens = list(md["tokenizer.ggml.tokens"])  # type: ignore[call-overload]
        tokens[5] = tokens[6]
        Tokenizer.from_metadata({**md, "tokenizer.ggml.tokens": tokens})
    with pytest.raises(ModelFileError, match="token_type"):
        Tokenizer.from_metadata({**md, "tokenizer.ggml.token_type": np.ones(3, dtype=np.int32)})
    assert issubclass(ModelFileError, EdgelmError)


def test_metadata_defaults(caplog: pytest.LogCaptureFixture) -> None:
    md = metadata("gpt-2")
    # No pre-tokenizer: llama.cpp's "default" with a warning.
    tok = Tokenizer.from_metadata({k: v for k, v in md.items() if k != "tokenizer.ggml.pre"})
    assert tok.vocab.pre is not None and tok.vocab.pre.kind == "default"
    assert "default" in caplog.text
    # Flags from the file override the defaults; an out-of-range id keeps the default.
    tok = Tokenizer.from_metadata(
        {**md, "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.eos_token_id": 10**6}
    )
    assert tok.add_bos and tok.encode("a")[0] == 50256 and tok.eos_id == 11
    # Without ids BPE defaults to 11; "<|endoftext|>" is found by its text and made a control token.
    bare = {k: v for k, v in md.items() if not k.endswith(("_token_id", "token_type"))}
    tok = Tokenizer.from_metadata(bare)
    assert tok.bos_id == 11 and tok.eos_id == 11 and tok.eot_id == 50256 and tok.eog_ids == {11, 50256}
    assert tok.is_special(50256) and not tok.is_special(11)


def test_spm_defaults_and_byte_tokens() -> None:
    md = metadata("llama-spm")
    bare = {k: v for k, v in md.items() if not k.startswith("tokenizer.ggml.add")}
    tok = Tokenizer.from_metadata(bare)
    assert (tok.bos_id, tok.eos_id, tok.unk_id, tok.add_bos, tok.add_eos) == (1, 2, 0, True, False)
    assert tok.token_to_piece(tok.token_to_id("<0x0A>")) == b"\n"
    assert tok.token_to_piece(0) == b"" and tok.token_to_piece(0, special=True) == b"<unk>"


@pytest.mark.parametrize("name", ["llama-spm", "gpt-2"])
def test_tokens_that_are_not_utf8(name: str) -> None:
    """GGUF token strings with invalid UTF-8 (read with surrogateescape) decode to their raw bytes."""
    md = metadata(name)
    tokens = list(md["tokenizer.ggml.tokens"])  # type: ignore[call-overload]
    types = np.array(md["tokenizer.ggml.token_type"])
    tokens[20000], types[20000] = "a\udcff\udcfe", 4
    tokens[20001], types[20001] = "\udcc3", 1
    tok = Tokenizer.from_metadata({**md, "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types})
    assert tok.token_to_piece(20000) == b"a\xff\xfe"
    expected = b"\xc3" if name == "llama-spm" else b"[UNK_BYTE_0xefbfbd\xc3]"
    assert tok.token_to_piece(20001) == expected
    assert tok.decode([20000]) == "a\ufffd\ufffd"
    assert tok.decode(tok.encode("plain text", add_special=False)) == "plain text"


def test_tokens_with_nul_bytes_or_empty_read_from_a_file(tmp_path: Path) -> None:
    """llama.cpp reads token texts as C strings and names empty ones after their id."""
    base = vocab_path("gpt-2")
    if base is None:
        pytest.skip("vocab gpt-2 not available")
    fields = dict(GGUFFile.open(base).fields)
    tokens = list(fields["tokenizer.ggml.tokens"].value)
    tokens[20000], tokens[20001] = "edgelm\x00cd", ""
    fields["tokenizer.ggml.tokens"] = MetaField(tokens, GGUFValueType.ARRAY, GGUFValueType.STRING)
    path = tmp_path / "nul.gguf"
    write_gguf(path, "gpt2", fields, [])
    tok = Tokenizer.from_gguf(path)
    assert tok.id_to_token(20000) == "edgelm" and tok.id_to_token(20001) == "[EMPTY_20001]"
    assert tok.token_to_id("[EMPTY_20001]") == 20001 and tok.token_to_id("edgelm\x00cd") is None
    assert tok.encode(" the cat", add_special=False) == tokenizer("gpt-2").encode(
        " the cat", add_special=False
    )


def test_merges_that_are_not_tokens_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    md = metadata("gpt-2")
    merges = [*md["tokenizer.ggml.merges"], "Ġthe Ġthe", "Ġthe nosuchtoken"]  # type: ignore[misc]
    tok = Tokenizer.from_metadata({**md, "tokenizer.ggml.merges": merges})
    assert "ignoring 2 BPE merges" in caplog.text
    assert tok.encode(" the the", add_special=False) == tokenizer("gpt-2").encode(
        " the the", add_special=False
    )


def test_user_defined_and_strip_attributes() -> None:
    """phi-3 style files: special tokens swallow the white space after them."""
    md = metadata("llama-spm")
    types = np.array(md["tokenizer.ggml.token_type"])
    tokens = list(md["tokenizer.ggml.tokens"])  # type: ignore[call-overload]
    tokens[500] = "<|user|>"
    types[500] = 3
    tok = Tokenizer.from_metadata(
        {
            **md,
            "general.name": "Phi-3 mini",
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types,
        }
    )
    assert tok.vocab.attrs[500] & TokenAttr.RSTRIP
    ids = tok.encode("<|user|>  \n Hi", add_special=False, parse_special=True)
    assert ids == [500, *tok.encode("Hi", add_special=False)]


def test_special_tokens_longest_first() -> None:
    """Overlapping special texts: llama.cpp cuts out the longest token first, everywhere."""
    md = metadata("gpt-2")
    tokens = [*md["tokenizer.ggml.tokens"], "<ab>", "b>c<d"]  # type: ignore[misc]
    types = np.append(md["tokenizer.ggml.token_type"], [4, 4]).astype(np.int32)
    tok = Tokenizer.from_metadata({**md, "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types})
    ab, bcd = tok.token_to_id("<ab>"), tok.token_to_id("b>c<d")
    ids = tok.encode("x<ab>c<dy<ab>", add_special=False)
    assert ids == [*tok.encode("x<a", add_special=False), bcd, *tok.encode("y", add_special=False), ab]


# -- pre-tokenizer and Unicode table -------------------------------------------------------------


def test_unicode_table_agrees_with_unicodedata() -> None:
    """Same major category as Python's (older or newer) table wherever both assign the code point."""
    names = {ud.NUMBER: "N", ud.LETTER: "L", ud.SEPARATOR: "Z", ud.ACCENT_MARK: "M"}
    names |= {ud.PUNCTUATION: "P", ud.SYMBOL: "S", ud.CONTROL: "C"}
    runs = ud.category_runs()
    ends = [first for first, _ in runs[1:]] + [ud.MAX_CODEPOINT + 1]
    disagree = 0
    for (first, flag), end in zip(runs, ends, strict=True):
        for cp in range(first, end, 7 if end - first > 1000 else 1):
            cat = unicodedata.category(chr(cp))
            if cat == "Cn" or flag == ud.UNDEFINED:
                continue
            disagree += names[flag] != cat[0]
    assert disagree == 0
    assert sorted(ud.WHITESPACE) == sorted(
        c for c in range(0x3001) if chr(c).isspace() and c not in range(0x1C, 0x20)
    )


@pytest.mark.parametrize("name", sorted({spec.kind: n for n, spec in PRE_TOKENIZERS.items()}.values()))
def test_pre_tokenizer_engines_agree(name: str) -> None:
    """The `tokenizers` (Oniguruma) split equals Python's `re` split of the translated expressions."""
    from tokenizers import Regex, pre_tokenizers

    spec = PRE_TOKENIZERS[name]
    splitter = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(translate_regex(r)), behavior="isolated") for r in spec.regexes]
    )
    rng = random.Random(name)
    alphabet = "aZ09 \t\n\r'sS.,!?-_([{<\u00a0\u3000\u0085éДж日本한ä\u0301🦙😶\u200d٣…。，、।"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) * rng.choice((1, 1, 2, 4)) for _ in range(rng.randrange(1, 40)))
        ours = split_words(text, spec.regexes)
        theirs = [piece for piece, _ in splitter.pre_tokenize_str(text)]
        assert ours == theirs, (name, text)
        assert "".join(ours) == text
