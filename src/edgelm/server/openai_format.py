"""Engine chunks as OpenAI JSON: `chat.completion`, `chat.completion.chunk`, `text_completion`.

Every response, and the last chunk of every stream, carries `usage` and edgelm's `timings` (where the
time went, and how much of the prompt came from the prefix cache).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgelm.runtime.generate import GenerationChunk, Timings
from edgelm.server.tools import ToolCall
from edgelm.tokenizer import Tokenizer

__all__ = [
    "Completion",
    "chat_chunk",
    "chat_logprobs",
    "chat_response",
    "new_id",
    "text_chunk",
    "text_logprobs",
    "text_response",
    "timings_json",
    "usage_json",
]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def timings_json(t: Timings) -> dict[str, Any]:
    return {
        "prompt_tokens": t.prompt_tokens,
        "cached_prompt_tokens": t.cached_prompt_tokens,
        "prompt_ms": round(t.prompt_ms, 3),
        "prompt_tokens_per_s": round(t.prompt_tokens_per_s, 3),
        "ttft_ms": round(t.ttft_ms, 3),
        "decode_tokens": t.decode_tokens,
        "decode_ms": round(t.decode_ms, 3),
        "decode_tokens_per_s": round(t.decode_tokens_per_s, 3),
        "load_ms": round(t.load_ms, 3),
        "backend": t.backend,
    }


def usage_json(t: Timings) -> dict[str, Any]:
    return {
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.decode_tokens,
        "total_tokens": t.prompt_tokens + t.decode_tokens,
        "prompt_tokens_details": {"cached_tokens": t.cached_prompt_tokens},
    }


@dataclass
class Completion:
    """The parts of one generation gathered so far (a non-streaming reply is built from all of them)."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    text: list[str] = field(default_factory=list)
    logprobs: list[GenerationChunk] = field(default_factory=list)  # chunks that carry a token's logprob
    finish_reason: str | None = None
    timings: Timings = field(default_factory=Timings)

    def add(self, chunk: GenerationChunk, eog_ids: frozenset[int]) -> None:
        self.text.append(chunk.text)
        if chunk.logprob is not None and chunk.token_id is not None and chunk.token_id not in eog_ids:
            self.logprobs.append(chunk)
        self.timings = chunk.timings
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason


def _piece(tokenizer: Tokenizer, token_id: int) -> tuple[str, list[int]]:
    raw = tokenizer.token_to_piece(token_id, special=True)
    return raw.decode("utf-8", "replace"), list(raw)


def chat_logprobs(tokenizer: Tokenizer, chunks: Sequence[GenerationChunk]) -> dict[str, Any]:
    """`choices[].logprobs` of a chat reply: one entry per generated token (end-of-generation excluded)."""
    content = []
    for c in chunks:
        assert c.token_id is not None and c.logprob is not None
        token, raw = _piece(tokenizer, c.token_id)
        top = []
        for tid, lp in c.top_logprobs or ():
            t, b = _piece(tokenizer, tid)
            top.append({"token": t, "logprob": lp, "bytes": b})
        content.append({"token": token, "logprob": c.logprob, "bytes": raw, "top_logprobs": top})
    return {"content": content, "refusal": None}


def text_logprobs(tokenizer: Tokenizer, chunks: Sequence[GenerationChunk], offset: int = 0) -> dict[str, Any]:
    """`choices[].logprobs` of a text completion, in the legacy shape (parallel lists)."""
    tokens: list[str] = []
    token_logprobs: list[float] = []
    top_logprobs: list[dict[str, float]] = []
    text_offset: list[int] = []
    for c in chunks:
        assert c.token_id is not None and c.logprob is not None
        token = _piece(tokenizer, c.token_id)[0]
        tokens.append(token)
        token_logprobs.append(c.logprob)
        top_logprobs.append({_piece(tokenizer, tid)[0]: lp for tid, lp in c.top_logprobs or ()})
        text_offset.append(offset)
        offset += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": text_offset,
    }


def _add_usage(
    out: dict[str, Any], c: Completion, final: bool, usage_only: bool, include_usage: bool
) -> None:
    if usage_only or (final and not include_usage):
        out["usage"] = usage_json(c.timings)
    elif include_usage:
        out["usage"] = None
    if final or usage_only:
        out["timings"] = timings_json(c.timings)


# -- chat ---------------------------------------------------------------------------------------------


def chat_response(
    c: Completion,
    *,
    tool_calls: Sequence[ToolCall] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(c.text), "refusal": None}
    finish_reason = c.finish_reason
    if tool_calls:
        message["content"] = None
        message["tool_calls"] = [call.to_json() for call in tool_calls]
        finish_reason = "tool_calls"
    return {
        "id": c.id,
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}],
        "usage": usage_json(c.timings),
        "timings": timings_json(c.timings),
    }


def chat_chunk(
    c: Completion,
    delta: dict[str, Any] | None,
    *,
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
    final: bool = False,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One `chat.completion.chunk`; `delta=None` makes the usage-only chunk (no choices).

    The chunk with the finish reason (`final`) carries the timings, and the usage unless
    `stream_options.include_usage` asked for the usage-only chunk after it: then every other chunk has
    `"usage": null`, as OpenAI's do (clients that add up usage over chunks count it once).
    """
    out: dict[str, Any] = {
        "id": c.id,
        "object": "chat.completion.chunk",
        "created": c.created,
        "model": c.model,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
    }
    _add_usage(out, c, final, delta is None, include_usage)
    return out


# -- text completions -----------------------------------------------------------------------------------


def text_response(c: Completion, logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": c.id,
        "object": "text_completion",
        "created": c.created,
        "model": c.model,
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "text": "".join(c.text), "logprobs": logprobs, "finish_reason": c.finish_reason}
        ],
        "usage": usage_json(c.timings),
        "timings": timings_json(c.timings),
    }


def text_chunk(
    c: Completion,
    text: str | None,
    *,
    finish_reason: str | None = None,
    logprobs: dict[str, Any] | None = None,
    final: bool = False,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One streamed `text_completion`; `text=None` makes the usage-only chunk (as `chat_chunk`)."""
    out: dict[str, Any] = {
        "id": c.id,
        "object": "text_completion",
        "created": c.created,
        "model": c.model,
        "system_fingerprint": None,
        "choices": []
        if text is None
        else [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}],
    }
    _add_usage(out, c, final, text is None, include_usage)
    return out
