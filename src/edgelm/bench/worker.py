"""One measurement in a fresh process, so peak RSS and load time belong to one engine only.

    python -m edgelm.bench.worker --engine edgelm|llama.cpp --model FILE --threads 2 --prompt 512 --gen 128

Prints one JSON object: load_s, prefill_tok_s, decode_tok_s, ttft_s, peak_rss_mb (medians over reps).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time

import numpy as np


def _prompt_ids(vocab_size: int, n: int, seed: int = 0) -> list[int]:
    # Random ids from the lower vocab (ordinary tokens): prefill cost does not depend on their values.
    return np.random.default_rng(seed).integers(256, min(vocab_size, 32000) - 1, n).tolist()


def run_edgelm(
    model: str, threads: int, n_prompt: int, n_gen: int, reps: int, n_ctx: int
) -> dict[str, float]:
    import edgelm

    t0 = time.perf_counter()
    m = edgelm.load(model, n_ctx=n_ctx, n_threads=threads)
    load_s = time.perf_counter() - t0
    ban = dict.fromkeys(m.tokenizer.eog_ids, float("-inf"))
    prompt = _prompt_ids(m.config.vocab_size, n_prompt)
    prefill, decode, ttft = [], [], []
    for _ in range(reps):
        r = m.generate(prompt, max_tokens=n_gen, temperature=0.0, logit_bias=ban)
        t = r.timings
        prefill.append(t.prompt_tokens / (t.prompt_ms / 1000))
        decode.append(t.decode_tokens_per_s)
        ttft.append(t.ttft_ms / 1000)
    rss = _peak_rss_mb()  # one model loaded: its footprint (the second load below would count twice)
    vocab_size, backend = m.config.vocab_size, getattr(m.transformer.ops, "name", "?")
    del m  # a program loads its model once: the second load does not run beside the first
    gc.collect()
    first = _first_token_s(lambda: edgelm.load(model, n_ctx=n_ctx, n_threads=threads), vocab_size, "edgelm")
    return _summary(load_s, prefill, decode, ttft, first, rss, backend)


def _llama_cpp_next(llm) -> int:
    """Greedy next token from llama.cpp's logits of the last evaluated token (read in place)."""
    ptr = llm._ctx.get_logits_ith(-1)
    return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))))


def run_llama_cpp(
    model: str, threads: int, n_prompt: int, n_gen: int, reps: int, n_ctx: int
) -> dict[str, float]:
    from edgelm.bench.rival import avoid_amx

    note = avoid_amx()  # before the first model: its kernels are chosen at load
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(model_path=model, n_ctx=n_ctx, n_threads=threads, n_batch=512, verbose=False)
    load_s = time.perf_counter() - t0
    prompt = _prompt_ids(llm.n_vocab(), n_prompt)
    prefill, decode, ttft = [], [], []
    for _ in range(reps):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        tok = _llama_cpp_next(llm)
        t1 = time.perf_counter()
        for _ in range(n_gen - 1):
            llm.eval([tok])
            tok = _llama_cpp_next(llm)
        t2 = time.perf_counter()
        prefill.append(n_prompt / (t1 - t0))
        decode.append((n_gen - 1) / (t2 - t1))
        ttft.append(t1 - t0)
    rss = _peak_rss_mb()
    vocab_size = llm.n_vocab()
    llm.close()  # as for edgelm: the second load does not run beside the first
    del llm
    gc.collect()
    first = _first_token_s(
        lambda: Llama(model_path=model, n_ctx=n_ctx, n_threads=threads, n_batch=512, verbose=False),
        vocab_size,
        "llama.cpp",
    )
    summary = _summary(load_s, prefill, decode, ttft, first, rss, "llama.cpp")
    if note:
        summary["note"] = note
    return summary


def _first_token_s(open_model, vocab_size: int, engine: str) -> float:
    """Load → first token of a 16-token prompt: a second load in the process, after the first model
    is freed (the file is in the page cache, as for a program started again)."""
    prompt = _prompt_ids(vocab_size, 16, seed=1)
    t0 = time.perf_counter()
    m = open_model()
    if engine == "edgelm":
        m.generate(prompt, max_tokens=1, temperature=0.0)
    else:
        m.eval(prompt)
        _llama_cpp_next(m)
    return time.perf_counter() - t0


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summary(load_s, prefill, decode, ttft, first_token_s, peak_rss_mb, backend) -> dict:
    return {
        "load_s": load_s,
        "prefill_tok_s": statistics.median(prefill),
        "decode_tok_s": statistics.median(decode),
        "ttft_s": statistics.median(ttft),
        "load_to_first_token_s": first_token_s,
        "peak_rss_mb": peak_rss_mb,
        "backend": backend,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--engine", choices=["edgelm", "llama.cpp"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--gen", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--ctx", type=int, default=4096)
    a = p.parse_args(argv)
    run = run_edgelm if a.engine == "edgelm" else run_llama_cpp
    print(json.dumps(run(a.model, a.threads, a.prompt, a.gen, a.reps, a.ctx)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
