"""The vocabulary of a GGUF file: tokens, their kinds, special ids and flags, as llama.cpp reads them.

`Vocab.from_metadata` follows llama.cpp's `llama_vocab::load`: the same defaults when a key is
absent, the same detection of end-of-turn and end-of-generation tokens by their text, the same
out-of-range handling. Everything here is plain data; the tokenizers are built from it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from edgelm.errors import ModelFileError
from edgelm.gguf import keys
from edgelm.gguf.string_array import StringArray, is_string_list
from edgelm.tokenizer.pretokenize import PRE_TOKENIZERS, PreTokenizerSpec
from edgelm.tokenizer.token_index import TokenIndex

__all__ = ["SpecialIds", "TokenAttr", "TokenType", "Vocab", "VocabType"]

logger = logging.getLogger(__name__)

# Tokenizer keys beyond those in `edgelm.gguf.keys`.
KEY_EOT_ID: Final = "tokenizer.ggml.eot_token_id"
KEY_EOM_ID: Final = "tokenizer.ggml.eom_token_id"
KEY_UNK_ID: Final = "tokenizer.ggml.unknown_token_id"
KEY_SEP_ID: Final = "tokenizer.ggml.seperator_token_id"  # sic: the format's spelling
KEY_MASK_ID: Final = "tokenizer.ggml.mask_token_id"
KEY_FIM_PRE_ID: Final = "tokenizer.ggml.fim_pre_token_id"
KEY_FIM_SUF_ID: Final = "tokenizer.ggml.fim_suf_token_id"
KEY_FIM_MID_ID: Final = "tokenizer.ggml.fim_mid_token_id"
KEY_FIM_PAD_ID: Final = "tokenizer.ggml.fim_pad_token_id"
KEY_FIM_REP_ID: Final = "tokenizer.ggml.fim_rep_token_id"
KEY_FIM_SEP_ID: Final = "tokenizer.ggml.fim_sep_token_id"
KEY_PREFIX_ID: Final = "tokenizer.ggml.prefix_token_id"  # older names of the FIM ids
KEY_SUFFIX_ID: Final = "tokenizer.ggml.suffix_token_id"
KEY_MIDDLE_ID: Final = "tokenizer.ggml.middle_token_id"
KEY_ADD_SPACE_PREFIX: Final = "tokenizer.ggml.add_space_prefix"


class VocabType(enum.Enum):
    """Tokenizer algorithm, from `tokenizer.ggml.model`."""

    SPM = "llama"  # SentencePiece BPE: scores, byte fallback, "▁" for spaces
    BPE = "gpt2"  # byte-level BPE: merges, a regex pre-tokenizer


class TokenType(enum.IntEnum):
    """`tokenizer.ggml.token_type` values."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


class TokenAttr(enum.IntFlag):
    """Token attributes (llama.cpp's `llama_token_attr`)."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    NORMALIZED = 1 << 6
    LSTRIP = 1 << 7
    RSTRIP = 1 << 8
    SINGLE_WORD = 1 << 9


# token_type -> attribute; anything else is UNDEFINED.
_TYPE_TO_ATTR: Final = np.array(
    [
        TokenAttr.UNDEFINED,
        TokenAttr.NORMAL,
        TokenAttr.UNKNOWN,
        TokenAttr.CONTROL,
        TokenAttr.USER_DEFINED,
        TokenAttr.UNUSED,
        TokenAttr.BYTE,
    ],
    dtype=np.int32,
)
# Tokens split out of raw text before tokenizing (control and unknown ones only when parsing special).
SPECIAL_ATTRS: Final = TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN

# Texts that identify tokens when the file does not name them; the first one present wins.
_EOT_TEXTS: Final = (
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
)
_EOM_TEXTS: Final = ("<|eom_id|>",)
_FIM_PRE_TEXTS: Final = (
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
)
_FIM_SUF_TEXTS: Final = (
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
)
_FIM_MID_TEXTS: Final = (
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
)
_FIM_PAD_TEXTS: Final = ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")
_FIM_REP_TEXTS: Final = ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")
_FIM_SEP_TEXTS: Final = ("<|file_sep|>",)
# Every token with one of these texts ends generation.
_EOG_TEXTS: Final = frozenset(
    {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",
        "<turn|>",
        "<|tool_response>",
        "<｜end▁of▁sentence｜>",
        "[e~[",
    }
)
# Harmony-format tokens that are always rendered as text.
_ALWAYS_RENDERED_TEXTS: Final = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the special tokens; None where the vocab has none."""

    bos: int | None = None
    eos: int | None = None
    eot: int | None = None
    eom: int | None = None
    unk: int | None = None
    sep: int | None = None
    pad: int | None = None
    mask: int | None = None
    fim_pre: int | None = None
    fim_suf: int | None = None
    fim_mid: int | None = None
    fim_pad: int | None = None
    fim_rep: int | None = None
    fim_sep: int | None = None


