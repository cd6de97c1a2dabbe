"""Errors as OpenAI writes them: `{"error": {"message", "type", "param", "code"}}` with a 4xx/5xx status.

Bad input is the client's fault and answers 4xx naming the field; only our own bugs answer 500, with a
generic message, and none of them stops the server.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgelm.api.model import PromptTooLongError
from edgelm.errors import EdgelmError
from edgelm.runtime.engine import QueueFullError
from edgelm.runtime.sampling import InvalidParamError
from edgelm.tokenizer.chat_template import ChatTemplateError

__all__ = [
    "RETRY_AFTER_S",
    "APIError",
    "error_body",
    "install_error_handlers",
    "validation_error",
]

log = logging.getLogger("edgelm.server")

# What a client told to come back later (overload, model still loading) should wait, in seconds.
RETRY_AFTER_S = 1

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error answered as it is: status, message, and the request field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error")
        self.headers = headers


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _response(e: APIError) -> JSONResponse:
    return JSONResponse(error_body(e.message, e.type, e.param, e.code), e.status, headers=e.headers)


# Names pydantic gives the branches of a union in an error's location; they are not fields.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _param(loc: Sequence[int | str]) -> str | None:
    """A pydantic location as a field path: ("body", "messages", 0, "role") -> "messages[0].role"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "body" or part in _UNION_TAGS or "[" in part or part[:1].isupper():
            continue
        else:
            out += f".{part}" if out else part
    return out or None


def validation_error(errors: Sequence[Any]) -> APIError:
    """The first problem pydantic found, as a 400 naming its field."""
    first = dict(errors[0]) if errors else {}
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return APIError(
            400, f"We could not parse the JSON body of your request: {detail}", code="invalid_json"
        )
    param = _param(first.get("loc", ()))
    msg = first.get("msg", "invalid request")
    message = f"{param}: {msg}" if param else msg
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return APIError(400, message, param=param, code="invalid_value")


def from_exception(e: Exception) -> APIError:
    """Our errors about the user's input, as 4xx."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, QueueFullError):
        return APIError(
            429,
            f"The server is busy ({e}); retry after {RETRY_AFTER_S} s",
            code="server_busy",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    if isinstance(e, InvalidParamError):
        return APIError(400, str(e), param=e.field, code="invalid_value")
    if isinstance(e, ChatTemplateError):  # the model's template rejected these messages
        return APIError(400, str(e), param="messages", code="invalid_value")
    if isinstance(e, PromptTooLongError):
        return APIError(400, str(e), param="messages", code="context_length_exceeded")
    if isinstance(e, ValidationError):
        return validation_error(e.errors())
    if isinstance(e, (EdgelmError, ValueError)):
        return APIError(400, str(e), code="invalid_value")
    return APIError(500, "The server had an error while processing your request.", type="server_error")


def install_error_handlers(app: FastAPI) -> None:
    """Every failure answers in OpenAI's shape; none of them stops the server."""

    async def on_api_error(request: Request, e: Exception) -> JSONResponse:
        return _response(from_exception(e))

    async def on_validation(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        return _response(validation_error(e.errors()))

    async def on_http(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, StarletteHTTPException)
        message = {404: f"Unknown path {request.url.path}", 405: f"Method {request.method} not allowed"}
        return _response(
            APIError(
                e.status_code,
                message.get(e.status_code, str(e.detail)),
                headers=dict(e.headers or {}),
            )
        )

    async def on_bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("error while serving %s %s", request.method, request.url.path)
        return _response(from_exception(RuntimeError()))

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(EdgelmError, on_api_error)
    app.add_exception_handler(ValueError, on_api_error)
    app.add_exception_handler(ValidationError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_bug)
