"""Sampling: each processor against a direct NumPy computation, the Sampler against the processor chain,
seeds, greedy, the drawn distribution, validation, and (when installed) llama.cpp's own samplers."""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelm.runtime.sampling import (
    InvalidParamError,
    SamplingParams,
    apply_penalties,
    apply_token_bitmask,
    logit_bias_processor,
    make_processors,
    make_sampler,
    min_p_processor,
    temperature_processor,
    top_k_ids,
    top_k_processor,
    top_p_ids,
    top_p_processor,
)

NO_FILTERS = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}


def random_logits(n: int, seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    p = np.zeros_like(x)
    p[finite] = np.exp(x[finite] - x[finite].max())
    return p / p.sum()


def as_dist(ids: np.ndarray, probs: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n)
    out[ids] = probs
    return out


def chain_dist(params: SamplingParams, logits: np.ndarray, history: np.ndarray) -> np.ndarray:
    x = logits.copy()
    for proc in make_processors(params, logits.shape[0]):
        x = proc(history, x)
    return softmax(x)


# --- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.5),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("temperature", "hot"),
        ("top_p", 1.5),
        ("top_p", -0.1),
        ("min_p", -0.01),
        ("min_p", 2.0),
        ("top_k", 2.5),
        ("top_k", True),
        ("repeat_penalty", 0.0),
        ("repeat_penalty", -1.1),
        ("repeat_last_n", -2),
        ("presence_penalty", math.nan),
        ("frequency_penalty", -math.inf),
        ("logit_bias", {-1: 1.0}),
        ("logit_bias", {3: math.nan}),
        ("logit_bias", {3: math.inf}),
        ("logit_bias", {"a": 1.0}),
        ("logit_bias", [(1, 2.0)]),
        ("seed", -1),
        ("seed", 1.5),
    ],
)
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{field}=") as info:
        SamplingParams(**{field: value})
    assert info.value.field == field
    assert repr(value) in str(info.value)


def test_defaults_are_llama_cpp_and_params_are_frozen_and_hashable() -> None:
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p) == (0.8, 40, 0.95, 0.05)
    assert (p.repeat_penalty, p.repeat_last_n, p.presence_penalty, p.frequency_penalty) == (1.0, 64, 0.0, 0.0)
    assert not p.greedy and not p.penalties_enabled
    with pytest.raises(AttributeError):
        p.temperature = 1.0  # type: ignore[misc]
    a = SamplingParams(logit_bias={5: -1, 2: 1.5}, seed=7)
    b = SamplingParams(logit_bias={2: 1.5, 5: -1.0}, seed=7)
    assert a == b and hash(a) == hash(b)
    assert SamplingParams(temperature=0).greedy
    assert SamplingParams(logit_bias={1: -math.inf}).logit_bias == {1: -math.inf}


def test_logit_bias_outside_vocab_names_the_field() -> None:
    with pytest.raises(InvalidParamError, match=r"^logit_bias="):
        make_sampler(SamplingParams(logit_bias={10: 1.0}), vocab_size=10)


# --- processors against direct computations ------------------------------------------------------------


def test_penalties_by_hand() -> None:
    logits = np.array([2.0, -1.0, 0.5, 3.0, -2.0, 0.0], dtype=np.float32)
    history = np.array([3, 1, 3, 0, 5])  # 3 twice; 0, 1, 5 once; 2 and 4 unseen
    out = apply_penalties(logits.copy(), history, 1.5, 64, 0.25, 0.5)
    expected = [
        2.0 / 1.5 - (1 * 0.5 + 0.25),  # positive: divided
        -1.0 * 1.5 - (1 * 0.5 + 0.25),  # negative: multiplied
        0.5,
        3.0 / 1.5 - (2 * 0.5 + 0.25),  # seen twice
        -2.0,
        0.0 * 1.5 - (1 * 0.5 + 0.25),  # zero counts as not positive
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_penalty_window_and_disabling() -> None:
    logits = np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32)
    history = np.array([0, 1, 2, 2])
    out = apply_penalties(logits.copy(), history, 2.0, 2, 0.0, 0.0)  # sees only the last two: 2, 2
    np.testing.assert_array_equal(out, [1.0, 1.0, 0.5, 1.0])
    out = apply_penalties(logits.copy(), history, 2.0, -1, 0.0, 1.0)  # whole history
    np.testing.assert_allclose(out, [-0.5, -0.5, -1.5, 1.0])
    np.testing.assert_array_equal(apply_penalties(logits.copy(), history, 2.0, 0, 1.0, 1.0), logits)
    np.testing.assert_array_equal(apply_penalties(logits.copy(), history[:0], 2.0, 8, 1.0, 1.0), logits)