# (metadata key, SpecialIds field), in the order llama.cpp applies them (older FIM names last).
_SPECIAL_KEYS: Final = (
    (keys.TOKENIZER_BOS_ID, "bos"),
    (keys.TOKENIZER_EOS_ID, "eos"),
    (KEY_EOT_ID, "eot"),
    (KEY_EOM_ID, "eom"),
    (KEY_UNK_ID, "unk"),
    (KEY_SEP_ID, "sep"),
    (keys.TOKENIZER_PAD_ID, "pad"),
    (KEY_MASK_ID, "mask"),
    (KEY_FIM_PRE_ID, "fim_pre"),
    (KEY_FIM_SUF_ID, "fim_suf"),
    (KEY_FIM_MID_ID, "fim_mid"),
    (KEY_FIM_PAD_ID, "fim_pad"),
    (KEY_FIM_REP_ID, "fim_rep"),
    (KEY_FIM_SEP_ID, "fim_sep"),
    (KEY_PREFIX_ID, "fim_pre"),
    (KEY_SUFFIX_ID, "fim_suf"),
    (KEY_MIDDLE_ID, "fim_mid"),
)


@dataclass(frozen=True, eq=False)
class Vocab:
    """Everything the tokenizer needs from a GGUF file's `tokenizer.*` metadata."""

    type: VocabType
    tokens: Sequence[str]  # token texts as stored ("Ġ"-encoded for BPE, "▁" for spaces in SPM)
    token_to_id: Mapping[str, int]
    attrs: np.ndarray  # (n_tokens,) int32 TokenAttr flags
    scores: np.ndarray | None  # (n_tokens,) float32, SPM merge priorities
    merges: Sequence[str]  # BPE merges "left right", best first
    pre: PreTokenizerSpec | None  # BPE only
    special: SpecialIds
    eog_ids: frozenset[int]
    special_tokens: tuple[int, ...]  # split out of raw text, longest text first
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    clean_spaces: bool
    ignore_merges: bool
    chat_templates: Mapping[str, str] = field(default_factory=dict)  # metadata key -> Jinja source
    name: str | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def chat_template(self) -> str | None:
        """The file's default chat template (`tokenizer.chat_template`), if any."""
        return self.chat_templates.get(keys.CHAT_TEMPLATE)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object], path: str | None = None) -> Vocab:
        """Read the vocab from GGUF metadata (as `GGUFFile.metadata` holds it)."""
        return _load(metadata, path)


def _where(path: str | None) -> str:
    return f"{path}: " if path else ""


def _fail(path: str | None, message: str) -> ModelFileError:
    return ModelFileError(path, message)


def _get_str(md: Mapping[str, object], key: str, path: str | None) -> str | None:
    value = md.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(path, f"metadata key {key!r}: expected a string, got {type(value).__name__}")
    return value


