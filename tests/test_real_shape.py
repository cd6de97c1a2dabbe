"""A real-shape model with a real tokenizer against llama.cpp (slow: `pytest -m slow`)."""

from __future__ import annotations

import numpy as np
import pytest

import edgelm
from conftest import vocab_path
from edgelm.convert.synth import synthesize

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_qwen2_5_shape_with_qwen2_vocab_matches_llama_cpp(tmp_path, quant: str) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    vocab = vocab_path("qwen2")
    if vocab is None:
        pytest.skip("qwen2 vocab file not available")
    path = tmp_path / f"qwen2.5-0.5b-{quant}.gguf"
    synthesize("qwen2.5-0.5b", quant, path, vocab=vocab)
    model = edgelm.load(path, n_ctx=256)
    text = "The quick brown fox jumps over the lazy dog. Edge devices answer fast."
    ids = model.tokenizer.encode(text, add_special=False)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == ids
    llm.eval(ids)
    ref = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
    ours = model.logits(ids)
    spread = float(ref.std())
    diff = np.abs(ours - ref)
    assert diff.max() <= 0.15 * spread and diff.mean() <= 0.02 * spread
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.3
    assert (ours.argmax(1) == ref.argmax(1))[clear].all()
