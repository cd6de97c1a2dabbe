"""The forward pass against llama.cpp on the same files, and KV-cache correctness."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgelm.models.layers import FFN_BLOCK_MIN_ROWS
from edgelm.models.model_file import ModelFile
from edgelm.models.registry import build_model
from edgelm.models.transformer import Transformer

ARCHS = ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-gemma3"]
QUANTS = ["f32", "f16", "q8_0", "q4_0", "q4_k_m", "q6_k"]
N_TOKENS = 64
N_GREEDY = 32
# llama.cpp rounds activations to 8-bit blocks before quantized products; a last-bit difference in
# summation order can flip one rounding, which moves later logits by up to ~0.1 of their spread.
# Float formats (F32/F16) have no such flips and must agree much more tightly.
MAX_DIFF = {"f32": 0.005, "f16": 0.005}
MAX_DIFF_QUANTIZED = 0.15
MEAN_DIFF_QUANTIZED = 0.02
# A greedy step whose top-2 logits are closer than this (in llama.cpp's own logits) is a near-tie.
NEAR_TIE = 0.3


def _model(path) -> Transformer:
    return build_model(ModelFile.open(path))


def _prompt(vocab_size: int, n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, vocab_size - 3, n).tolist()


def _llama(path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)


@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("preset", ARCHS)
def test_logits_match_llama_cpp(tiny_model, preset: str, quant: str) -> None:
    path = tiny_model(preset, quant)
    llm = _llama(path)
    m = _model(path)
    tokens = _prompt(m.config.vocab_size, N_TOKENS)
    llm.eval(tokens)
    ref = np.asarray(llm.scores[:N_TOKENS], dtype=np.float32)
    ours = m.forward(np.array(tokens), np.arange(N_TOKENS), [m.new_cache(256)])
    spread = float(ref.std())
    diff = np.abs(ours - ref)
    if quant in MAX_DIFF:
        assert diff.max() <= MAX_DIFF[quant] * spread
    else:
        assert diff.max() <= MAX_DIFF_QUANTIZED * spread
        assert diff.mean() <= MEAN_DIFF_QUANTIZED * spread


@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("preset", ARCHS)
def test_greedy_generation_matches_llama_cpp(tiny_model, preset: str, quant: str) -> None:
    path = tiny_model(preset, quant)
    llm = _llama(path)
    m = _model(path)
    prompt = _prompt(m.config.vocab_size, 16, seed=1)
    cache = m.new_cache(256)
    logits = m.forward(
        np.array(prompt), np.arange(len(prompt)), [cache], logit_rows=np.array([len(prompt) - 1])
    )
    ours = []
    for i in range(N_GREEDY):
        tok = int(logits[-1].argmax())
        ours.append(tok)
        logits = m.forward(np.array([tok]), np.array([len(prompt) + i]), [cache])
    llm.eval(prompt)
    theirs: list[int] = []
    for _ in range(N_GREEDY):
        scores = np.asarray(llm.scores[llm.n_tokens - 1])
        top2 = np.sort(scores)[-2:]
        tok = int(scores.argmax())
        if len(theirs) < len(ours) and tok != ours[len(theirs)]:
            # Only a near-tie in llama.cpp's own logits may make the two disagree.
            assert top2[1] - top2[0] < NEAR_TIE, (len(theirs), ours, theirs)
            return
        theirs.append(tok)
        llm.eval([tok])
    assert ours == theirs


def _assert_close(ours: np.ndarray, ref: np.ndarray, quant: str) -> None:
    """Equal up to summation order: tight for float weights; for quantized ones a last-bit difference
    may flip one activation rounding (see MAX_DIFF_QUANTIZED), so the bound is the llama.cpp one."""
    spread = float(ref.std())
    diff = np.abs(ours - ref)
    if quant in MAX_DIFF:
        assert diff.max() <= 1e-3 * spread
    else:
        assert diff.max() <= MAX_DIFF_QUANTIZED * spread
        assert diff.mean() <= MEAN_DIFF_QUANTIZED * spread


@pytest.mark.parametrize("quant", ["f32", "q8_0"])
@pytest.mark.parametrize("preset", ARCHS)
def test_prefill_then_decode_equals_one_prefill(tiny_model, preset: str, quant: str) -> None:
    m = _model(tiny_model(preset, quant))
    tokens = _prompt(m.config.vocab_size, 40, seed=2)
    full = m.forward(np.array(tokens), np.arange(40), [m.new_cache(64)])
    cache = m.new_cache(64)
    parts = [m.forward(np.array(tokens[:24]), np.arange(24), [cache])]
    parts.append(m.forward(np.array(tokens[24:30]), np.arange(24, 30), [cache]))
    parts += [m.forward(np.array([t]), np.array([30 + i]), [cache]) for i, t in enumerate(tokens[30:])]
    _assert_close(np.concatenate(parts), full, quant)


@pytest.mark.parametrize("quant", ["f32", "q4_0"])
@pytest.mark.parametrize("preset", ARCHS)
def test_sequences_batched_together_equal_each_alone(tiny_model, preset: str, quant: str) -> None:
    m = _model(tiny_model(preset, quant))
    a, b = _prompt(m.config.vocab_size, 20, seed=3), _prompt(m.config.vocab_size, 9, seed=4)
    alone_a = m.forward(np.array(a), np.arange(20), [m.new_cache(64)])
    alone_b = m.forward(np.array(b), np.arange(9), [m.new_cache(64)])
    both = m.forward(
        np.array(a + b), np.r_[np.arange(20), np.arange(9)], [m.new_cache(64), m.new_cache(64)], [20, 9]
    )
    _assert_close(both, np.concatenate([alone_a, alone_b]), quant)


def test_sliding_window_cache_keeps_only_the_window(tiny_model) -> None:
    m = _model(tiny_model("tiny-gemma3", "f32"))
    window = m.config.sliding_window
    cache = m.new_cache(128)
    local = [c for layer, c in zip(m.layers, cache.layers, strict=True) if layer.window]
    assert local and all(len(c.k) == window for c in local)
    # Decoding far past the window (which the ring buffer overwrites) still equals a full prefill.
    tokens = _prompt(m.config.vocab_size, 3 * window + 5, seed=5)
    n = len(tokens)
    full = m.forward(np.array(tokens), np.arange(n), [m.new_cache(128)])
    step = [m.forward(np.array([t]), np.array([i]), [cache]) for i, t in enumerate(tokens)]
    # The ring holds keys out of position order, so softmax sums run in another order: last-bit
    # differences, then f16 rounding of the weights, move logits by ~1e-3 of their spread at most.
    np.testing.assert_allclose(np.concatenate(step), full, atol=5e-3 * float(full.std()), rtol=0)


@pytest.mark.parametrize("quant", ["f32", "q4_k_m"])
@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2", "tiny-qwen3"])
def test_whole_block_calls_equal_the_composed_layers(tiny_model, preset: str, quant: str) -> None:
    """A sequence's steps through `Ops.block` (one call a block) give the composed layers' numbers,
    bit for bit; past FFN_BLOCK_MIN_ROWS rows a prompt takes the composed path."""
    m = _model(tiny_model(preset, quant))
    assert all(layer.plan is not None for layer in m.layers)
    composed = dataclasses.replace(m, layers=tuple(dataclasses.replace(la, plan=None) for la in m.layers))
    tokens = _prompt(m.config.vocab_size, FFN_BLOCK_MIN_ROWS + 10, seed=6)
    short, rest = tokens[:12], tokens[12:]
    results = []
    for model in (m, composed):
        cache = model.new_cache(128)
        out = [model.forward(np.array(short), np.arange(12), [cache])]  # fused where plans exist
        out += [model.forward(np.array([t]), np.array([12 + i]), [cache]) for i, t in enumerate(rest[:4])]
        long_cache = model.new_cache(128)  # more rows than one call takes: the composed path
        out.append(model.forward(np.array(tokens), np.arange(len(tokens)), [long_cache]))
        results.append(np.concatenate(out))
    np.testing.assert_array_equal(results[0], results[1])
