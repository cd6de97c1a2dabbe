"""What `edgelm info` reports about a model file."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from edgelm.errors import ModelFileError
from edgelm.gguf import keys
from edgelm.gguf.keys import arch_key
from edgelm.gguf.reader import GGUFFile
from edgelm.gguf.string_array import is_string_list
from edgelm.models.config import ModelConfig
from edgelm.models.model_file import load_tensors

__all__ = ["ModelSummary", "TypeShare", "summarize"]


@dataclass(frozen=True)
class TypeShare:
    type_name: str
    n_tensors: int
    n_bytes: int
    n_params: int


@dataclass(frozen=True)
class ModelSummary:
    path: str
    file_size: int
    gguf_version: int
    arch: str | None
    name: str
    n_params: int
    quant_mix: list[TypeShare]  # largest share first
    context_length: int | None
    tokenizer: str  # "gpt2 (pre: qwen2)", "llama", "none"
    vocab_size: int | None
    chat_template: bool
    config: ModelConfig | None
    problem: str | None  # why edgelm cannot run this file, if it cannot


def summarize(path: str | os.PathLike[str]) -> ModelSummary:
    f = GGUFFile.open(path)
    arch = f.get(keys.ARCHITECTURE)
    n_tensors: Counter[str] = Counter()
    n_bytes: Counter[str] = Counter()
    n_params: Counter[str] = Counter()
    for t in f.tensors.values():
        n_tensors[t.ggml_type.name] += 1
        n_bytes[t.ggml_type.name] += t.n_bytes
        n_params[t.ggml_type.name] += t.n_elements
    mix = sorted(
        (TypeShare(k, n_tensors[k], n_bytes[k], n_params[k]) for k in n_tensors), key=lambda s: -s.n_bytes
    )
    config: ModelConfig | None = None
    problem: str | None = None
    try:
        config = ModelConfig.from_gguf(f)
        load_tensors(f, config)
    except ModelFileError as e:
        problem = e.detail
    model = f.get(keys.TOKENIZER_MODEL)
    pre = f.get(keys.TOKENIZER_PRE)
    tokenizer = "none" if model is None else f"{model}" + (f" (pre: {pre})" if pre else "")
    tokens = f.get(keys.TOKENIZER_TOKENS)
    ctx = f.get(arch_key(keys.CONTEXT_LENGTH, arch)) if isinstance(arch, str) else None
    return ModelSummary(
        path=f.path,
        file_size=f.file_size,
        gguf_version=f.version,
        arch=arch if isinstance(arch, str) else None,
        name=str(f.get(keys.NAME, "")),
        n_params=sum(n_params.values()),
        quant_mix=mix,
        context_length=ctx if isinstance(ctx, int) else None,
        tokenizer=tokenizer,
        vocab_size=len(tokens) if is_string_list(tokens) else None,
        chat_template=isinstance(f.get(keys.CHAT_TEMPLATE), str),
        config=config,
        problem=problem,
    )
