"""Synthetic models: real shapes, real GGUF (llama.cpp opens them), deterministic."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest import vocab_path
from edgelm.convert.presets import PRESETS
from edgelm.convert.synth import synthesize
from edgelm.gguf import keys
from edgelm.gguf.reader import GGUFFile
from edgelm.models.layout import expected_tensors
from edgelm.models.model_file import ModelFile

TINY = [name for name in PRESETS if name.startswith("tiny-")]

# Published parameter counts of the real models (embeddings included, tied head counted once).
PUBLISHED_PARAMS = {
    "smollm2-135m": 134_515_008,
    "smollm2-360m": 361_821_120,
    "qwen2.5-0.5b": 494_032_768,
    "qwen3-0.6b": 596_049_920,
    "llama-3.2-1b": 1_235_814_400,
    "gemma-3-270m": 268_098_176,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_preset_shapes_match_published_parameter_counts(name: str) -> None:
    cfg = PRESETS[name].config
    n = sum(int(np.prod(s.ne)) for s in expected_tensors(cfg))
    assert n == PUBLISHED_PARAMS[name]
    assert cfg.n_params == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("preset", TINY)
def test_synthetic_model_loads_with_its_preset_config(tiny_model, preset: str) -> None:
    m = ModelFile.open(tiny_model(preset, "f32"))
    want = PRESETS[preset].config
    # Floats are stored as float32 in the file.
    assert m.config.norm_eps == pytest.approx(want.norm_eps, rel=1e-6)
    assert replace(m.config, norm_eps=want.norm_eps) == want
    for name, t in m.tensors.items():
        w = t.dequantize()
        assert np.isfinite(w).all(), name


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path) -> None:
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    synthesize("tiny-qwen2", "q8_0", a, seed=7)
    synthesize("tiny-qwen2", "q8_0", b, seed=7)
    synthesize("tiny-qwen2", "q8_0", c, seed=8)
    assert a.read_bytes() == b.read_bytes()
    fa, fc = GGUFFile.open(a), GGUFFile.open(c)
    name = "blk.0.attn_q.weight"
    assert not np.array_equal(fa.tensor_data(name), fc.tensor_data(name))


def test_vocab_is_copied_from_a_vocab_file(tmp_path) -> None:
    vocab = vocab_path("qwen2")
    if vocab is None:
        pytest.skip("qwen2 vocab file not available")
    out = tmp_path / "m.gguf"
    synthesize("tiny-qwen2", "f16", out, vocab=vocab)
    src, dst = GGUFFile.open(vocab), GGUFFile.open(out)
    for key, value in src.metadata.items():
        if key.startswith(keys.TOKENIZER_PREFIX):
            got = dst.metadata[key]
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(got, value)
            else:
                assert got == value, key
    m = ModelFile.open(out)
    assert m.config.vocab_size == len(src.metadata[keys.TOKENIZER_TOKENS])
    assert m.tensors["token_embd.weight"].shape == (m.config.vocab_size, m.config.dim)


@pytest.mark.parametrize("preset", TINY)
@pytest.mark.parametrize("quant", ["f32", "f16", "q8_0", "q4_0", "q4_k_m", "q6_k"])
def test_llama_cpp_opens_synthetic_files(tiny_model, preset: str, quant: str) -> None:
    """The files are real GGUF, not a private dialect: llama.cpp loads them and gives finite logits."""
    llama_cpp = pytest.importorskip("llama_cpp")
    path = tiny_model(preset, quant)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, logits_all=True, verbose=False)
    tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog", add_bos=True)
    llm.eval(tokens)
    logits = np.asarray(llm.scores[: len(tokens)])
    assert logits.shape == (len(tokens), PRESETS[preset].config.vocab_size)
    assert np.isfinite(logits).all()
    assert logits.std() > 0.5  # the weights are not degenerate


@pytest.mark.slow
def test_real_shape_qwen_info_shows_494m_params(tmp_path) -> None:
    from edgelm.cli.main import main

    out = tmp_path / "m.gguf"
    assert main(["synth", "--like", "qwen2.5-0.5b", "--quant", "q8_0", "-o", str(out)]) == 0
    m = ModelFile.open(out)
    assert sum(t.n_elements for t in m.tensors.values()) == 494_032_768