def _get_bool(md: Mapping[str, object], key: str, path: str | None, default: bool) -> bool:
    value = md.get(key)
    if value is None:
        return default
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise _fail(path, f"metadata key {key!r}: expected a bool, got {value!r}")


def _get_id(md: Mapping[str, object], key: str, path: str | None) -> int | None:
    value = md.get(key)
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise _fail(path, f"metadata key {key!r}: expected a token id, got {value!r}")
    return int(value)


def _numeric_array(md: Mapping[str, object], key: str, n_tokens: int, path: str | None) -> np.ndarray | None:
    value = md.get(key)
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.kind not in "iuf":
        raise _fail(path, f"metadata key {key!r}: expected a numeric array")
    if len(value) < n_tokens:
        raise _fail(path, f"metadata key {key!r} has {len(value)} entries for {n_tokens} tokens")
    return value[:n_tokens]


def _load(md: Mapping[str, object], path: str | None) -> Vocab:
    vtype = _vocab_type(md, path)
    tokens, token_to_id = _read_tokens(md, path)
    n_tokens = len(tokens)
    raw_scores = _numeric_array(md, keys.TOKENIZER_SCORES, n_tokens, path)
    scores = None if raw_scores is None else raw_scores.astype(np.float32)
    attrs = _token_attrs(_numeric_array(md, keys.TOKENIZER_TOKEN_TYPE, n_tokens, path), n_tokens)

    # Defaults by tokenizer kind, then what the file says.
    pre: PreTokenizerSpec | None = None
    merges: Sequence[str] = []
    ids: dict[str, int | None] = dict.fromkeys(SpecialIds.__dataclass_fields__)
    if vtype is VocabType.SPM:
        ids.update(bos=1, eos=2, unk=0)
        add_bos, add_space_prefix, clean_spaces, ignore_merges = True, True, False, False
    else:
        merges = _read_merges(md, path)
        pre = _pre_tokenizer(md, path)
        ids.update(bos=None if pre.bos_disabled else 11, eos=11)
        add_bos, add_space_prefix = pre.add_bos, False
        clean_spaces, ignore_merges = pre.clean_spaces, pre.ignore_merges
    add_space_prefix = _get_bool(md, KEY_ADD_SPACE_PREFIX, path, add_space_prefix)
    _read_special_ids(md, ids, n_tokens, path)
    add_bos = _get_bool(md, keys.TOKENIZER_ADD_BOS, path, add_bos)
    add_eos = _get_bool(md, keys.TOKENIZER_ADD_EOS, path, False)

    _detect_by_text(ids, token_to_id, attrs)
    eog = _end_of_generation(ids, tokens, token_to_id, attrs)
    special_ids = np.flatnonzero(attrs & SPECIAL_ATTRS).tolist()
    special_tokens = tuple(
        sorted(special_ids, key=lambda t: -len(tokens[t].encode("utf-8", "surrogateescape")))
    )
    _set_strip_attrs(md, token_to_id, attrs, special_tokens, path)

    attrs.setflags(write=False)
    if scores is not None:
        scores.setflags(write=False)
    templates = {k: v for k, v in md.items() if k.startswith(keys.CHAT_TEMPLATE) and isinstance(v, str)}
    return Vocab(
        type=vtype,
        tokens=tokens,
        token_to_id=token_to_id,
        attrs=attrs,
        scores=scores,
        merges=merges,
        pre=pre,
        special=SpecialIds(**ids),
        eog_ids=frozenset(eog),
        special_tokens=special_tokens,
        add_bos=add_bos,
        add_eos=add_eos,
        add_space_prefix=add_space_prefix,
        clean_spaces=clean_spaces,
        ignore_merges=ignore_merges,
        chat_templates=templates,
        name=_get_str(md, keys.NAME, path),
    )


