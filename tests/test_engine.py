"""The batching engine: same tokens as alone, prefix reuse, cancellation, queue limits, priorities."""

from __future__ import annotations

import threading

import pytest

import edgelm
from edgelm.runtime.engine import Engine, QueueFullError, Request
from edgelm.runtime.generate import GenerationChunk
from edgelm.runtime.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def model(tiny_model) -> edgelm.Model:
    return edgelm.load(tiny_model("tiny-qwen2", "q8_0"), n_ctx=256)


class Collector:
    def __init__(self) -> None:
        self.chunks: list[GenerationChunk] = []
        self.done = threading.Event()

    def __call__(self, chunk: GenerationChunk) -> None:
        self.chunks.append(chunk)
        if chunk.finish_reason is not None:
            self.done.set()

    @property
    def tokens(self) -> list[int]:
        return [c.token_id for c in self.chunks if c.token_id is not None]

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.chunks)


def _engine(model: edgelm.Model, **kw) -> Engine:
    return Engine(model.transformer, model.tokenizer, n_ctx=256, **kw)


def _request(model, prompt: str, max_tokens: int = 12, **kw) -> tuple[Request, Collector]:
    c = Collector()
    return Request(model.encode_prompt(prompt), GREEDY, max_tokens, c, **kw), c


def _drain(engine: Engine, *collectors: Collector, limit: int = 500) -> None:
    for _ in range(limit):
        if all(c.done.is_set() for c in collectors):
            return
        engine.step()
    raise AssertionError("engine did not finish")


def test_batched_sequences_give_the_tokens_they_give_alone(model) -> None:
    prompts = ["The cat", "A much longer prompt about many different things", "x"]
    alone = [model.generate(p, max_tokens=12, temperature=0) for p in prompts]
    engine = _engine(model, n_slots=3, prefill_chunk=4)
    pairs = [_request(model, p) for p in prompts]
    for r, _ in pairs:
        engine.submit(r)
    _drain(engine, *(c for _, c in pairs))
    for (_, c), ref in zip(pairs, alone, strict=True):
        assert c.tokens == ref.token_ids
        assert c.text == ref.text
        assert c.chunks[-1].finish_reason == "length"


def test_prefix_is_reused(model) -> None:
    engine = _engine(model, n_slots=1)
    system = "You are a helpful assistant on a small device. " * 4
    r1, c1 = _request(model, system + "First question?")
    engine.submit(r1)
    _drain(engine, c1)
    r2, c2 = _request(model, system + "Second question?")
    engine.submit(r2)
    _drain(engine, c2)
    cached = c2.chunks[-1].timings.cached_prompt_tokens
    assert cached >= len(model.encode_prompt(system)) - 1
    assert c2.tokens == model.generate(system + "Second question?", max_tokens=12, temperature=0).token_ids


def test_cancel_frees_the_slot(model) -> None:
    engine = _engine(model, n_slots=1)
    r1, c1 = _request(model, "long one", max_tokens=200)
    r2, c2 = _request(model, "next", max_tokens=3)
    h1 = engine.submit(r1)
    engine.submit(r2)
    for _ in range(3):
        engine.step()
    h1.cancel()
    _drain(engine, c2)
    assert not c1.done.is_set() and len(c1.tokens) < 200


def test_queue_full_is_refused(model) -> None:
    engine = _engine(model, n_slots=1, max_queue=2)
    for _ in range(2):
        engine.submit(_request(model, "a")[0])
    with pytest.raises(QueueFullError):
        engine.submit(_request(model, "a")[0])


def test_priority_runs_first(model) -> None:
    engine = _engine(model, n_slots=1)
    low, c_low = _request(model, "low", max_tokens=2, priority=5)
    high, c_high = _request(model, "high", max_tokens=2, priority=0)
    engine.submit(low)
    engine.submit(high)
    while not c_high.done.is_set():
        engine.step()
    assert not c_low.done.is_set()


def test_short_request_is_not_stuck_behind_a_long_one(model) -> None:
    engine = _engine(model, n_slots=2, prefill_chunk=8)
    long_r, c_long = _request(model, "word " * 40, max_tokens=50)
    short_r, c_short = _request(model, "hi", max_tokens=3)
    engine.submit(long_r)
    engine.submit(short_r)
    while not c_short.done.is_set():
        engine.step()
    assert not c_long.done.is_set()


def test_background_thread(model) -> None:
    engine = _engine(model, n_slots=2)
    engine.start()
    try:
        pairs = [_request(model, p) for p in ("one", "two", "three")]
        for r, _ in pairs:
            engine.submit(r)
        for _, c in pairs:
            assert c.done.wait(30)
    finally:
        engine.stop()
    s = engine.stats()
    assert s.completed == 3 and s.active == 0 and s.decode_step_ms > 0


def test_a_failing_processor_ends_only_its_request(model) -> None:
    def broken(history, logits):
        raise RuntimeError("boom")

    engine = _engine(model, n_slots=2)
    bad, c_bad = _request(model, "bad", processors=[broken])
    good, c_good = _request(model, "good", max_tokens=4)
    engine.submit(bad)
    engine.submit(good)
    _drain(engine, c_bad, c_good)
    assert c_bad.chunks[-1].finish_reason.startswith("error:") and "boom" in c_bad.chunks[-1].finish_reason
    assert c_good.chunks[-1].finish_reason == "length" and len(c_good.tokens) == 4
