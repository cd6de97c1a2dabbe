"""From an OpenAI request to an engine request, and the engine's chunks back onto the event loop.

`prepare_chat` / `prepare_completion` turn a request body into what the engine needs (prompt ids,
sampling, stop strings, logits processors), raising 4xx errors that name the field at fault.
`Generation` submits it and hands the chunks, which the engine emits on its own thread, to the asyncio
loop; when the consumer goes away (client disconnect) the engine request is cancelled.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgelm.api.model import Model, PromptTooLongError
from edgelm.runtime.engine import Engine, Request, RequestHandle
from edgelm.runtime.generate import GenerationChunk
from edgelm.runtime.sampling import SCALAR_FIELDS, InvalidParamError, LogitsProcessor, SamplingParams
from edgelm.runtime.stop import normalize_stop
from edgelm.server.errors import APIError
from edgelm.server.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest
from edgelm.server.tools import OutputPlan, plan_output

__all__ = ["DISCONNECT_POLL_S", "Generation", "Prepared", "prepare_chat", "prepare_completion"]

# How often a non-streaming request checks whether its client is still there.
DISCONNECT_POLL_S = 0.2


@dataclass(frozen=True)
class Prepared:
    """Everything the engine needs for one request, and how to present its output."""

    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    stop: tuple[str, ...] = ()
    processors: tuple[LogitsProcessor, ...] = ()
    logprobs: int | None = None  # None: none; k: each token's logprob and k alternatives
    output: OutputPlan = field(default_factory=OutputPlan)


def _sampling(body: ChatCompletionRequest | CompletionRequest, vocab_size: int) -> SamplingParams:
    kw: dict[str, Any] = {k: v for k in SCALAR_FIELDS if (v := getattr(body, k)) is not None}
    if body.logit_bias:
        bias: dict[int, float] = {}
        for key, value in body.logit_bias.items():
            if not key.isdigit() or int(key) >= vocab_size:
                raise InvalidParamError(
                    "logit_bias", key, f"keys must be token ids in [0, {vocab_size}) written as strings"
                )
            bias[int(key)] = value
        kw["logit_bias"] = bias
    return SamplingParams(**kw)


def _check_common(body: ChatCompletionRequest | CompletionRequest) -> None:
    if body.n != 1:
        raise APIError(400, "only n=1 is supported", param="n", code="unsupported_value")


def _fit(model: Model, ids: list[int], param: str) -> list[int]:
    if len(ids) >= model.n_ctx:
        raise APIError(
            400,
            f"This model's context holds {model.n_ctx} tokens, but the prompt has {len(ids)} "
            "(and at least one token must be generated).",
            param=param,
            code="context_length_exceeded",
        )
    return ids


def _text_content(message: ChatMessage, index: int) -> str:
    """A message's content as one string: text parts joined; other kinds of parts refused."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise APIError(
                400,
                f"content parts of type {part.type!r} are not supported by this model (only 'text')",
                param=f"messages[{index}].content[{j}]",
                code="unsupported_value",
            )
        texts.append(part.text)
    return "".join(texts)


def _template_message(message: ChatMessage, index: int) -> dict[str, Any]:
    """A message as chat templates expect it (Hugging Face's conventions)."""
    out: dict[str, Any] = {
        "role": "system" if message.role == "developer" else message.role,
        "content": _text_content(message, index),
    }
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        calls = []
        for call in message.tool_calls:
            # Templates write the arguments with `tojson`: give them the object, not its JSON text.
            try:
                arguments: Any = json.loads(call.function.arguments)
            except ValueError:
                arguments = call.function.arguments
            calls.append(
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": arguments},
                }
            )
        out["tool_calls"] = calls
    return out


def prepare_chat(model: Model, body: ChatCompletionRequest, cap: int | None = None) -> Prepared:
    """The engine request of a chat completion (runs the chat template and the tokenizer)."""
    _check_common(body)
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    params = _sampling(body, model.config.vocab_size)
    stop = normalize_stop(body.stop)
    output = plan_output(body, model.tokenizer)
    messages = [_template_message(m, i) for i, m in enumerate(body.messages)]
    tools: Sequence[Mapping[str, Any]] | None = None
    if body.tools and output.tool_mode != "none":
        tools = [t.model_dump(exclude_none=True) for t in body.tools]
    prompt = model.chat_prompt(messages, tools)
    ids = _fit(model, model.encode_prompt(prompt), "messages")
    max_tokens = _capped(body.max_completion_tokens or body.max_tokens, model, cap)
    processors: tuple[LogitsProcessor, ...] = ()
    if output.grammar is not None:
        # Told the budget, the grammar closes the JSON before max_tokens or the context runs out.
        processors = (output.grammar.processor(max_tokens=min(max_tokens, model.n_ctx - len(ids))),)
    return Prepared(
        prompt=ids,
        params=params,
        max_tokens=max_tokens,
        stop=stop,
        processors=processors,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        output=output,
    )