def _vocab_type(md: Mapping[str, object], path: str | None) -> VocabType:
    model = _get_str(md, keys.TOKENIZER_MODEL, path)
    if model is None:
        raise _fail(path, f"no tokenizer: metadata key {keys.TOKENIZER_MODEL!r} is missing")
    if model in ("no_vocab", "none"):
        raise _fail(path, f"the file has no vocabulary ({keys.TOKENIZER_MODEL} = {model!r})")
    try:
        return VocabType(model)
    except ValueError:
        supported = ", ".join(repr(t.value) for t in VocabType)
        raise _fail(path, f"unsupported tokenizer model {model!r} (supported: {supported})") from None


def _read_tokens(md: Mapping[str, object], path: str | None) -> tuple[Sequence[str], TokenIndex]:
    tokens = md.get(keys.TOKENIZER_TOKENS)
    if not is_string_list(tokens):
        raise _fail(path, f"metadata key {keys.TOKENIZER_TOKENS!r} is missing or not a list of strings")
    assert isinstance(tokens, Sequence)
    if not tokens:
        raise _fail(path, "the vocabulary is empty")
    index = TokenIndex.of_stored(tokens) if isinstance(tokens, StringArray) else None
    if index is None:
        texts = list(tokens)  # decoded once here; the vocab keeps `tokens` (lazy when read from a file)
        if "\x00" in "".join(texts):  # llama.cpp reads tokens as C strings
            tokens = texts = [t.partition("\x00")[0] for t in texts]
        if "" in texts:  # llama.cpp names empty tokens after their id
            tokens = texts = [t or f"[EMPTY_{i}]" for i, t in enumerate(texts)]
        index = TokenIndex(tokens, decoded=texts)
    dup = index.first_duplicate()
    if dup is not None:
        raise _fail(path, f"token {dup!r} appears twice in the vocabulary")
    return tokens, index


def _token_attrs(types: np.ndarray | None, n_tokens: int) -> np.ndarray:
    """(n_tokens,) int32 attributes from the token types (all normal when the file has none)."""
    if types is None:
        return np.full(n_tokens, int(TokenAttr.NORMAL), dtype=np.int32)
    types = types.astype(np.int64)
    known = (types >= 0) & (types < len(_TYPE_TO_ATTR))
    return np.where(known, _TYPE_TO_ATTR[np.where(known, types, 0)], int(TokenAttr.UNDEFINED)).astype(
        np.int32
    )


def _read_merges(md: Mapping[str, object], path: str | None) -> Sequence[str]:
    merges = md.get(keys.TOKENIZER_MERGES)
    if not is_string_list(merges):
        raise _fail(path, f"metadata key {keys.TOKENIZER_MERGES!r} is missing or not a list of strings")
    assert isinstance(merges, Sequence)
    return merges


def _pre_tokenizer(md: Mapping[str, object], path: str | None) -> PreTokenizerSpec:
    name = _get_str(md, keys.TOKENIZER_PRE, path)
    if not name:
        logger.warning("%sno %s, using 'default' (quality may suffer)", _where(path), keys.TOKENIZER_PRE)
        name = "default"
    pre = PRE_TOKENIZERS.get(name)
    if pre is None:
        raise _fail(path, f"unknown or unsupported pre-tokenizer {keys.TOKENIZER_PRE} = {name!r}")
    return pre


def _read_special_ids(
    md: Mapping[str, object], ids: dict[str, int | None], n_tokens: int, path: str | None
) -> None:
    """Special ids named by the file; a default outside the vocab is dropped, a bad file value ignored."""
    for name, default in ids.items():
        if default is not None and default >= n_tokens:
            ids[name] = None
    for key, name in _SPECIAL_KEYS:
        new_id = _get_id(md, key, path)
        if new_id is None:
            continue
        if 0 <= new_id < n_tokens:
            ids[name] = new_id
        else:
            logger.warning("%sbad special token %s = %d, using %s", _where(path), key, new_id, ids[name])


