"""Shared fixtures: tiny synthetic model files, built once per test session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgelm.convert.synth import synthesize

REPO = Path(__file__).resolve().parent.parent
SHARED_VOCAB = REPO.parent / "shared" / "vocab"
LOCAL_VOCAB = Path(__file__).resolve().parent / "data" / "vocab"


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
