"""The engine: several sequences decoding together, a fair queue, prefix reuse, live timing estimates.

One background thread runs a loop of *steps*.  Each step builds one batch for one forward pass: a
token for every slot that is decoding, plus a chunk of the prompt of slots still prefilling (so a long
prompt never stalls the others for its whole length), then samples where a sequence needs a token.
Between steps the scheduler may admit, reorder or drop sequences: waiting requests are taken by
priority then arrival, and a cancelled request (a client that went away) frees its slot at the next
step.  A new request takes the free slot whose cached tokens share the longest prefix with its prompt
and keeps those KV entries (the system prompt and earlier turns of a chat are not computed again).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from edgelm.errors import EdgelmError
from edgelm.models.transformer import Transformer
from edgelm.runtime.generate import GenerationChunk, Timings, accept_token
from edgelm.runtime.kv_cache import SequenceCache
from edgelm.runtime.sampling import LogitsProcessor, Sampler, SamplingParams, make_sampler
from edgelm.runtime.stop import StopChecker
from edgelm.tokenizer import StreamingDetokenizer, Tokenizer

__all__ = ["Engine", "EngineStats", "QueueFullError", "Request", "RequestHandle"]

# Prompt tokens one slot feeds per step while others decode.
DEFAULT_PREFILL_CHUNK = 256
# Weight of the newest sample in the moving averages of step timings.
EMA_ALPHA = 0.2


class QueueFullError(EdgelmError):
    """All slots are busy and the waiting queue is full: try again later."""


@dataclass
class Request:
    """One generation: prompt ids, sampling, stopping, and where its chunks go."""

    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    on_chunk: Callable[[GenerationChunk], None]  # called on the engine thread; must not block
    stop: tuple[str, ...] = ()
    processors: Sequence[LogitsProcessor] = ()
    priority: int = 0  # lower runs first
    logprobs: int | None = None  # None: none; k >= 0: each token's logprob and its k likeliest alternatives


@dataclass
class RequestHandle:
    request: Request
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class EngineStats:
    queue_depth: int
    active: int
    n_slots: int
    decode_step_ms: float  # moving average of a decode step
    prefill_tokens_per_s: float  # moving average
    generated_tokens: int
    completed: int


class _Slot:
    """A KV cache and the sequence currently using it."""

    def __init__(self, index: int, cache: SequenceCache) -> None:
        self.index = index
        self.cache = cache
        # Prompt and generated ids, preallocated for the whole context: no allocation per token.
        self.history = np.empty(cache.n_ctx + 1, dtype=np.int64)
        self.n_history = 0
        self.tokens: list[int] = []  # the tokens whose K/V are in the cache, in order
        self.handle: RequestHandle | None = None
        self.todo: list[int] = []  # prompt tokens not yet fed
        self.sampler: Sampler | None = None
        self.checker: StopChecker | None = None
        self.detok: StreamingDetokenizer | None = None
        self.timings = Timings()
        self.t_start = 0.0
        self.t_first = 0.0
        self.n_generated = 0
        self.max_new = 0

    @property
    def busy(self) -> bool:
        return self.handle is not None


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """log-probabilities of a logits row, float64 (V,)."""
    x = logits.astype(np.float64)
    x -= x.max()
    x -= np.log(np.exp(x).sum())
    return x


def _top_logprobs(logprobs: np.ndarray, k: int | None) -> tuple[tuple[int, float], ...]:
    """The `k` most likely (id, logprob), best first."""
    k = min(k or 0, logprobs.shape[0])
    if k <= 0:
        return ()
    ids = np.argpartition(-logprobs, k - 1)[:k]
    ids = ids[np.argsort(-logprobs[ids], kind="stable")]
    return tuple((int(i), float(logprobs[i])) for i in ids)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


T = TypeVar("T")


def _settle(future: Future[T], fn: Callable[[], T]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn())
    except BaseException as e:  # the caller's to see
        future.set_exception(e)


class Engine:
    """Batched generation for many clients over one model."""

    def __init__(
        self,
        transformer: Transformer,
        tokenizer: Tokenizer,
        *,
        n_slots: int = 1,
        n_ctx: int = 4096,
        max_queue: int = 64,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        load_ms: float = 0.0,
    ) -> None:
        self.model = transformer
        self.tokenizer = tokenizer
        self.n_ctx = n_ctx
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.load_ms = load_ms
        self.slots = [_Slot(i, transformer.new_cache(n_ctx)) for i in range(n_slots)]
        self._waiting: list[tuple[int, int, RequestHandle]] = []  # heap of (priority, arrival, handle)
        self._arrival = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._calls: list[tuple[Callable[[], Any], Future[Any]]] = []  # run on the engine thread
        self._running = False
        self.decode_step_ms = 0.0
        self.prefill_tokens_per_s = 0.0
        self.generated_tokens = 0
        self.completed = 0

    # -- client side ---------------------------------------------------------------------------

    def submit(self, request: Request) -> RequestHandle:
        """Queue a request; raises QueueFullError when the queue is full."""
        if len(request.prompt) >= self.n_ctx:
            raise ValueError(f"prompt has {len(request.prompt)} tokens but the context holds {self.n_ctx}")
        handle = RequestHandle(request)
        with self._cv:
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"{len(self._waiting)} requests are already waiting")
            heapq.heappush(self._waiting, (request.priority, next(self._arrival), handle))
            self._cv.notify()
        return handle

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on the engine's thread between two steps (the model's kernels serve one caller at a
        time): for work beside generation, such as an embedding. Without a running loop, at once."""
        future: Future[T] = Future()
        if self._thread is None:
            _settle(future, fn)
            return future
        with self._cv:
            self._calls.append((fn, future))
            self._cv.notify()
        return future

    def stats(self) -> EngineStats:
        with self._cv:
            depth = len(self._waiting)
        return EngineStats(
            queue_depth=depth,
            active=sum(s.busy for s in self.slots),
            n_slots=len(self.slots),
            decode_step_ms=self.decode_step_ms,
            prefill_tokens_per_s=self.prefill_tokens_per_s,
            generated_tokens=self.generated_tokens,
            completed=self.completed,
        )

    def start(self) -> None:
        if self._thread is None:
            self._running = True
            self._thread = threading.Thread(target=self._run, name="edgelm-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._running = False
            self._cv.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- engine side ---------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the background loop is running (or was never started)."""
        return self._thread is None or self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cv:
                while (
                    self._running
                    and not self._waiting
                    and not self._calls
                    and not any(s.busy for s in self.slots)
                ):
                    self._cv.wait()
                if not self._running:
                    for _, future in self._calls:
                        future.cancel()
                    return
                calls, self._calls = self._calls, []
            for fn, future in calls:
                _settle(future, fn)
            try:
                self.step()
            except Exception as e:  # never let one bad step kill the loop: end what was running
                for s in self.slots:
                    if s.busy:
                        self._finish(s, f"engine step failed: {e}")

    def step(self) -> None:
        """One scheduling round and one forward pass."""
        self._drop_cancelled()
        self._admit()
        active = [s for s in self.slots if s.busy]
        if not active:
            return
        rows: list[int] = []
        positions: list[int] = []
        lengths: list[int] = []
        caches: list[SequenceCache] = []
        samplers: list[_Slot] = []
        logit_rows: list[int] = []
        n_prefill = 0
        for s in active:
            if s.todo:
                feed = s.todo[: self.prefill_chunk]
                s.todo = s.todo[len(feed) :]
                n_prefill += len(feed)
            else:
                feed = [int(s.history[s.n_history - 1])]
            start = len(s.tokens)
            rows.extend(feed)
            positions.extend(range(start, start + len(feed)))
            lengths.append(len(feed))
            caches.append(s.cache)
            s.tokens.extend(feed)
            if not s.todo:
                logit_rows.append(len(rows) - 1)
                samplers.append(s)
        t0 = time.perf_counter()
        try:
            logits = self.model.forward(
                np.asarray(rows),
                np.asarray(positions),
                caches,
                lengths,
                np.asarray(logit_rows, dtype=np.int64),
            )
        except Exception as e:  # a failed step ends its sequences with an error, not the engine
            for s in active:
                self._finish(s, f"forward pass failed: {e}")
            return
        elapsed = time.perf_counter() - t0
        if n_prefill:
            rate = n_prefill / elapsed
            self.prefill_tokens_per_s += (
                EMA_ALPHA * (rate - self.prefill_tokens_per_s) if self.prefill_tokens_per_s else rate
            )
        else:
            ms = 1000 * elapsed
            self.decode_step_ms += EMA_ALPHA * (ms - self.decode_step_ms) if self.decode_step_ms else ms
        for row, s in enumerate(samplers):
            try:
                self._sample(s, logits[row])
            except Exception as e:  # e.g. a processor that fails: only its sequence ends
                self._finish(s, f"sampling failed: {e}")

    def _drop_cancelled(self) -> None:
        for s in self.slots:
            if s.handle is not None and s.handle.cancelled.is_set():
                self._release(s)
        with self._cv:
            if any(h.cancelled.is_set() for _, _, h in self._waiting):
                self._waiting = [w for w in self._waiting if not w[2].cancelled.is_set()]
                heapq.heapify(self._waiting)

    def _admit(self) -> None:
        while True:
            free = [s for s in self.slots if not s.busy]
            if not free:
                return
            with self._cv:
                if not self._waiting:
                    return
                _, _, handle = heapq.heappop(self._waiting)
            prompt = handle.request.prompt
            slot = max(free, key=lambda s: _common_prefix(s.tokens, prompt))
            try:
                self._start(slot, handle)
            except Exception as e:  # a request the engine cannot start ends with an error, alone
                slot.handle = handle
                self._finish(slot, f"cannot start: {e}")

    def _start(self, s: _Slot, handle: RequestHandle) -> None:
        req = handle.request
        # Reuse the cached prefix, but always feed at least the last prompt token to get its logits.
        keep = min(_common_prefix(s.tokens, req.prompt), len(req.prompt) - 1)
        if not s.cache.can_trim(keep):
            keep = 0
        s.cache.trim(keep)
        del s.tokens[keep:]
        s.handle = handle
        s.todo = list(req.prompt[keep:])
        s.history[: len(req.prompt)] = req.prompt
        s.n_history = len(req.prompt)
        s.sampler = make_sampler(req.params, self.model.config.vocab_size, req.processors)
        s.checker = StopChecker(eog_ids=self.tokenizer.eog_ids, stop=req.stop, max_tokens=req.max_tokens)
        s.detok = self.tokenizer.stream()
        s.max_new = min(req.max_tokens, self.n_ctx - len(req.prompt))
        s.n_generated = 0
        s.t_start = handle.submitted
        s.timings = Timings(
            load_ms=self.load_ms,
            prompt_tokens=len(req.prompt),
            cached_prompt_tokens=keep,
            backend=self.model.ops.name,
        )

    def _sample(self, s: _Slot, logits: np.ndarray) -> None:
        assert (
            s.handle is not None and s.checker is not None and s.sampler is not None and s.detok is not None
        )
        history = s.history[: s.n_history]
        n_top = s.handle.request.logprobs
        # The sampler overwrites the logits: take the log-probabilities first (only when asked for).
        logprobs = None if n_top is None else _log_softmax(logits)
        tok = s.sampler.sample(logits, history)
        lp, top = (None, None) if logprobs is None else (float(logprobs[tok]), _top_logprobs(logprobs, n_top))
        now = time.perf_counter()
        s.n_generated += 1
        self.generated_tokens += 1
        if s.n_generated == 1:
            s.t_first = now
            ms = 1000 * (now - s.t_start)
            s.timings = replace(s.timings, prompt_ms=ms, ttft_ms=ms)
        s.timings = replace(s.timings, decode_tokens=s.n_generated, decode_ms=1000 * (now - s.t_first))
        s.history[s.n_history] = tok
        s.n_history += 1
        checker = s.checker
        out = accept_token(checker, s.detok, tok, last=s.n_generated >= s.max_new)
        if checker.finish_reason is not None:
            self._emit(s, GenerationChunk(out, tok, checker.finish_reason.value, s.timings, lp, top))
            self.completed += 1
            self._release(s)
        else:
            self._emit(s, GenerationChunk(out, tok, None, s.timings, lp, top))

    def _emit(self, s: _Slot, chunk: GenerationChunk) -> None:
        assert s.handle is not None
        try:
            s.handle.request.on_chunk(chunk)
        except Exception:  # a broken consumer cancels its own request only
            s.handle.cancel()

    def _finish(self, s: _Slot, error: str) -> None:
        """End the slot's request with an error chunk; the cache is dropped (it may be half-written)."""
        if s.handle is not None:
            self._emit(s, GenerationChunk("", None, f"error: {error}", s.timings))
        self._release(s)
        s.cache.reset()
        s.tokens.clear()

    def _release(self, s: _Slot) -> None:
        """Free the slot; its cache keeps the prompt and generated tokens for prefix reuse."""
        s.handle = None
        s.todo = []
        # The last sampled token was never fed, so it is not in the cache.
        del s.tokens[s.cache.n_tokens :]
