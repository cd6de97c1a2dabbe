"""Metadata key names, as templates over the architecture string where the format does so."""

from __future__ import annotations

from typing import Final

# general.*
ARCHITECTURE: Final = "general.architecture"
NAME: Final = "general.name"
FILE_TYPE: Final = "general.file_type"
QUANTIZATION_VERSION: Final = "general.quantization_version"
ALIGNMENT: Final = "general.alignment"

# {arch}.* hyper-parameters
BLOCK_COUNT: Final = "{arch}.block_count"
CONTEXT_LENGTH: Final = "{arch}.context_length"
EMBEDDING_LENGTH: Final = "{arch}.embedding_length"
FEED_FORWARD_LENGTH: Final = "{arch}.feed_forward_length"
VOCAB_SIZE: Final = "{arch}.vocab_size"
HEAD_COUNT: Final = "{arch}.attention.head_count"
HEAD_COUNT_KV: Final = "{arch}.attention.head_count_kv"
KEY_LENGTH: Final = "{arch}.attention.key_length"
VALUE_LENGTH: Final = "{arch}.attention.value_length"
RMS_NORM_EPS: Final = "{arch}.attention.layer_norm_rms_epsilon"
SLIDING_WINDOW: Final = "{arch}.attention.sliding_window"
SLIDING_WINDOW_PATTERN: Final = "{arch}.attention.sliding_window_pattern"
ROPE_DIMENSION_COUNT: Final = "{arch}.rope.dimension_count"
ROPE_FREQ_BASE: Final = "{arch}.rope.freq_base"
ROPE_FREQ_BASE_SWA: Final = "{arch}.rope.freq_base_swa"
ROPE_SCALING_TYPE: Final = "{arch}.rope.scaling.type"
ROPE_SCALING_FACTOR: Final = "{arch}.rope.scaling.factor"
ROPE_SCALING_ORIG_CTX: Final = "{arch}.rope.scaling.original_context_length"

# tokenizer.*
TOKENIZER_MODEL: Final = "tokenizer.ggml.model"
TOKENIZER_PRE: Final = "tokenizer.ggml.pre"
TOKENIZER_TOKENS: Final = "tokenizer.ggml.tokens"
TOKENIZER_TOKEN_TYPE: Final = "tokenizer.ggml.token_type"
TOKENIZER_SCORES: Final = "tokenizer.ggml.scores"
TOKENIZER_MERGES: Final = "tokenizer.ggml.merges"
TOKENIZER_BOS_ID: Final = "tokenizer.ggml.bos_token_id"
TOKENIZER_EOS_ID: Final = "tokenizer.ggml.eos_token_id"
TOKENIZER_PAD_ID: Final = "tokenizer.ggml.padding_token_id"
TOKENIZER_ADD_BOS: Final = "tokenizer.ggml.add_bos_token"
TOKENIZER_ADD_EOS: Final = "tokenizer.ggml.add_eos_token"
CHAT_TEMPLATE: Final = "tokenizer.chat_template"
TOKENIZER_PREFIX: Final = "tokenizer."


def arch_key(template: str, arch: str) -> str:
    """The concrete key of an `{arch}.…` template."""
    return template.format(arch=arch)
