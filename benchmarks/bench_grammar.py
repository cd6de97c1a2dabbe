"""Constrained decoding cost: what a JSON-schema grammar adds to each decoded token.

1. Building the llguidance view of a vocabulary (once per tokenizer) and compiling schemas.
2. The grammar processor alone, per token, over random logits (strings stay open, so masks mix the
   "almost everything allowed" and "a few structural tokens" cases): llguidance's mask, applying it,
   and the budget search near the end.
3. Decoding with and without the grammar on a random-weight model with the same vocabulary
   (tiny-qwen2 shape, so the 151,936-row output projection dominates its step).

Usage: python benchmarks/bench_grammar.py [--vocab GGUF] [--model GGUF] [--tokens 64] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

import edgelm
from edgelm.convert.synth import synthesize
from edgelm.runtime.grammar import Grammar
from edgelm.runtime.sampling import SamplingParams, make_sampler
from edgelm.tokenizer import Tokenizer

VOCAB = Path(__file__).resolve().parent.parent / "tests" / "data" / "vocab" / "ggml-vocab-qwen2.gguf"
PROMPT = "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"
TOOL_CALL = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
        },
    },
    "required": ["name", "arguments"],
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
        },
    },
    "required": ["name", "age", "tags", "address"],
}
SCHEMAS: dict[str, Mapping | None] = {"tool_call": TOOL_CALL, "person": PERSON, "any_object": None}


class Timed:
    """Wraps a logits processor and records the duration of each call (ms)."""

    def __init__(self, proc: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        self.proc = proc
        self.ms: list[float] = []

    def __call__(self, history: np.ndarray, logits: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        out = self.proc(history, logits)
        self.ms.append(1000 * (time.perf_counter() - t))
        return out


def summary(ms: list[float]) -> str:
    a = np.asarray(ms)
    return (
        f"mean {a.mean():.3f}  p50 {np.median(a):.3f}  p90 {np.percentile(a, 90):.3f}  max {a.max():.2f} ms"
    )


def bench_build(vocab: Path) -> Tokenizer:
    t = time.perf_counter()
    tokenizer = Tokenizer.from_gguf(vocab)
    t_tok = time.perf_counter() - t
    t = time.perf_counter()
    Grammar.json_schema(None, tokenizer)
    t_first = time.perf_counter() - t
    print(f"vocab {vocab.name}: {tokenizer.vocab_size} tokens; tokenizer {t_tok:.2f} s")
    print(f"  llguidance view of the vocab + first grammar: {t_first:.2f} s (once per tokenizer)")
    for name, schema in SCHEMAS.items():
        t = time.perf_counter()
        g = Grammar.json_schema(schema, tokenizer)
        t_compile = time.perf_counter() - t
        t = time.perf_counter()
        g.processor(64)
        t_proc = time.perf_counter() - t
        print(f"  compile {name}: {1000 * t_compile:.2f} ms; new processor {1000 * t_proc:.3f} ms")
    return tokenizer


def bench_processor(tokenizer: Tokenizer, n_tokens: int, seeds: int) -> None:
    """The processor alone: random logits through the real Sampler."""
    vocab = tokenizer.vocab_size
    print(f"\ngrammar processor per token, random logits, {n_tokens}-token budget ({vocab} tokens)")
    apply_ms: list[float] = []
    for name, schema in SCHEMAS.items():
        grammar = Grammar.json_schema(schema, tokenizer)
        calls: list[float] = []
        llg_ms: list[float] = []
        for seed in range(seeds):
            proc = grammar.processor(max_tokens=n_tokens)
            timed = Timed(proc)
            params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
            sampler = make_sampler(params, vocab, [timed])
            rng = np.random.default_rng(seed)
            history = [1, 2, 3]
            for _ in range(n_tokens):
                logits = rng.standard_normal(vocab, dtype=np.float32) * 4
                tok = sampler.sample(logits, np.asarray(history))
                history.append(tok)
                if tokenizer.is_eog(tok):
                    break
            calls += timed.ms[1:]  # the first call only records the prompt
            # llguidance's share: the same states, mask only.
            matcher = grammar._matcher.deep_copy()
            words = np.empty((grammar.vocab_size + 31) // 32, dtype=np.int32)
            for tok in history[3:]:
                t = time.perf_counter()
                matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
                llg_ms.append(1000 * (time.perf_counter() - t))
                if tokenizer.is_eog(tok) or not matcher.consume_token(tok):
                    break
        # Mask and apply alone, inside a string (nearly every token allowed).
        proc = grammar.processor()
        ids = tokenizer.encode('{"name":"', add_special=False) if schema is not None else []
        proc(np.asarray([1, 2, 3]), np.zeros(vocab, dtype=np.float32))
        proc(np.asarray([1, 2, 3, *ids]), np.zeros(vocab, dtype=np.float32))
        logits = np.zeros(vocab, dtype=np.float32)
        for _ in range(50):
            t = time.perf_counter()
            proc._mask(logits)
            apply_ms.append(1000 * (time.perf_counter() - t))
        print(f"  {name:10s} processor call: {summary(calls)}")
        print(f"  {'':10s} llguidance mask: {summary(llg_ms)}")
    print(f"  llguidance mask + applying it, inside a string: {summary(apply_ms)}")


def bench_decode(model: edgelm.Model, n_tokens: int, seeds: int, repeat: int) -> None:
    """Free and constrained runs alternate (the machine may be shared); each keeps its best of `repeat`."""
    print(f"\ndecode with and without grammar: {model}, {n_tokens} tokens, temperature 1.0")
    grammar = Grammar.json_schema(TOOL_CALL, model.tokenizer)
    free: list[float] = []
    constrained: list[float] = []
    proc_ms: list[float] = []
    for seed in range(seeds):
        best_free = best_constrained = 0.0
        for _ in range(repeat):
            chunks = list(model.stream_generate(PROMPT, max_tokens=n_tokens, temperature=1.0, seed=seed))
            best_free = max(best_free, chunks[-1].timings.decode_tokens_per_s)
            timed = Timed(grammar.processor(max_tokens=n_tokens))
            chunks = list(
                model.stream_generate(
                    PROMPT, max_tokens=n_tokens, temperature=1.0, seed=seed, processors=[timed]
                )
            )
            best_constrained = max(best_constrained, chunks[-1].timings.decode_tokens_per_s)
            proc_ms += timed.ms[1:]
        free.append(best_free)
        constrained.append(best_constrained)
        last = chunks[-1]
        text = "".join(c.text for c in chunks)
        print(f"  seed {seed}: {last.timings.decode_tokens} tokens, {last.finish_reason}: {text[:60]!r}")
    f, c = statistics.median(free), statistics.median(constrained)
    step = 1000 / f
    print(f"  free decode:         {f:7.2f} tok/s ({step:.1f} ms/token)")
    print(f"  with grammar:        {c:7.2f} tok/s ({100 * (f - c) / f:+.1f}% slower)")
    print(f"  processor per token: {summary(proc_ms)} ({100 * np.mean(proc_ms) / step:.1f}% of a step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=Path, default=VOCAB, help="a GGUF with the vocabulary")
    parser.add_argument("--model", type=Path, help="a model to decode with (default: synthesized)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    tokenizer = bench_build(args.vocab)
    bench_processor(tokenizer, args.tokens, args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if path is None:
            path = Path(tmp) / "tiny-qwen2-vocab.gguf"
            synthesize("tiny-qwen2", "q8_0", path, vocab=args.vocab)
        bench_decode(edgelm.load(path, n_ctx=512), args.tokens, args.seeds, args.repeat)


if __name__ == "__main__":
    main()
