"""The generation loop, in layers: token ids → typed chunks with timings.

`generate_tokens` is the hot path: prefill, then one forward and one sample per token, no logging, no
per-token allocation beyond what the forward pass needs.  `stream_chunks` adds detokenization, stop
handling and timings on top of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from edgelm.models.transformer import Transformer
from edgelm.runtime.kv_cache import SequenceCache
from edgelm.runtime.sampling import Sampler
from edgelm.runtime.stop import FinishReason, StopChecker
from edgelm.tokenizer import StreamingDetokenizer, Tokenizer

__all__ = ["GenerationChunk", "GenerationResult", "Timings", "generate_tokens", "stream_chunks"]

# Prompts are prefilled in chunks of at most this many tokens, bounding activation memory.
PREFILL_CHUNK = 512


@dataclass(frozen=True)
class Timings:
    """Where the time of one request went (milliseconds)."""

    load_ms: float = 0.0  # loading the model (once per model)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens whose KV entries were reused
    prompt_ms: float = 0.0  # prefill
    ttft_ms: float = 0.0  # request start → first generated token
    decode_tokens: int = 0
    decode_ms: float = 0.0  # first → last generated token
    backend: str = ""  # the kernels that ran: "avx512", "avx2", "neon", "scalar" or "numpy"

    @property
    def prompt_tokens_per_s(self) -> float:
        n = self.prompt_tokens - self.cached_prompt_tokens
        return 1000.0 * n / self.prompt_ms if self.prompt_ms > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        # The first token comes out of the prefill; decode speed counts the ones after it.
        n = self.decode_tokens - 1
        return 1000.0 * n / self.decode_ms if n > 0 and self.decode_ms > 0 else 0.0


@dataclass(frozen=True)
class GenerationChunk:
    """One step of a stream: the text it adds (may be "" while a stop string is pending)."""

    text: str
    token_id: int | None
    finish_reason: str | None
    timings: Timings
    # Only when the request asked for them: the sampled token's log-probability under the model's raw
    # logits (before any processor), and the most likely tokens as (id, logprob), best first.
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] | None = None


@dataclass(frozen=True)
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str
    timings: Timings
    prompt_token_ids: list[int] = field(default_factory=list)


def prefill(model: Transformer, cache: SequenceCache, tokens: Sequence[int], start: int) -> np.ndarray:
    """Feed `tokens` at positions start.. into `cache`; logits of the last one, float32 (V,)."""
    ids = np.asarray(tokens, dtype=np.int64)
    logits: np.ndarray | None = None
    for s in range(0, len(ids), PREFILL_CHUNK):
        chunk = ids[s : s + PREFILL_CHUNK]
        pos = np.arange(start + s, start + s + len(chunk))
        logits = model.forward(chunk, pos, [cache], logit_rows=np.array([len(chunk) - 1]))
    assert logits is not None
    return logits[0]


def generate_tokens(
    model: Transformer,
    cache: SequenceCache,
    prompt: Sequence[int],
    sampler: Sampler,
    max_new: int,
    n_cached: int = 0,
) -> Iterator[int]:
    """Yield up to `max_new` sampled token ids after `prompt` (whose first `n_cached` are in `cache`)."""
    n = len(prompt)
    history = np.empty(n + max_new, dtype=np.int64)
    history[:n] = prompt
    logits = prefill(model, cache, prompt[n_cached:], n_cached)
    token = np.empty(1, dtype=np.int64)
    position = np.empty(1, dtype=np.int64)
    for _ in range(max_new):
        tok = sampler.sample(logits, history[:n])
        yield tok
        history[n] = tok
        token[0], position[0] = tok, n
        n += 1
        logits = model.forward(token, position, [cache])[0]


def accept_token(checker: StopChecker, detok: StreamingDetokenizer, token: int, last: bool) -> str:
    """The text to show for one sampled token.

    On the last token of the budget the detokenizer's held-back bytes join the token's own text before
    the stop-string check, so a stop string that ends there is still caught and never shown.
    """
    eog = checker.is_eog(token)
    text = "" if eog else detok.add(token)
    if last and not eog:
        text += detok.flush()
    out = checker.accept(token, text)
    if last and not checker.done:
        out += checker.finish(FinishReason.LENGTH)
    return out


def stream_chunks(
    model: Transformer,
    tokenizer: Tokenizer,
    cache: SequenceCache,
    prompt: Sequence[int],
    sampler: Sampler,
    stop: StopChecker,
    max_new: int,
    base: Timings,
    n_cached: int = 0,
) -> Iterator[GenerationChunk]:
    """Chunks of text with timings; the last one carries the finish reason."""
    t0 = time.perf_counter()
    detok = tokenizer.stream()
    timings = replace(base, prompt_tokens=len(prompt), cached_prompt_tokens=n_cached)
    t_first = 0.0
    for count, tok in enumerate(generate_tokens(model, cache, prompt, sampler, max_new, n_cached), start=1):
        now = time.perf_counter()
        if count == 1:
            t_first = now
            timings = replace(timings, prompt_ms=1000 * (now - t0), ttft_ms=1000 * (now - t0))
        timings = replace(timings, decode_tokens=count, decode_ms=1000 * (now - t_first))
        out = accept_token(stop, detok, tok, last=count >= max_new)
        if stop.finish_reason is not None:
            yield GenerationChunk(out, tok, stop.finish_reason.value, timings)
            return
        yield GenerationChunk(out, tok, None, timings)
    # Nothing was generated (no room left, or max_tokens=0).
    yield GenerationChunk(stop.finish(FinishReason.LENGTH), None, FinishReason.LENGTH.value, timings)
