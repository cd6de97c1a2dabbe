"""The OpenAI-compatible HTTP server: `create_app(model) -> FastAPI`.

A thin layer: it parses requests, hands them to the engine (`edgelm.runtime.engine.Engine`, one
background thread decoding every slot together) and writes the chunks back in OpenAI's shapes. The model
is loaded in a background thread at startup, so `/health` answers "loading" until it is ready.

Endpoints: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`, `GET /health`,
`GET /metrics` (Prometheus). With an API key, every endpoint but `/health` wants
`Authorization: Bearer <key>`.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgelm.api.model import Model, load
from edgelm.runtime.engine import Engine, EngineStats, QueueFullError
from edgelm.server.errors import RETRY_AFTER_S, APIError, error_body, install_error_handlers
from edgelm.server.generation import Generation, Prepared, prepare_chat, prepare_completion
from edgelm.server.metrics import CONTENT_TYPE, ServerMetrics
from edgelm.server.openai_format import (
    Completion,
    chat_chunk,
    chat_logprobs,
    chat_response,
    new_id,
    text_chunk,
    text_logprobs,
    text_response,
)
from edgelm.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
)
from edgelm.server.text_routes import add_text_routes
from edgelm.server.tools import could_be_tool_call, parse_tool_calls

__all__ = ["DEFAULT_MAX_QUEUE", "ServerState", "create_app"]

log = logging.getLogger("edgelm.server")

DEFAULT_MAX_QUEUE = 64
# Request bodies beyond this are refused (413) before they are read into memory.
MAX_BODY_BYTES = 8 * 1024 * 1024
# Seconds between keep-alive comments on a quiet stream (a long prefill behind a proxy).
SSE_PING_S = 15
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"})

ModelSource = str | os.PathLike[str] | Model | Callable[[], Model]


class ServerState:
    """The model, its engine and the server's settings; loads the model on a background thread."""

    def __init__(
        self,
        source: ModelSource,
        *,
        api_key: str | None,
        n_slots: int,
        n_ctx: int | None,
        max_queue: int,
        model_name: str | None,
        n_threads: int | None,
        max_tokens: int | None = None,
    ) -> None:
        if isinstance(source, Model):
            if n_ctx is not None and n_ctx != source.n_ctx:
                raise ValueError(f"n_ctx={n_ctx}, but the model was loaded with n_ctx={source.n_ctx}")
            model = source
            self._loader: Callable[[], Model] = lambda: model
            default_name = model.config.name or model.config.arch
        elif callable(source):
            self._loader = source
            default_name = "edgelm"
        else:
            path = Path(source)
            self._loader = lambda: load(path, n_ctx=n_ctx, n_threads=n_threads)
            default_name = path.stem
        self.model_id = model_name or default_name
        self.api_key = api_key
        self.n_slots = n_slots
        self.max_tokens = max_tokens  # the most tokens one request may generate (None: the context)
        self.max_queue = max_queue
        self.created = int(time.time())
        self.model: Model | None = None
        self.engine: Engine | None = None
        self.error: str | None = None  # why loading failed
        self.metrics = ServerMetrics(self.stats)
        self._lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start_loading(self) -> None:
        self._thread = threading.Thread(target=self._load, name="edgelm-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            model = self._loader()
            engine = Engine(
                model.transformer,
                model.tokenizer,
                n_slots=self.n_slots,
                n_ctx=model.n_ctx,
                max_queue=self.max_queue,
                load_ms=model.load_ms,
            )
            engine.start()
        except Exception as e:  # reported by /health; the server keeps answering
            log.exception("loading the model failed")
            self.error = f"{type(e).__name__}: {e}"
            return
        with self._lock:
            if not self._closed:
                self.model, self.engine = model, engine
                log.info("model %s loaded in %.0f ms", self.model_id, model.load_ms)
                return
        engine.stop()  # the server shut down while we were loading

    def close(self) -> None:
        with self._lock:
            self._closed = True
            engine, self.engine = self.engine, None
        if engine is not None:
            engine.stop()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until loading ended (either way); True when the model is ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.engine is not None

    # -- requests ------------------------------------------------------------------------------

    def stats(self) -> EngineStats | None:
        engine = self.engine
        return None if engine is None else engine.stats()

    def loaded(self) -> tuple[Model, Engine]:
        """The model and engine, or 503 while loading (or after loading failed)."""
        model, engine = self.model, self.engine
        if model is None or engine is None:
            what = "failed to load" if self.error else "is loading"
            raise APIError(
                503,
                f"The model {what}; try again later",
                code="model_not_ready",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return model, engine

    def ready(self) -> tuple[Model, Engine]:
        """The model and engine, or 503 while loading (or after loading failed), or 429 when the queue
        is already full (before any work on the request: overload is refused cheaply)."""
        model, engine = self.loaded()
        if engine.stats().queue_depth >= engine.max_queue:
            self.metrics.rejected.inc()
            raise QueueFullError(f"{engine.max_queue} requests are already waiting")
        return model, engine


def _state(request: Request) -> ServerState:
    return request.app.state.edgelm  # type: ignore[no-any-return]


# -- plumbing: metrics, auth, bodies -------------------------------------------------------------------


class _MetricsMiddleware:
    """Counts every request by endpoint and status, and times it to the last byte."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope.get("path", "")
        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = path if path in ENDPOINTS else "other"
            self.metrics.observe_request(endpoint, status, time.perf_counter() - t0)


def _check_api_key(request: Request) -> None:
    key = _state(request).api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise APIError(
            401,
            "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _read_json(request: Request) -> Any:
    """The JSON body, whatever the content type says; 413 past MAX_BODY_BYTES, 400 if not JSON."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise APIError(413, f"request body over {MAX_BODY_BYTES} bytes", code="body_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY_BYTES:
            raise APIError(413, f"request body over {MAX_BODY_BYTES} bytes", code="body_too_large")
    try:
        return json.loads(body)
    except ValueError as e:
        raise APIError(
            400, f"We could not parse the JSON body of your request: {e}", code="invalid_json"
        ) from None
    except RecursionError:
        raise APIError(400, TOO_DEEP, code="invalid_json") from None


_Body = TypeVar("_Body", bound=BaseModel)
TOO_DEEP = "The JSON body of your request is nested too deeply"


def _validate(schema: type[_Body], data: Any) -> _Body:
    """The body as `schema`; a body nested too deeply for validation is a 400 like any bad body."""
    try:
        return schema.model_validate(data)
    except RecursionError:
        raise APIError(400, TOO_DEEP, code="invalid_request_error") from None


class _GenerationStream(EventSourceResponse):
    """SSE of one generation; however the response ends (done, client gone before the first byte, a
    failed send), the engine request ends with it."""

    def __init__(self, events: AsyncIterator[str], gen: Generation) -> None:
        super().__init__(events, sep="\n", ping=SSE_PING_S)
        self._gen = gen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._gen.cancel()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _error_event(c: Completion) -> str:
    log.error("generation %s failed: %s", c.id, c.finish_reason)
    return _dumps(error_body("The server had an error while generating the reply.", "server_error"))


# -- chat ----------------------------------------------------------------------------------------------


async def _chat_events(
    state: ServerState, model: Model, gen: Generation, c: Completion, include_usage: bool
) -> AsyncIterator[str]:
    """The SSE data of a streamed chat completion, ending with [DONE].

    When the output may be a tool call (a forced one, or "auto" while the text could still start one) it
    is held back and sent as one `tool_calls` delta at the end, or as text once it cannot be a call.
    """
    plan, eog = gen.prepared.output, model.tokenizer.eog_ids
    held: list[str] | None = [] if plan.tool_mode != "none" else None
    held_lp: list[Any] = []
    try:
        yield _dumps(chat_chunk(c, {"role": "assistant", "content": ""}, include_usage=include_usage))
        async for chunk in gen.chunks():
            if chunk.finish_reason is not None and chunk.finish_reason.startswith("error"):
                c.finish_reason = chunk.finish_reason
                yield _error_event(c)
                return
            n_lp = len(c.logprobs)
            c.add(chunk, eog)
            lp_chunks = held_lp + c.logprobs[n_lp:]
            text = chunk.text
            if held is not None:
                held.append(text)
                so_far = "".join(held)
                if plan.tool_mode == "auto" and not could_be_tool_call(so_far):
                    held, held_lp, text = None, [], so_far
                else:
                    held_lp, text, lp_chunks = lp_chunks, "", []
            lp = chat_logprobs(model.tokenizer, lp_chunks) if lp_chunks else None
            if chunk.finish_reason is None:
                if text or lp:
                    yield _dumps(chat_chunk(c, {"content": text}, logprobs=lp, include_usage=include_usage))
                continue
            finish = chunk.finish_reason
            if held is not None:
                so_far = "".join(held)
                calls = parse_tool_calls(so_far, plan.tool_names) if finish == "stop" else None
                lp = chat_logprobs(model.tokenizer, held_lp) if held_lp else None
                if calls:
                    delta: dict[str, Any] = {"tool_calls": [call.to_json(i) for i, call in enumerate(calls)]}
                    finish = "tool_calls"
                else:
                    delta = {"content": so_far}
                if calls or so_far or lp:
                    yield _dumps(chat_chunk(c, delta, logprobs=lp, include_usage=include_usage))
            elif text or lp:
                yield _dumps(chat_chunk(c, {"content": text}, logprobs=lp, include_usage=include_usage))
            yield _dumps(chat_chunk(c, {}, finish_reason=finish, final=True, include_usage=include_usage))
            if include_usage:
                yield _dumps(chat_chunk(c, None))
            state.metrics.observe_generation(c.timings)
            yield "[DONE]"
    finally:
        gen.cancel()


async def _collect(
    request: Request, state: ServerState, model: Model, gen: Generation, c: Completion
) -> Response | None:
    """Run a non-streaming generation to its end; a response only when there is no reply to make."""
    async for chunk in gen.chunks(request.is_disconnected):
        c.add(chunk, model.tokenizer.eog_ids)
    if c.finish_reason is None:  # the client went away: nobody reads this
        return Response(status_code=499)
    if c.finish_reason.startswith("error"):
        log.error("generation %s failed: %s", c.id, c.finish_reason)
        raise APIError(500, "The server had an error while generating the reply.", type="server_error")
    state.metrics.observe_generation(c.timings)
    return None


async def _chat_reply(
    request: Request, state: ServerState, model: Model, gen: Generation, c: Completion
) -> Response:
    if (gone := await _collect(request, state, model, gen, c)) is not None:
        return gone
    plan = gen.prepared.output
    calls = None
    if plan.tool_mode != "none" and c.finish_reason == "stop":
        calls = parse_tool_calls("".join(c.text), plan.tool_names)
    lp = chat_logprobs(model.tokenizer, c.logprobs) if gen.prepared.logprobs is not None else None
    return JSONResponse(chat_response(c, tool_calls=calls, logprobs=lp))


# -- text completions ----------------------------------------------------------------------------------


async def _text_events(
    state: ServerState, model: Model, gen: Generation, c: Completion, include_usage: bool
) -> AsyncIterator[str]:
    eog, offset = model.tokenizer.eog_ids, 0
    try:
        async for chunk in gen.chunks():
            if chunk.finish_reason is not None and chunk.finish_reason.startswith("error"):
                c.finish_reason = chunk.finish_reason
                yield _error_event(c)
                return
            n_lp = len(c.logprobs)
            c.add(chunk, eog)
            lp = text_logprobs(model.tokenizer, c.logprobs[n_lp:], offset) if len(c.logprobs) > n_lp else None
            offset += len(chunk.text)
            final = chunk.finish_reason is not None
            if chunk.text or lp or final:
                yield _dumps(
                    text_chunk(
                        c,
                        chunk.text,
                        finish_reason=chunk.finish_reason,
                        logprobs=lp,
                        final=final,
                        include_usage=include_usage,
                    )
                )
            if final:
                if include_usage:
                    yield _dumps(text_chunk(c, None))
                state.metrics.observe_generation(c.timings)
                yield "[DONE]"
    finally:
        gen.cancel()


async def _text_reply(
    request: Request, state: ServerState, model: Model, gen: Generation, c: Completion
) -> Response:
    if (gone := await _collect(request, state, model, gen, c)) is not None:
        return gone
    lp = text_logprobs(model.tokenizer, c.logprobs) if gen.prepared.logprobs is not None else None
    return JSONResponse(text_response(c, lp))


# -- the app -------------------------------------------------------------------------------------------


def _submit(state: ServerState, engine: Engine, prepared: Prepared) -> Generation:
    try:
        return Generation(engine, prepared, on_cancel=state.metrics.cancelled.inc)
    except Exception:
        state.metrics.rejected.inc()
        raise


def _routes() -> APIRouter:
    api = APIRouter(dependencies=[Depends(_check_api_key)])

    @api.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        state = _state(request)
        entry = {"id": state.model_id, "object": "model", "created": state.created, "owned_by": "edgelm"}
        if state.model is not None:
            entry["context_length"] = state.model.n_ctx
        return {"object": "list", "data": [entry]}

    @api.get("/metrics")
    async def metrics(request: Request) -> Response:
        return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)

    add_text_routes(api, _state, _read_json, _validate)

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        state = _state(request)
        body = _validate(ChatCompletionRequest, await _read_json(request))
        # Any `model` is answered by the one model served (as llama.cpp's server does); the reply's
        # `model` says which answered.
        model, engine = state.ready()
        prepared = await run_in_threadpool(prepare_chat, model, body, state.max_tokens)
        gen = _submit(state, engine, prepared)
        c = Completion(new_id("chatcmpl"), state.model_id)
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return _GenerationStream(_chat_events(state, model, gen, c, usage), gen)
        return await _chat_reply(request, state, model, gen, c)

    @api.post("/v1/completions")
    async def completions(request: Request) -> Response:
        state = _state(request)
        body = _validate(CompletionRequest, await _read_json(request))
        model, engine = state.ready()
        prepared = await run_in_threadpool(prepare_completion, model, body, state.max_tokens)
        gen = _submit(state, engine, prepared)
        c = Completion(new_id("cmpl"), state.model_id)
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return _GenerationStream(_text_events(state, model, gen, c, usage), gen)
        return await _text_reply(request, state, model, gen, c)

    return api


def create_app(
    model: ModelSource,
    *,
    api_key: str | None = None,
    n_slots: int = 1,
    n_ctx: int | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
    model_name: str | None = None,
    n_threads: int | None = None,
    max_tokens: int | None = None,
) -> FastAPI:
    """The server app for `model`: a GGUF path (loaded at startup, in the background), a loaded `Model`,
    or a function that loads one.

    `n_slots` sequences decode together; `max_queue` more may wait (beyond that: 429); `max_tokens`
    caps what one request may generate (default: the context). `n_ctx` and
    `n_threads` are passed to `edgelm.load` for a path. The app's state (`app.state.edgelm`) holds the
    engine once loaded; the engine thread stops when the app shuts down.
    """
    if n_slots < 1:
        raise ValueError(f"n_slots={n_slots}: must be >= 1")
    if max_queue < 0:
        raise ValueError(f"max_queue={max_queue}: must be >= 0")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens}: must be >= 1")
    state = ServerState(
        model,
        api_key=api_key,
        n_slots=n_slots,
        n_ctx=n_ctx,
        max_queue=max_queue,
        model_name=model_name,
        n_threads=n_threads,
        max_tokens=max_tokens,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        try:
            yield
        finally:
            state.close()

    app = FastAPI(title="edgelm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.edgelm = state
    install_error_handlers(app)
    app.add_middleware(_MetricsMiddleware, metrics=state.metrics)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.engine is not None:
            return JSONResponse({"status": "ok"})
        if state.error is not None:
            return JSONResponse({"status": "error", "error": state.error}, 503)
        return JSONResponse({"status": "loading"}, 503)

    app.include_router(_routes())
    return app
