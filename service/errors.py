"""Errors that tell the caller what went wrong and how to fix it, as one JSON shape.

Every failure a client can cause becomes a 4xx ``{"error": {"code", "message", "hint"}}``;
only a bug in the service is a 500, and it is logged with its traceback.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


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


def _body(code: str, message: str, hint: str = "", **extra: object) -> dict[str, object]:
    err: dict[str, object] = {"code": code, "message": message}
    if hint:
        err["hint"] = hint
    err.update(extra)
    return {"error": err}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(_body(exc.code, exc.message, exc.hint), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse(
            _body(
                "invalid_request", f"{where}: {first['msg']}", "see GET /docs for the schema", details=details
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            _body(code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = report_internal(exc, f"{request.method} {request.url.path}")
        return JSONResponse(
            _body(
                "internal_error",
                internal_message(error_id),
                "this is a bug in the service: report it with the error id",
                error_id=error_id,
            ),
            status_code=500,
        )
