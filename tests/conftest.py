"""Shared fixtures: tiny synthetic model files, built once per test session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgelm.convert.mix import FileType
from edgelm.convert.presets import PRESETS
from edgelm.convert.synth import config_fields, synthesize
from edgelm.gguf import keys
from edgelm.gguf.constants import GGMLType, GGUFValueType
from edgelm.gguf.reader import MetaField
from edgelm.gguf.writer import PlannedTensor, write_gguf
from edgelm.models.config import ModelConfig
from edgelm.models.layout import expected_tensors

REPO = Path(__file__).resolve().parent.parent
SHARED_VOCAB = REPO.parent / "shared" / "vocab"
LOCAL_VOCAB = Path(__file__).resolve().parent / "data" / "vocab"

# The smallest llama that loads: one block, 16 wide, 16 tokens; its file is a few KB, mostly header.
MINI_CONFIG: ModelConfig = replace(
    PRESETS["tiny-llama"].config,
    name="mini-llama",
    n_layers=1,
    dim=16,
    ffn_dim=32,
    n_heads=2,
    n_kv_heads=1,
    head_dim=8,
    head_dim_v=8,
    rope_dim=8,
    vocab_size=16,
    context_length=64,
)


def _llama_cpp_note() -> str | None:
    """Keep llama.cpp off its AMX kernels where they would crash this process (see edgelm.bench.rival)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None
    from edgelm.bench.rival import avoid_amx

    return avoid_amx()


LLAMA_CPP_NOTE = _llama_cpp_note()


def pytest_report_header() -> list[str]:
    return [LLAMA_CPP_NOTE] if LLAMA_CPP_NOTE else []


def vocab_path(name: str) -> Path | None:
    """A vocab-only GGUF of llama.cpp (`qwen2`, `llama-bpe`, ...): the repo's copy, else ../shared."""
    for folder in (LOCAL_VOCAB, SHARED_VOCAB):
        p = folder / f"ggml-vocab-{name}.gguf"
        if p.is_file():
            return p
    return None


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`tiny_model(preset="tiny-llama", quant="f32", seed=0) -> Path`, each file made once per session."""
    cache: dict[tuple[str, str, int], Path] = {}
    root = tmp_path_factory.mktemp("models")

    def make(preset: str = "tiny-llama", quant: str = "f32", seed: int = 0) -> Path:
        key = (preset, quant, seed)
        if key not in cache:
            path = root / f"{preset}-{quant}-{seed}.gguf"
            synthesize(preset, quant, path, seed=seed)
            cache[key] = path
        return cache[key]

    return make


def mini_fields(cfg: ModelConfig = MINI_CONFIG) -> dict[str, MetaField]:
    """Model and tokenizer metadata of `cfg`, with a value of every common GGUF type."""
    tokens = ["<unk>", "<s>", "</s>", *(chr(ord("a") + i) for i in range(cfg.vocab_size - 3))]
    arr, s, u32 = GGUFValueType.ARRAY, GGUFValueType.STRING, GGUFValueType.UINT32
    return config_fields(cfg, FileType.F16) | {
        keys.TOKENIZER_MODEL: MetaField("llama", s),
        keys.TOKENIZER_TOKENS: MetaField(tokens, arr, s),
        keys.TOKENIZER_SCORES: MetaField(
            -np.arange(cfg.vocab_size, dtype=np.float32), arr, GGUFValueType.FLOAT32
        ),
        keys.TOKENIZER_TOKEN_TYPE: MetaField(
            np.ones(cfg.vocab_size, dtype=np.int32), arr, GGUFValueType.INT32
        ),
        keys.TOKENIZER_BOS_ID: MetaField(1, u32),
        keys.TOKENIZER_EOS_ID: MetaField(2, u32),
        keys.TOKENIZER_ADD_BOS: MetaField(True, GGUFValueType.BOOL),
    }


def write_mini_model(
    path: Path, cfg: ModelConfig = MINI_CONFIG, seed: int = 0, chat_template: str | None = None
) -> Path:
    """A model file of `cfg` with random weights: F16 matrices, F32 norms (as llama.cpp stores them);
    with `chat_template` as its `tokenizer.chat_template` where given."""
    planned = []
    for i, spec in enumerate(expected_tensors(cfg)):
        shape = tuple(reversed(spec.ne))
        dtype, ggml_type = (np.float32, GGMLType.F32) if len(shape) == 1 else (np.float16, GGMLType.F16)

        def produce(shape: tuple[int, ...] = shape, dtype: type = dtype, i: int = i) -> np.ndarray:
            return np.random.default_rng([seed, i]).standard_normal(shape).astype(dtype)

        planned.append(PlannedTensor(spec.name, ggml_type, shape, produce))
    fields = mini_fields(cfg)
    if chat_template is not None:
        fields[keys.CHAT_TEMPLATE] = MetaField(chat_template, GGUFValueType.STRING)
    write_gguf(path, cfg.arch, fields, planned)
    return path


@pytest.fixture(scope="session")
def mini_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid model file of `MINI_CONFIG`, a few KB: small enough that most of its bytes are parsed."""
    return write_mini_model(tmp_path_factory.mktemp("mini") / "mini-llama.gguf")
