"""ModelConfig from metadata."""

from __future__ import annotations

import pytest

from edgelm.convert.presets import PRESETS
from edgelm.gguf.reader import GGUFFile
from edgelm.models.config import ModelConfig


def test_gemma3_sliding_window_layers(tiny_model) -> None:
    cfg = ModelConfig.from_gguf(GGUFFile.open(tiny_model("tiny-gemma3")))
    assert cfg.sliding_window == PRESETS["tiny-gemma3"].config.sliding_window
    # Every sixth layer attends globally, the other five within the window.
    assert [cfg.is_local_layer(i) for i in range(6)] == [True] * 5 + [False]
    assert cfg.local_rope_base == 10000.0


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2", "tiny-qwen3"])
def test_no_sliding_window_outside_gemma3(tiny_model, preset: str) -> None:
    cfg = ModelConfig.from_gguf(GGUFFile.open(tiny_model(preset)))
    assert cfg.sliding_window == 0
    assert not any(cfg.is_local_layer(i) for i in range(cfg.n_layers))
    assert cfg.tied_embeddings
