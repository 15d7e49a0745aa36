"""Errors that tell the caller what went wrong and how to fix it, in one shape.

Every failure a client can cause is a `ServiceError`: over HTTP a 4xx ``{"error": {"code",
"message", "hint"}}`` (`error_body`), over a WebSocket ``{"type": "error", "code", "message"}``
(`ServiceError.ws_message`). Only a bug in the service is a 500 (or ``internal_error`` on a
stream), logged with its traceback under an id the client gets.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class CloseCode(IntEnum):
    """WebSocket close codes (RFC 6455 / IANA) the service uses."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down
    POLICY_VIOLATION = 1008  # refused: key, origin, model or query
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # not ready, or too many streams


class ServiceError(Exception):
    """A failure with an HTTP status, a stable machine-readable code and a fix-it hint."""

    def __init__(self, status: int, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint

    @property
    def recoverable(self) -> bool:
        """Client errors leave a WebSocket open; server-side ones close it."""
        return 400 <= self.status < 500

    def ws_message(self, prefix: str = "") -> str:
        """The message of a WebSocket error: the hint, if any, in parentheses."""
        return prefix + self.message + (f" ({self.hint})" if self.hint else "")


def error_body(code: str, message: str, hint: str = "", **extra: object) -> dict[str, Any]:
    """The service's one HTTP error shape."""
    err: dict[str, object] = {"code": code, "message": message}
    if hint:
        err["hint"] = hint
    err.update(extra)
    return {"error": err}


def validation_message(errors: Sequence[Any]) -> str:
    """``where: why`` of the first error pydantic (or FastAPI) found, for any input we validate."""
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    why = str(first.get("msg", ""))
    return f"{where}: {why}" if where else why


def too_large(size: int, limit: int, knob: str) -> ServiceError:
    """A body or upload over its limit (413); ``knob`` is the setting that raises the limit."""
    return ServiceError(
        413,
        "too_large",
        f"request body is over {size / 2**20:.1f} MiB; the limit is {limit / 2**20:.1f} MiB",
        f"send a shorter or more compressed clip, or raise {knob}",
    )


def unknown_model(name: str, known: list[str]) -> ServiceError:
    return ServiceError(
        404, "unknown_model", f"no model named {name!r}", f"use one of {known} (GET /models lists them)"
    )


def not_ready(reason: str) -> ServiceError:
    return ServiceError(503, "not_ready", reason, "retry when GET /health/ready returns 200")


def report_internal(exc: BaseException, where: str) -> str:
    """Log ``exc`` with its traceback under a new error id; clients get only the id (no trace)."""
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error %s in %s", error_id, where, exc_info=exc)
    return error_id


def internal_message(error_id: str) -> str:
    return f"internal error (id {error_id}); the details are in the service log"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.hint), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse(
            error_body(
                "invalid_request",
                validation_message(details),
                "see GET /docs for the schema",
                details=details,
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = report_internal(exc, f"{request.method} {request.url.path}")
        return JSONResponse(
            error_body(
                "internal_error",
                internal_message(error_id),
                "this is a bug in the service: report it with the error id",
                error_id=error_id,
            ),
            status_code=500,
        )