def _detect_by_text(ids: dict[str, int | None], token_to_id: Mapping[str, int], attrs: np.ndarray) -> None:
    """Tokens the file does not name, recognised by their text; they become control tokens."""
    for name, texts in (
        ("eot", _EOT_TEXTS),
        ("eom", _EOM_TEXTS),
        ("fim_pre", _FIM_PRE_TEXTS),
        ("fim_suf", _FIM_SUF_TEXTS),
        ("fim_mid", _FIM_MID_TEXTS),
        ("fim_pad", _FIM_PAD_TEXTS),
        ("fim_rep", _FIM_REP_TEXTS),
        ("fim_sep", _FIM_SEP_TEXTS),
    ):
        if ids[name] is not None:
            continue
        tid = next((token_to_id[t] for t in texts if t in token_to_id), None)
        if tid is not None:
            ids[name] = tid
            attrs[tid] |= TokenAttr.CONTROL


def _end_of_generation(
    ids: Mapping[str, int | None], tokens: Sequence[str], token_to_id: Mapping[str, int], attrs: np.ndarray
) -> set[int]:
    """The ids that end generation; end-of-turn-looking tokens become control tokens."""
    eog = {tid for name in ("fim_pad", "fim_rep", "fim_sep") if (tid := ids[name]) is not None}
    for text in _EOG_TEXTS:
        tid = token_to_id.get(text)
        if tid is not None:
            eog.add(tid)
            attrs[tid] |= TokenAttr.CONTROL
    for text in _ALWAYS_RENDERED_TEXTS:
        tid = token_to_id.get(text)
        if tid is not None:
            attrs[tid] = TokenAttr.USER_DEFINED
    eog.update(tid for name in ("eos", "eot", "eom") if (tid := ids[name]) is not None)

    # Harmony-style vocabs end turns with <|return|> / <|call|>; their "<|end|>" only ends a message.
    in_eog = {tokens[t]: t for t in eog}
    if "<|end|>" in in_eog and (
        ("<|return|>" in in_eog and "<|call|>" in in_eog)
        or (("<|call|>" in in_eog or "<|calls|>" in in_eog) and "<|flush|>" in in_eog)
    ):
        eog.discard(in_eog["<|end|>"])
        attrs[in_eog["<|end|>"]] = TokenAttr.USER_DEFINED
    # Where a vocab has its own end-of-sequence marker, "</s>" is an ordinary token.
    if "</s>" in in_eog and ("<|tool_response>" in in_eog or "<|plamo:eos|>" in in_eog):
        eog.discard(in_eog["</s>"])
        attrs[in_eog["</s>"]] = TokenAttr.NORMAL
    return eog


def _set_strip_attrs(
    md: Mapping[str, object],
    token_to_id: Mapping[str, int],
    attrs: np.ndarray,
    special_tokens: tuple[int, ...],
    path: str | None,
) -> None:
    """Model families whose special tokens swallow the white space beside them."""
    name = (_get_str(md, keys.NAME, path) or "").lower()
    pre_name = _get_str(md, keys.TOKENIZER_PRE, path) or ""
    arch = _get_str(md, keys.ARCHITECTURE, path) or ""

    def set_attr(text: str, attr: TokenAttr, on: bool) -> None:
        tid = token_to_id.get(text)
        if tid is not None:
            attrs[tid] = attrs[tid] | attr if on else attrs[tid] & ~attr

    if any(s in pre_name for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or any(
        s in arch for s in ("nomic-bert-moe", "jina-bert-v3")
    ):
        set_attr("<mask>", TokenAttr.LSTRIP, True)
    elif "phi-3" in name or "phi3" in name:
        for tid in special_tokens:
            attrs[tid] |= TokenAttr.RSTRIP
        set_attr("</s>", TokenAttr.RSTRIP, True)
        for text in ("<unk>", "<s>", "<|endoftext|>"):
            set_attr(text, TokenAttr.RSTRIP, False)
    elif "modern-bert" in name:
        set_attr("[MASK]", TokenAttr.LSTRIP, True)
