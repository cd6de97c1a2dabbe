"""`edgelm.load(path)` → `Model`: generate, stream_generate, chat, stream_chat, logits."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from edgelm.errors import EdgelmError
from edgelm.kernels.ops import select_ops
from edgelm.models.config import ModelConfig
from edgelm.models.model_file import ModelFile
from edgelm.models.registry import build_model
from edgelm.models.transformer import Transformer
from edgelm.runtime.generate import GenerationChunk, GenerationResult, Timings, stream_chunks
from edgelm.runtime.kv_cache import sequence_cache_bytes
from edgelm.runtime.sampling import InvalidParamError, LogitsProcessor, Sampler, SamplingParams, make_sampler
from edgelm.runtime.stop import StopChecker
from edgelm.store import resolve_model
from edgelm.tokenizer import Tokenizer

__all__ = [
    "DEFAULT_N_CTX",
    "GenerationStream",
    "Model",
    "PromptTooLongError",
    "available_memory",
    "check_kv_memory",
    "load",
]

DEFAULT_N_CTX = 4096

Prompt = str | Sequence[int]
Message = Mapping[str, Any]


class PromptTooLongError(EdgelmError, ValueError):
    """The prompt does not fit in the context."""


def load(model: str | os.PathLike[str], *, n_ctx: int | None = None, n_threads: int | None = None) -> Model:
    """Open a GGUF model: weights memory-mapped in their quantized form, tokenizer from its metadata.

    `model` is a path, or a model's name (`"smollm2-135m-instruct"`, `"hf:OWNER/REPO/FILE.gguf"`,
    `"OWNER/REPO:Q4_K_M"`): a stored model, else pulled into the store first. A path that exists is
    always a path. `n_ctx` defaults to min(the model's context, 4096); the KV cache is sized from it.
    """
    for field, value in (("n_ctx", n_ctx), ("n_threads", n_threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidParamError(field, value, "must be a positive integer")
    path = resolve_model(model)
    t0 = time.perf_counter()
    mf = ModelFile.open(path)
    ops = select_ops(n_threads=n_threads)
    transformer = build_model(mf, ops)
    tokenizer = Tokenizer.from_metadata(mf.gguf.metadata, mf.path)
    n_ctx = n_ctx or min(mf.config.context_length, DEFAULT_N_CTX)
    check_kv_memory(transformer, n_ctx)
    threads = getattr(ops, "n_threads", None) or n_threads or os.cpu_count() or 1
    model = Model(transformer, tokenizer, n_ctx, threads, 1000 * (time.perf_counter() - t0))
    _release_free_memory()  # heap the load allocated and freed
    return model


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (Linux MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_kv_memory(transformer: Transformer, n_ctx: int, n_seqs: int = 1) -> None:
    """Refuse, before allocating, KV caches for `n_seqs` sequences of `n_ctx` tokens that the memory
    available cannot hold."""
    need = sequence_cache_bytes(transformer.config, n_ctx) * n_seqs
    have = available_memory()
    if have is not None and need > have:
        seqs = f" for {n_seqs} sequences" if n_seqs > 1 else ""
        raise InvalidParamError(
            "n_ctx",
            n_ctx,
            f"a KV cache of {n_ctx} tokens{seqs} needs {need / 1e9:.1f} GB, and {have / 1e9:.1f} GB of "
            "memory is available: ask for a smaller context (--ctx)",
        )


def _release_free_memory() -> None:
    try:
        from edgelm import _native
    except ImportError:
        return
    _native.release_free_memory()


class GenerationStream(Iterator[GenerationChunk]):
    """The chunks of one generation, and the prompt's token ids (as encoded, before any truncation)."""

    def __init__(self, prompt_ids: list[int], chunks: Generator[GenerationChunk, None, None]) -> None:
        self.prompt_ids = prompt_ids
        self._chunks = chunks

    def __next__(self) -> GenerationChunk:
        return next(self._chunks)

    def close(self) -> None:
        """Stop the generation (the KV cache is reset for the next call)."""
        self._chunks.close()


class Model:
    """A loaded model with one KV cache: calls run one at a time (a lock guards the cache)."""

    def __init__(
        self, transformer: Transformer, tokenizer: Tokenizer, n_ctx: int, n_threads: int, load_ms: float
    ):
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.load_ms = load_ms
        self._cache = transformer.new_cache(n_ctx)
        self._lock = threading.Lock()

    @property
    def config(self) -> ModelConfig:
        return self.transformer.config

    # -- text ----------------------------------------------------------------------------------

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: text is tokenized with BOS as the model wants, special tokens parsed."""
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special=True, parse_special=True)
        else:
            ids = [int(t) for t in prompt]
            bad = [t for t in ids if not 0 <= t < self.config.vocab_size]
            if bad:
                raise InvalidParamError(
                    "prompt", bad[0], f"token id out of range [0, {self.config.vocab_size})"
                )
        if not ids:
            raise InvalidParamError("prompt", prompt, "is empty (and the model adds no BOS token)")
        return ids

    def _fit(self, ids: list[int], max_tokens: int, truncate: bool) -> list[int]:
        limit = self.n_ctx - 1
        if len(ids) > limit:
            if not truncate:
                raise PromptTooLongError(
                    f"prompt has {len(ids)} tokens but the context holds {self.n_ctx} "
                    f"(load with a larger n_ctx, or pass truncate=True to keep the last {limit})"
                )
            ids = ids[len(ids) - limit :]
        return ids

    def tokenize(self, text: str | bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of `text` (bytes are read as UTF-8): BOS first if the model wants one and
        `add_bos`; special tokens written in the text are parsed only when `special`."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InvalidParamError(
                    "text", text[:16], f"is not UTF-8 ({e.reason} at byte {e.start})"
                ) from None
        return self.tokenizer.encode(text, add_special=add_bos, parse_special=special)

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        """The text of token ids; special tokens (BOS, end of turn) are left out unless `special`."""
        return self.tokenizer.decode(list(ids), special=special)

    # -- generation ----------------------------------------------------------------------------

    def stream_generate(
        self,
        prompt: Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logit_bias: Mapping[int, float] | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        truncate: bool = False,
        processors: Sequence[LogitsProcessor] = (),
    ) -> GenerationStream:
        """Yield text as it is generated; the last chunk has `finish_reason` ("stop" or "length").

        `processors` (e.g. a grammar's) run after the bias and penalties, before truncation."""
        params = SamplingParams(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            repeat_last_n=repeat_last_n,
            presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty,
            logit_bias=logit_bias,
            seed=seed,
        )
        checker = StopChecker(eog_ids=self.tokenizer.eog_ids, stop=stop, max_tokens=max_tokens)
        encoded = self.encode_prompt(prompt)
        ids = self._fit(encoded, max_tokens, truncate)
        sampler = make_sampler(params, self.config.vocab_size, processors)
        max_new = min(max_tokens, self.n_ctx - len(ids))
        return GenerationStream(encoded, self._locked_stream(ids, sampler, checker, max_new))

    def _locked_stream(
        self, ids: list[int], sampler: Sampler, checker: StopChecker, max_new: int
    ) -> Generator[GenerationChunk, None, None]:
        with self._lock:
            self._cache.reset()
            try:
                yield from stream_chunks(
                    self.transformer,
                    self.tokenizer,
                    self._cache,
                    ids,
                    sampler,
                    checker,
                    max_new,
                    Timings(load_ms=self.load_ms, backend=self.transformer.ops.name),
                )
            finally:
                # An interrupted generation leaves a half-filled cache; the next call starts clean.
                self._cache.reset()

    def generate(self, prompt: Prompt, **kwargs: Any) -> GenerationResult:
        """Generate a completion of `prompt`; keyword arguments as `stream_generate`."""
        parts: list[str] = []
        tokens: list[int] = []
        last: GenerationChunk | None = None
        stream = self.stream_generate(prompt, **kwargs)
        for chunk in stream:
            parts.append(chunk.text)
            if chunk.token_id is not None:
                tokens.append(chunk.token_id)
            last = chunk
        assert last is not None and last.finish_reason is not None
        if tokens and tokens[-1] in self.tokenizer.eog_ids:
            tokens.pop()
        return GenerationResult("".join(parts), tokens, last.finish_reason, last.timings, stream.prompt_ids)

    def chat_prompt(
        self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> str:
        """The prompt the model's chat template makes of `messages`."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=tools)

    def stream_chat(
        self, messages: Sequence[Message], *, tools: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any
    ) -> GenerationStream:
        return self.stream_generate(self.chat_prompt(messages, tools), **kwargs)

    def chat(
        self, messages: Sequence[Message], *, tools: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any
    ) -> GenerationResult:
        return self.generate(self.chat_prompt(messages, tools), **kwargs)

    # -- scoring -------------------------------------------------------------------------------

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits after each token, float32 (T, vocab): for evaluation and fidelity checks."""
        ids = self.encode_prompt(list(token_ids))
        if len(ids) > self.n_ctx:
            raise PromptTooLongError(f"{len(ids)} tokens do not fit in the context of {self.n_ctx}")
        with self._lock:
            self._cache.reset()
            try:
                return self.transformer.forward(np.asarray(ids), np.arange(len(ids)), [self._cache])
            finally:
                self._cache.reset()

    def embed(self, text: Prompt, normalize: bool = True) -> np.ndarray:
        """An embedding of `text` (or token ids): the final hidden states (after the output norm)
        averaged over its tokens, float32 (E,), of unit length unless `normalize=False` (as
        llama.cpp's mean pooling gives for a model without a pooling of its own)."""
        ids = self.encode_prompt(text)
        if len(ids) > self.n_ctx:
            raise PromptTooLongError(f"{len(ids)} tokens do not fit in the context of {self.n_ctx}")
        with self._lock:
            self._cache.reset()
            try:
                h = self.transformer.hidden(np.asarray(ids), np.arange(len(ids)), [self._cache])
            finally:
                self._cache.reset()
        v = h.astype(np.float64).mean(axis=0)
        if normalize:
            v /= max(float(np.linalg.norm(v)), 1e-12)
        return v.astype(np.float32)

    def __repr__(self) -> str:
        c = self.config
        return f"Model({c.arch}, {c.name!r}, n_ctx={self.n_ctx})"