@given(
    st.integers(0, 2**31),
    st.floats(0.5, 2.0),
    st.integers(-1, 20),
    st.floats(-1, 1),
    st.floats(-1, 1),
)
@settings(max_examples=50, deadline=None)
def test_penalties_against_a_loop(seed: int, rp: float, last_n: int, presence: float, freq: float) -> None:
    rng = np.random.default_rng(seed)
    logits = random_logits(30, seed)
    history = rng.integers(0, 30, size=int(rng.integers(0, 40)))
    window = list(history) if last_n < 0 else list(history[-last_n:]) if last_n else []
    expected = logits.astype(np.float64)
    for tid in set(window):
        c = window.count(tid)
        x = expected[tid]
        x = x * rp if x <= 0 else x / rp
        expected[tid] = x - (c * freq + presence)
    out = apply_penalties(logits.copy(), history, rp, last_n, presence, freq)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_logit_bias() -> None:
    logits = random_logits(10)
    out = logit_bias_processor({2: 1.5, 7: -math.inf, 0: -0.25}, 10)(
        np.array([], dtype=np.int64), logits.copy()
    )
    expected = logits.copy()
    expected[2] += 1.5
    expected[7] = -np.inf
    expected[0] -= 0.25
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("k", [1, 3, 17, 50, 200])
def test_top_k_against_a_sort(k: int) -> None:
    logits = random_logits(100, seed=k)
    ids = top_k_ids(logits, k)
    np.testing.assert_array_equal(ids, np.argsort(-logits, kind="stable")[:k])
    out = top_k_processor(k)(np.array([]), logits.copy())
    keep = set(np.argsort(-logits)[:k].tolist())
    expected = np.where([i in keep for i in range(100)], logits, -np.inf)
    np.testing.assert_array_equal(out, expected)


def test_top_k_ties_go_to_the_lower_id_and_skip_minus_inf() -> None:
    logits = np.array([1, 3, 3, 2, 3, -np.inf, 3], dtype=np.float32)
    np.testing.assert_array_equal(top_k_ids(logits, 2), [1, 2])
    np.testing.assert_array_equal(top_k_ids(logits, 5), [1, 2, 4, 6, 3])
    masked = np.full(8, -np.inf, dtype=np.float32)
    masked[[5, 2]] = [0.0, 1.0]
    np.testing.assert_array_equal(top_k_ids(masked, 4), [2, 5])


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 0.95, 0.999])
def test_top_p_against_a_loop(p: float) -> None:
    logits = random_logits(60, seed=int(p * 1000), scale=1.5)
    probs = softmax(logits)
    order = np.argsort(-logits, kind="stable")
    kept, cum = [], 0.0
    for i in order:
        kept.append(int(i))
        cum += probs[i]
        if cum >= p:
            break
    out = top_p_processor(p)(np.array([]), logits.copy())
    assert sorted(np.flatnonzero(np.isfinite(out)).tolist()) == sorted(kept)
    np.testing.assert_array_equal(out[kept], logits[kept])


@pytest.mark.parametrize("p", [0.01, 0.05, 0.3, 1.0])
def test_min_p_against_probabilities(p: float) -> None:
    logits = random_logits(60, seed=3)
    probs = softmax(logits)
    out = min_p_processor(p)(np.array([]), logits.copy())
    expected = probs >= p * probs.max() * (1 - 1e-6)
    np.testing.assert_array_equal(np.isfinite(out), expected)


def test_temperature() -> None:
    logits = random_logits(20)
    np.testing.assert_allclose(temperature_processor(0.5)(np.array([]), logits.copy()), logits / 0.5)
    greedy = temperature_processor(0.0)(np.array([]), logits.copy())
    assert np.flatnonzero(np.isfinite(greedy)).tolist() == [int(np.argmax(logits))]