def _capped(asked: int | None, model: Model, cap: int | None) -> int:
    """Tokens a request may generate: what it asks for (else the context), at most the server's cap."""
    limit = cap or model.n_ctx
    return min(asked, limit) if asked else limit


def prepare_completion(model: Model, body: CompletionRequest, cap: int | None = None) -> Prepared:
    """The engine request of a text completion."""
    _check_common(body)
    if body.echo:
        raise APIError(400, "echo is not supported", param="echo", code="unsupported_value")
    if body.suffix:
        raise APIError(400, "suffix is not supported", param="suffix", code="unsupported_value")
    if body.best_of is not None and body.best_of != 1:
        raise APIError(400, "only best_of=1 is supported", param="best_of", code="unsupported_value")
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise APIError(400, "only one prompt per request is supported", param="prompt")
        prompt = prompt[0]
    try:
        ids = model.encode_prompt(prompt)  # type: ignore[arg-type]
    except (InvalidParamError, PromptTooLongError) as e:
        raise APIError(400, str(e), param="prompt") from None
    return Prepared(
        prompt=_fit(model, ids, "prompt"),
        params=_sampling(body, model.config.vocab_size),
        max_tokens=_capped(body.max_tokens, model, cap),
        stop=normalize_stop(body.stop),
        logprobs=body.logprobs,
    )


class Generation:
    """One request in the engine, seen from the event loop.

    Submitting raises `QueueFullError` at once when the queue is full (the caller answers 429 before any
    byte of the response). `chunks()` yields the engine's chunks in order; leaving it early (the client
    went away, the stream was closed) cancels the engine request, whose slot is freed at the next step.
    """

    def __init__(
        self, engine: Engine, prepared: Prepared, on_cancel: Callable[[], None] | None = None
    ) -> None:
        self.prepared = prepared
        self._on_cancel = on_cancel  # called once if the request is cancelled before it finished
        self._loop = asyncio.get_running_loop()
        # Unbounded, but a request makes at most max_tokens chunks, fewer than the context holds.
        self._queue: asyncio.Queue[GenerationChunk | None] = asyncio.Queue()
        self.finished = False
        self.cancelled = False
        self.handle: RequestHandle = engine.submit(
            Request(
                prepared.prompt,
                prepared.params,
                prepared.max_tokens,
                self._on_chunk,
                stop=prepared.stop,
                processors=prepared.processors,
                logprobs=prepared.logprobs,
            )
        )

    def _on_chunk(self, chunk: GenerationChunk) -> None:
        # Engine thread: never block, only hand over. Raises once the loop is closed, which cancels.
        self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)

    def cancel(self) -> None:
        """Stop the engine request unless it finished; safe to call any number of times."""
        if not self.finished and not self.cancelled:
            self.cancelled = True
            self.handle.cancel()
            self._queue.put_nowait(None)  # wakes a consumer waiting for the next chunk
            if self._on_cancel is not None:
                self._on_cancel()

    async def _watch(self, disconnected: Callable[[], Awaitable[bool]]) -> None:
        while not self.finished:
            await asyncio.sleep(DISCONNECT_POLL_S)
            if await disconnected():
                self.cancel()
                return

    async def chunks(
        self, disconnected: Callable[[], Awaitable[bool]] | None = None
    ) -> AsyncIterator[GenerationChunk]:
        """The chunks until the one with a finish reason; `disconnected` is polled while waiting."""
        watcher = None if disconnected is None else asyncio.create_task(self._watch(disconnected))
        try:
            while True:
                chunk = await self._queue.get()
                if chunk is None:
                    return
                if chunk.finish_reason is not None:
                    self.finished = True
                yield chunk
                if self.finished:
                    return
        finally:
            if watcher is not None:
                watcher.cancel()
            self.cancel()
