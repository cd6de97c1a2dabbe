"""A made-up byte-level BPE tokenizer for synthetic models that come without a real vocab file.

It is a genuine GPT-2-style tokenizer (256 byte tokens, merges, control tokens, a ChatML template), so
files that use it load in llama.cpp and exercise the same code paths as a real model; its merges are
drawn at random from letters, so its tokens look like word pieces but carry no meaning.
"""

from __future__ import annotations

import numpy as np

from edgelm.gguf import keys
from edgelm.gguf.constants import GGUFValueType
from edgelm.gguf.reader import MetaField
from edgelm.tokenizer.bpe import byte_encoder

__all__ = ["CHATML_TEMPLATE", "SPECIAL_TOKENS", "synthetic_vocab_fields"]

# llama.cpp token types
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3

BOS, EOS_CHAT_START, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (BOS, EOS_CHAT_START, EOS)
MAX_MERGED_CHARS = 12

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _byte_tokens() -> list[str]:
    """The 256 single-byte tokens in GPT-2's id order (printable bytes first)."""
    chars = [byte_encoder()[b] for b in range(256)]
    printable = [b for b in range(256) if chars[b] == chr(b) and b >= ord("!")]
    rest = [b for b in range(256) if b not in set(printable)]
    return [chars[b] for b in printable + rest]


def synthetic_vocab_fields(vocab_size: int, seed: int) -> dict[str, MetaField]:
    """Tokenizer metadata of a random byte-level BPE vocab of exactly `vocab_size` tokens."""
    n_base = 256 + len(SPECIAL_TOKENS)
    if vocab_size < n_base:
        raise ValueError(f"vocab size {vocab_size} is too small for a byte-level vocab (need {n_base})")
    space = byte_encoder()[ord(" ")]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [
        chr(c) for c in range(ord("A"), ord("Z") + 1)
    ]
    tokens = _byte_tokens()
    known = set(tokens)
    # Merged tokens grow from letters and space-led letters, extended one letter at a time.
    pool = [*letters, space]
    merges: list[str] = []
    rng = np.random.default_rng([seed, 0x70C])
    n_merges = vocab_size - n_base
    while len(merges) < n_merges:
        lefts = rng.integers(0, len(pool), size=4096)
        rights = rng.integers(0, len(letters), size=4096)
        for li, ri in zip(lefts.tolist(), rights.tolist(), strict=True):
            left, right = pool[li], letters[ri]
            new = left + right
            if new in known or len(new) > MAX_MERGED_CHARS:
                continue
            known.add(new)
            tokens.append(new)
            pool.append(new)
            merges.append(f"{left} {right}")
            if len(merges) == n_merges:
                break
    tokens.extend(SPECIAL_TOKENS)
    token_types = np.full(len(tokens), TOKEN_NORMAL, dtype=np.int32)
    token_types[-len(SPECIAL_TOKENS) :] = TOKEN_CONTROL
    bos_id = len(tokens) - len(SPECIAL_TOKENS)
    eos_id = len(tokens) - 1
    s, u32 = GGUFValueType.STRING, GGUFValueType.UINT32
    arr = GGUFValueType.ARRAY
    return {
        keys.TOKENIZER_MODEL: MetaField("gpt2", s),
        keys.TOKENIZER_PRE: MetaField("default", s),
        keys.TOKENIZER_TOKENS: MetaField(tokens, arr, s),
        keys.TOKENIZER_TOKEN_TYPE: MetaField(token_types, arr, GGUFValueType.INT32),
        keys.TOKENIZER_MERGES: MetaField(merges, arr, s),
        keys.TOKENIZER_BOS_ID: MetaField(bos_id, u32),
        keys.TOKENIZER_EOS_ID: MetaField(eos_id, u32),
        keys.TOKENIZER_PAD_ID: MetaField(bos_id, u32),
        keys.TOKENIZER_ADD_BOS: MetaField(False, GGUFValueType.BOOL),
        keys.CHAT_TEMPLATE: MetaField(CHATML_TEMPLATE, s),
    }