def test_token_bitmask() -> None:
    n = 70  # three words; the last one partly past the vocabulary
    rng = np.random.default_rng(1)
    allowed = rng.random(n) < 0.3
    words = np.zeros(3, dtype=np.uint32)
    for i in np.flatnonzero(allowed):
        words[i // 32] |= np.uint32(1 << (i % 32))
    logits = random_logits(n)
    out = apply_token_bitmask(logits.copy(), words.view(np.int32))
    np.testing.assert_array_equal(out, np.where(allowed, logits, -np.inf))
    longer = apply_token_bitmask(random_logits(100), words.view(np.int32))
    assert np.all(np.isneginf(longer[96:]))  # tokens past the mask are banned


# --- the Sampler -----------------------------------------------------------------------------------------

param_strategy = st.builds(
    SamplingParams,
    temperature=st.sampled_from([0.0, 0.3, 0.8, 1.0, 1.7]),
    top_k=st.sampled_from([-1, 0, 1, 5, 40, 1000]),
    top_p=st.sampled_from([0.0, 0.5, 0.9, 0.95, 1.0]),
    min_p=st.sampled_from([0.0, 0.05, 0.2, 1.0]),
    repeat_penalty=st.sampled_from([1.0, 1.3, 0.8]),
    repeat_last_n=st.sampled_from([0, 4, 64, -1]),
    presence_penalty=st.sampled_from([0.0, 0.5]),
    frequency_penalty=st.sampled_from([0.0, -0.3]),
    logit_bias=st.sampled_from([None, {3: 2.0, 7: -math.inf}]),
)


@given(param_strategy, st.integers(0, 2**31), st.sampled_from([50, 3000]), st.sampled_from([0.5, 3.0, 20.0]))
@settings(max_examples=120, deadline=None)
def test_sampler_distribution_equals_the_processor_chain(
    params: SamplingParams, seed: int, n: int, scale: float
) -> None:
    logits = random_logits(n, seed, scale)
    history = np.random.default_rng(seed).integers(0, n, size=30)
    expected = chain_dist(params, logits, history)
    cand = make_sampler(params, n).candidates(logits.copy(), history)
    assert len(set(cand.ids.tolist())) == cand.ids.shape[0]
    np.testing.assert_allclose(as_dist(cand.ids, cand.probs, n), expected, rtol=1e-4, atol=1e-6)
    assert math.isclose(cand.probs.sum(), 1.0)


@pytest.mark.parametrize(
    ("n", "scale", "n_kept"), [(20000, 8.0, (1, 256)), (20000, 3.0, (257, 4096)), (5000, 0.2, (4097, 5000))]
)
def test_full_vocab_top_p_at_each_stage(n: int, scale: float, n_kept: tuple[int, int]) -> None:
    logits = random_logits(n, 4, scale)  # the flatter, the more tokens top-p 0.9 needs
    params = SamplingParams(top_k=0, top_p=0.9, min_p=0.0, temperature=1.0)
    cand = make_sampler(params, n).candidates(logits.copy(), np.array([], dtype=np.int64))
    assert n_kept[0] <= cand.ids.shape[0] <= n_kept[1]
    np.testing.assert_allclose(as_dist(cand.ids, cand.probs, n), chain_dist(params, logits, np.array([])))


@pytest.mark.parametrize("p", [0.2, 0.5, 0.7, 0.9])
def test_top_p_ties_at_the_cut_go_to_the_lower_ids(p: float) -> None:
    logits = np.random.default_rng(2).integers(-3, 3, size=300).astype(np.float32)  # many equal logits
    probs = softmax(logits)
    order = np.argsort(-logits, kind="stable")
    n = int(np.searchsorted(np.cumsum(probs[order]), p)) + 1
    assert sorted(top_p_ids(logits, p).tolist()) == sorted(order[:n].tolist())
    params = SamplingParams(top_k=0, top_p=p, min_p=0.0, temperature=1.0)
    cand = make_sampler(params, 300).candidates(logits.copy(), np.array([], dtype=np.int64))
    assert sorted(cand.ids.tolist()) == sorted(order[:n].tolist())


def test_greedy_is_argmax() -> None:
    for seed in range(20):
        logits = random_logits(1000, seed)
        assert make_sampler(SamplingParams(temperature=0), 1000).sample(logits.copy(), np.array([])) == int(
            np.argmax(logits)
        )
    logits = np.array([1.0, 5.0, 4.0], dtype=np.float32)
    params = SamplingParams(temperature=0, repeat_penalty=2.0)  # penalties run before the argmax
    assert make_sampler(params, 3).sample(logits.copy(), np.array([1])) == 2
    top1 = SamplingParams(top_k=1, temperature=1.5, seed=None)
    assert all(make_sampler(top1, 3).sample(logits.copy(), np.array([])) == 1 for _ in range(20))


def test_same_seed_same_tokens() -> None:
    n = 2000
    rows = [random_logits(n, i, scale=1.0) for i in range(100)]

    def run(params: SamplingParams) -> list[int]:
        sampler = make_sampler(params, n)
        ids: list[int] = []
        for row in rows:
            ids.append(sampler.sample(row.copy(), np.array(ids, dtype=np.int64)))
        return ids

    for params in (SamplingParams(seed=42), SamplingParams(seed=42, top_k=0, top_p=1.0, min_p=0.0)):
        assert run(params) == run(params)
    assert run(SamplingParams(seed=1)) != run(SamplingParams(seed=2))


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(top_k=5, top_p=0.9, min_p=0.05, temperature=0.7, seed=11),
        SamplingParams(top_k=0, top_p=1.0, min_p=0.0, temperature=1.3, seed=12),
        SamplingParams(top_k=0, top_p=0.8, min_p=0.0, temperature=1.0, seed=13),
        SamplingParams(top_k=6, top_p=1.0, min_p=0.1, temperature=2.0, seed=14),
    ],
)
def test_drawn_frequencies_match_the_distribution(params: SamplingParams) -> None:
    logits = np.array([2.0, 1.5, 1.4, 0.3, 0.0, -0.5, -1.0, -3.0], dtype=np.float32)
    expected = chain_dist(params, logits, np.array([]))
    n_draws = 20_000
    sampler = make_sampler(params, logits.shape[0])
    counts = np.bincount(
        [sampler.sample(logits.copy(), np.array([], dtype=np.int64)) for _ in range(n_draws)],
        minlength=logits.shape[0],
    )
    assert np.all(counts[expected == 0] == 0)  # truncated tokens are never drawn
    support = expected > 0
    chi2 = float((((counts - n_draws * expected) ** 2)[support] / (n_draws * expected[support])).sum())
    # 99.9th percentile of chi-square with up to 7 degrees of freedom is 24.3
    assert chi2 < 24.3, (counts, expected * n_draws)


