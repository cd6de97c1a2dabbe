"""Pre-tokenizers of byte-level BPE vocabs: how text is split into words before merging.

`tokenizer.ggml.pre` names the split rules. Each is one or more regular expressions, written as
llama.cpp writes them; they are applied in stages, every stage splitting each piece the previous
one produced (matches and the text between matches both become pieces).

llama.cpp runs these expressions with its own Unicode table and, for the common ones (GPT-2,
Llama 3, Qwen2), with hand-written splitters that behave like the expressions. Here every
expression is translated into a portable one whose classes (`\\p{L}`, `\\s`, ...) are spelled out
as explicit code point ranges from that same table (`unicode_data`), so that both Python's `re`
and the Oniguruma engine of the `tokenizers` library split exactly as llama.cpp does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Final

from edgelm.tokenizer import unicode_data as ud

__all__ = [
    "PRE_TOKENIZERS",
    "PreTokenizerSpec",
    "UnsupportedPreTokenizerError",
    "compile_stages",
    "split_words",
    "translate_regex",
]


class UnsupportedPreTokenizerError(ValueError):
    """A pre-tokenizer name this package cannot reproduce."""


@dataclass(frozen=True)
class PreTokenizerSpec:
    """The split rules and tokenizer flags a `tokenizer.ggml.pre` name selects."""

    kind: str  # llama.cpp's pre-tokenizer type, e.g. "llama3" for "llama-bpe" and "llama3"
    regexes: tuple[str, ...]  # stages, in llama.cpp's regex dialect
    ignore_merges: bool = False  # a word that is a whole token is not merged further
    clean_spaces: bool = True  # detokenizing removes spaces before punctuation
    add_bos: bool = False  # default of tokenizer.ggml.add_bos_token
    bos_disabled: bool = False  # the model has no BOS unless the file names one


# Expressions shared by several pre-tokenizers (llama.cpp's spelling).
_GPT2: Final = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS: Final = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3: Final = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2: Final = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35: Final = (
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_JAIS2: Final = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)"
    r"|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}"
)
_DEEPSEEK3: Final = (
    "\\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
)
_PORO: Final = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"
_UPPER: Final = r"((?=[\p{L}])([^a-z]))"
_LOWER: Final = r"((?=[\p{L}])([^A-Z]))"
_TEKKEN: Final = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O: Final = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_UPPER_M: Final = r"((?=[\p{L}\p{M}])([^a-z]))"
_LOWER_M: Final = r"((?=[\p{L}\p{M}])([^A-Z]))"
_GRANITE_EMB_MULTI: Final = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER_M}*{_LOWER_M}+{_CONTRACTIONS}?"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER_M}+{_LOWER_M}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CASED_WORD: Final = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+" + _CONTRACTIONS + "?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + _CONTRACTIONS + "?"
)

_SPECS: Final[tuple[tuple[tuple[str, ...], PreTokenizerSpec], ...]] = (
    (
        ("default",),
        PreTokenizerSpec("default", (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]")),
    ),
    (
        (
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ),
        PreTokenizerSpec("llama3", (_LLAMA3,), ignore_merges=True, add_bos=True),
    ),
    (("dbrx",), PreTokenizerSpec("dbrx", (_LLAMA3,))),
    (("smaug-bpe",), PreTokenizerSpec("smaug", (_LLAMA3,))),
    (("jais-2",), PreTokenizerSpec("jais2", (_JAIS2,))),
    (
        ("deepseek-llm",),
        PreTokenizerSpec(
            "deepseek-llm",
            (
                "[\r\n]",
                "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+",
                "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
                "\\s+$",
                "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
                "\\p{N}+",
            ),
            clean_spaces=False,
        ),
    ),
    (
        ("deepseek-coder",),
        PreTokenizerSpec(
            "deepseek-coder",
            ("[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", "\\p{N}"),
            clean_spaces=False,
        ),
    ),
    (("deepseek-v3",), PreTokenizerSpec("deepseek-v3", _DEEPSEEK3, clean_spaces=False)),
    (("hunyuan-dense",), PreTokenizerSpec("hunyuan-dense", _DEEPSEEK3, clean_spaces=False)),
    (("joyai-llm",), PreTokenizerSpec("joyai-llm", _DEEPSEEK3, clean_spaces=False)),
    (("hy_v4",), PreTokenizerSpec("hy_v4", _DEEPSEEK3, clean_spaces=False)),
    (
        ("spark2_5",),
        PreTokenizerSpec(
            "spark2_5",
            (
                "\\p{N}{1,3}",
                "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
                "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
                "| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
                "\\p{N}",
            ),
            clean_spaces=False,
        ),
    ),
    (
        ("youtu",),
        PreTokenizerSpec(
            "youtu",
            (
                "[\uac00-\ud7a3\u3131-\u318e]+|[\uff01\u2026\u201c\u201d\u2018\u2019\u2014\uff1a\uff1b\uff0c\u3001-\u303f\ufe30-\ufe4f]+|[\u3105-\u312f]+|[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
                _CASED_WORD + r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
            ),
            clean_spaces=False,
            ignore_merges=True,
        ),
    ),
    (
        ("falcon",),
        PreTokenizerSpec(
            "falcon",
            (
                r"[\p{P}\$\+<=>\^~\|`]+",
                r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
                "[0-9][0-9][0-9]",
            ),
        ),
    ),
    (
        ("starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"),
        PreTokenizerSpec("starcoder", (r"\p{N}", _GPT2)),
    ),
    (("command-r", "smollm"), PreTokenizerSpec("smollm", (r"\p{N}", _GPT2), clean_spaces=False)),
    (
        (
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "mpt",
            "olmo",
            "jais",
            "exaone4",
        ),
        PreTokenizerSpec("gpt2", (_GPT2,)),
    ),
    (("trillion", "granite-docling"), PreTokenizerSpec("gpt2", (_GPT2,), clean_spaces=False)),
    (("stablelm2", "megrez"), PreTokenizerSpec("qwen2", (_QWEN2,))),
    (
        ("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open", "grok-2"),
        PreTokenizerSpec("qwen2", (_QWEN2,), clean_spaces=False),
    ),
    (("qwen35",), PreTokenizerSpec("qwen35", (_QWEN35,), clean_spaces=False)),
    (("poro-chat",), PreTokenizerSpec("poro", (_PORO,), clean_spaces=False)),
    (("bloom", "gpt3-finnish"), PreTokenizerSpec("bloom", (_PORO,))),
    (("chatglm-bpe",), PreTokenizerSpec("chatglm4", (_LLAMA3,), bos_disabled=True)),
    (("glm4", "glm5"), PreTokenizerSpec("chatglm4", (_LLAMA3,), bos_disabled=True, ignore_merges=True)),
    (("viking",), PreTokenizerSpec("viking", (_PORO, r"\p{N}"), clean_spaces=False)),
    (
        ("tekken",),
        PreTokenizerSpec("tekken", (_TEKKEN,), clean_spaces=False, ignore_merges=True, add_bos=True),
    ),
    (
        ("chameleon",),
        PreTokenizerSpec(
            "chameleon",
            (
                "<sentinel:[0-9]+>",
                "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
                "([\\t\\n]|    |  )",
                r"\p{N}",
                r"[\p{P}!-/:-@\[-`{-~]",
                _GPT2,
            ),
            clean_spaces=False,
            add_bos=True,
        ),
    ),
    (
        ("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"),
        PreTokenizerSpec("gpt4o", (_GPT4O,), clean_spaces=False),
    ),
    (
        ("granite-embed-multi-97m",),
        PreTokenizerSpec("granite-emb-multi", (_GRANITE_EMB_MULTI,), clean_spaces=False, ignore_merges=True),
    ),
    (
        ("bailingmoe", "bailingmoe2", "llada-moe"),
        PreTokenizerSpec(
            "bailingmoe",
            (
                r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
            ),
            clean_spaces=False,
        ),
    ),
    (
        ("seed-coder",),
        PreTokenizerSpec(
            "seed-coder",
            (
                _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+",
            ),
            clean_spaces=False,
        ),
    ),
    (
        ("ufakzeka",),
        PreTokenizerSpec(
            "ufakzeka",
            (r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",),
            clean_spaces=False,
        ),
    ),
    (("laguna",), PreTokenizerSpec("laguna", ("[^\\n]+|[\\n]+", _QWEN2), clean_spaces=False)),
    (
        ("exaone-moe",),
        PreTokenizerSpec(
            "exaone-moe",
            (
                _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+",
            ),
        ),
    ),
    (
        ("minicpm5",),
        PreTokenizerSpec(
            "minicpm5",
            (
                r"\p{N}{1,3}",
                _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                r"|\s+(?!\S)|\s+",
            ),
            ignore_merges=True,
        ),
    ),
)

PRE_TOKENIZERS: Final[dict[str, PreTokenizerSpec]] = {name: spec for names, spec in _SPECS for name in names}


# -- regex translation ---------------------------------------------------------------------------

# \p{...} classes llama.cpp understands; the letter sub-classes all mean "letter" there.
_PROPERTY_FLAGS: Final[dict[str, int]] = {
    "N": ud.NUMBER,
    "L": ud.LETTER,
    "P": ud.PUNCTUATION,
    "M": ud.ACCENT_MARK,
    "S": ud.SYMBOL,
    "Lu": ud.LETTER,
    "Ll": ud.LETTER,
    "Lt": ud.LETTER,
    "Lm": ud.LETTER,
    "Lo": ud.LETTER,
}
# Characters that need a backslash inside a bracket expression, in either engine.
_CLASS_SPECIAL: Final = frozenset("\\]^-[&|~")
_PROPERTY = re.compile(r"\\p\{(\w+)\}")


def _class_char(cp: int) -> str:
    ch = chr(cp)
    return "\\" + ch if ch in _CLASS_SPECIAL else ch


def _ranges_body(ranges: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> str:
    parts = []
    for first, last in ranges:
        if first == last:
            parts.append(_class_char(first))
        elif last == first + 1:
            parts.append(_class_char(first) + _class_char(last))
        else:
            parts.append(_class_char(first) + "-" + _class_char(last))
    return "".join(parts)


@cache
def _property_body(flag: int) -> str:
    """Bracket-expression body of the code points whose category is `flag`."""
    return _ranges_body(ud.category_ranges(flag))


@cache
def _whitespace_body() -> str:
    cps = sorted(ud.WHITESPACE)
    ranges: list[tuple[int, int]] = []
    for cp in cps:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return _ranges_body(ranges)


# Non-ASCII white space, as a class.
_NON_ASCII_SPACE: Final = "[" + "".join(chr(c) for c in sorted(ud.WHITESPACE) if c >= 0x80) + "]"
# ECMAScript "." excludes line terminators.
_DOT_BODY: Final = "\n\r\u2028\u2029"


def translate_regex(expr: str) -> str:
    """A pattern equivalent to llama.cpp's `expr` for both Python `re` and Oniguruma.

    Classes are expanded to explicit code point ranges of llama.cpp's Unicode table; `\\d`, `\\w` are
    ASCII (ECMAScript); `$` is the end of the piece; `.` excludes line terminators.

    Expressions without `\\p{..}` classes see non-ASCII white space as "\\v" in llama.cpp (it matches
    `\\s` but no literal character), so their literal non-ASCII characters never match it here either.
    """
    uses_properties = _PROPERTY.search(expr) is not None
    out: list[str] = []
    class_start = -1  # index in `out` of the open "[", or -1 outside brackets
    negated = non_ascii = False
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        inside = class_start >= 0
        if c == "\\" and i + 1 < n:
            m = _PROPERTY.match(expr, i)
            if m:
                flag = _PROPERTY_FLAGS.get(m.group(1))
                if flag is None:
                    raise UnsupportedPreTokenizerError(f"unsupported class \\p{{{m.group(1)}}} in {expr!r}")
                body = _property_body(flag)
                out.append(body if inside else "[" + body + "]")
                i = m.end()
                continue
            e = expr[i + 1]
            if e == "s":
                out.append(_whitespace_body() if inside else "[" + _whitespace_body() + "]")
            elif e == "S" and not inside:
                out.append("[^" + _whitespace_body() + "]")
            elif e == "d":
                out.append("0-9" if inside else "[0-9]")
            elif e == "D" and not inside:
                out.append("[^0-9]")
            elif e == "w":
                out.append("A-Za-z0-9_" if inside else "[A-Za-z0-9_]")
            elif e == "W" and not inside:
                out.append("[^A-Za-z0-9_]")
            elif e in "rntfv" or not e.isalnum():
                out.append(expr[i : i + 2])
            else:
                raise UnsupportedPreTokenizerError(f"unsupported escape \\{e} in {expr!r}")
            i += 2
            continue
        if inside:
            if c == "]":
                out.append(c)
                if non_ascii and not negated and not uses_properties:
                    out[class_start:] = ["(?:(?!" + _NON_ASCII_SPACE + ")", *out[class_start:], ")"]
                class_start = -1
            elif c in "[&|~":
                out.append("\\" + c)
            else:
                non_ascii = non_ascii or not c.isascii()
                out.append(c)
        elif c == "[":
            class_start = len(out)
            negated = expr.startswith("^", i + 1)
            non_ascii = False
            out.append("[^" if negated else "[")
            i += negated
        elif c == "$":
            out.append(r"(?![\s\S])")
        elif c == ".":
            out.append("[^" + _DOT_BODY + "]")
        elif not uses_properties and ord(c) in ud.WHITESPACE and not c.isascii():
            out.append("(?!)")  # matches nothing: llama.cpp turned that character into "\\v"
        else:
            out.append(c)
        i += 1
    if class_start >= 0:
        raise UnsupportedPreTokenizerError(f"unterminated bracket expression in {expr!r}")
    return "".join(out)


@cache
def compile_stages(regexes: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    """The stages as compiled Python patterns (the reference the `tokenizers` splitter is tested on)."""
    return tuple(re.compile(translate_regex(r)) for r in regexes)


def split_words(text: str, regexes: tuple[str, ...]) -> list[str]:
    """Split `text` into words as llama.cpp's `unicode_regex_split` does (before byte encoding)."""
    pieces = [text] if text else []
    for pattern in compile_stages(regexes):
        out: list[str] = []
        for piece in pieces:
            start = 0
            for m in pattern.finditer(piece):
                if m.start() > start:
                    out.append(piece[start : m.start()])
                if m.end() > m.start():
                    out.append(m.group())
                start = m.end()
            if start < len(piece):
                out.append(piece[start:])
        pieces = out
    return pieces
