"""``skelact_recognize_requests_total{outcome}``: every ``POST /recognize`` counted once.

The count wraps the whole route, dependencies and query validation included, so a request refused
before the handler runs (404 ``unknown_model``, 422 ``invalid_request``, 503 ``not_ready``) is
counted under its error code like any other outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from service.core.errors import ServiceError

CLIENT_CLOSED = 499  # nginx's code for "client closed request": nobody reads the response


def _count(request: Request, outcome: str) -> None:
    state = getattr(request.app.state, "service", None)
    if state is not None:
        state.metrics.requests.labels(outcome=outcome).inc()


class CountedRoute(APIRoute):
    """A route whose every outcome is counted: ``ok``, an error code, ``client_disconnected``,
    ``cancelled`` (timeout or shutdown) or ``internal_error``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def counted(request: Request) -> Response:
            outcome = "internal_error"
            try:
                response = await handle(request)
                status = response.status_code
                outcome = "ok" if status < 400 else str(status)
                if status == CLIENT_CLOSED:
                    outcome = "client_disconnected"
                return response
            except ServiceError as exc:
                outcome = exc.code
                raise
            except RequestValidationError:
                outcome = "invalid_request"
                raise
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            finally:
                _count(request, outcome)

        return counted