def test_extra_processors_run_before_truncation() -> None:
    logits = random_logits(100, 5)
    allowed = np.argsort(logits)[:3]  # the three *least* likely tokens: top-k=1 alone would drop them

    def grammar(history: np.ndarray, x: np.ndarray) -> np.ndarray:
        keep = x[allowed]
        x.fill(-np.inf)
        x[allowed] = keep
        return x

    sampler = make_sampler(SamplingParams(top_k=1, seed=0), 100, [grammar])
    assert sampler.sample(logits.copy(), np.array([])) == int(allowed[np.argmax(logits[allowed])])
    sampler = make_sampler(SamplingParams(top_k=0, top_p=1.0, min_p=0.0, seed=0), 100, [grammar])
    assert {sampler.sample(logits.copy(), np.array([])) for _ in range(200)} <= set(allowed.tolist())


def test_nothing_allowed_is_not_an_exception() -> None:
    logits = np.full(10, -np.inf, dtype=np.float32)
    for params in (SamplingParams(), SamplingParams(**NO_FILTERS), SamplingParams(top_k=0)):
        assert make_sampler(params, 10).sample(logits.copy(), np.array([])) == 0


# --- llama.cpp's samplers, through llama-cpp-python's low-level API ------------------------------------


@pytest.mark.llama_cpp
@pytest.mark.parametrize("seed", range(6))
def test_against_llama_cpp(seed: int) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    rng = np.random.default_rng(seed)
    n = 500
    logits = random_logits(n, seed, scale=2.0)
    history = rng.integers(0, n, size=80)
    params = SamplingParams(
        temperature=[0.7, 1.0, 1.4][seed % 3],
        top_k=[40, 0, 200][seed % 3],
        top_p=[0.95, 0.8, 1.0][seed % 3],
        min_p=[0.05, 0.0, 0.1][seed % 3],
        repeat_penalty=1.2,
        repeat_last_n=32,
        presence_penalty=0.3,
        frequency_penalty=0.1,
        logit_bias={int(rng.integers(n)): 3.0, int(rng.integers(n)): -2.0},
    )
    bias = (llama_cpp.llama_logit_bias * 2)(
        *(llama_cpp.llama_logit_bias(t, b) for t, b in params.logit_bias.items())
    )
    chain = [
        llama_cpp.llama_sampler_init_logit_bias(n, 2, bias),
        llama_cpp.llama_sampler_init_penalties(n, 32, 1.2, 0.1, 0.3),
        llama_cpp.llama_sampler_init_top_k(params.top_k),
        llama_cpp.llama_sampler_init_top_p(params.top_p, 0),
        llama_cpp.llama_sampler_init_min_p(params.min_p, 0),
        llama_cpp.llama_sampler_init_temp(params.temperature),
    ]
    for tid in history:
        llama_cpp.llama_sampler_accept(chain[1], int(tid))
    data = (llama_cpp.llama_token_data * n)(
        *(llama_cpp.llama_token_data(i, float(x), 0.0) for i, x in enumerate(logits))
    )
    arr = llama_cpp.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
    try:
        for smpl in chain:
            llama_cpp.llama_sampler_apply(smpl, ctypes.byref(arr))
    finally:
        for smpl in chain:
            llama_cpp.llama_sampler_free(smpl)
    ref_ids = np.array([arr.data[i].id for i in range(arr.size)])
    ref_logits = np.array([arr.data[i].logit for i in range(arr.size)], dtype=np.float32)
    expected = as_dist(ref_ids, softmax(ref_logits), n)

    cand = make_sampler(params, n).candidates(logits.copy(), history)
    assert sorted(cand.ids.tolist()) == sorted(ref_ids.tolist())
    np.testing.assert_allclose(as_dist(cand.ids, cand.probs, n), expected, rtol=1e-4, atol=1e-7)
