"""Routes beside generation: `POST /tokenize` and `/detokenize` (as llama.cpp's server has them) and
`POST /v1/embeddings` (OpenAI's), on the server's router (its API key check included)."""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel

from edgelm.errors import EdgelmError
from edgelm.server.errors import APIError
from edgelm.server.schemas import DetokenizeRequest, EmbeddingRequest, TokenizeRequest

if TYPE_CHECKING:
    from edgelm.server.app import ServerState

__all__ = ["add_text_routes"]

_Body = TypeVar("_Body", bound=BaseModel)


def add_text_routes(
    api: APIRouter,
    _state: Callable[[Request], ServerState],
    _read_json: Callable[[Request], Awaitable[Any]],
    _validate: Callable[[type[_Body], Any], _Body],
) -> None:
    """Register the routes on `api`; the server's request helpers are passed in."""

    @api.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        body = _validate(TokenizeRequest, await _read_json(request))
        model, _ = _state(request).loaded()
        tok = model.tokenizer
        ids = tok.encode(body.content, add_special=body.add_special, parse_special=body.parse_special)
        if not body.with_pieces:
            return {"tokens": ids}
        pieces = []
        for i in ids:
            raw = tok.token_to_piece(i, special=True)
            try:
                piece: str | list[int] = raw.decode("utf-8")
            except UnicodeDecodeError:
                piece = list(raw)  # part of a character: its bytes, as llama.cpp gives them
            pieces.append({"id": i, "piece": piece})
        return {"tokens": pieces}

    @api.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, Any]:
        body = _validate(DetokenizeRequest, await _read_json(request))
        model, _ = _state(request).loaded()
        bad = [t for t in body.tokens if not 0 <= t < model.tokenizer.vocab_size]
        if bad:
            raise APIError(
                400, f"token id {bad[0]} is out of range [0, {model.tokenizer.vocab_size})", param="tokens"
            )
        return {"content": model.tokenizer.decode(body.tokens, special=True)}

    @api.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        state = _state(request)
        body = _validate(EmbeddingRequest, await _read_json(request))
        model, engine = state.ready()
        if body.dimensions is not None:
            raise APIError(400, "dimensions is not supported", param="dimensions", code="unsupported_value")
        inputs: list[str] | list[list[int]]
        if isinstance(body.input, str):
            inputs = [body.input]
        elif body.input and all(isinstance(x, int) for x in body.input):
            inputs = [body.input]  # type: ignore[list-item]
        else:
            inputs = body.input  # type: ignore[assignment]
        if not inputs or any(len(x) == 0 for x in inputs):
            raise APIError(400, "input must not be empty", param="input")
        data = []
        n_tokens = 0
        for i, text in enumerate(inputs):
            try:
                ids = model.encode_prompt(text)
            except EdgelmError as e:
                raise APIError(400, str(e), param="input") from None
            if len(ids) > model.n_ctx:
                raise APIError(
                    400,
                    f"input {i} has {len(ids)} tokens but the context holds {model.n_ctx}",
                    param="input",
                    code="context_length_exceeded",
                )
            n_tokens += len(ids)
            # On the engine's thread: the kernels serve one caller at a time.
            vector = await asyncio.wrap_future(engine.call(functools.partial(model.embed, ids)))
            value: Any = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
                if body.encoding_format == "base64"
                else vector.tolist()
            )
            data.append({"object": "embedding", "index": i, "embedding": value})
        usage = {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
        return {"object": "list", "data": data, "model": state.model_id, "usage": usage}
