"""App factory: ``create_app(settings)`` -> FastAPI with routes, error handlers and a lifespan.

The lifespan starts loading and warming up models in the background, so /health/live answers
at once while /health/ready stays 503 until the service can really classify.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from service.api import action_sets, jobs, ops, recognize, stream
from service.core import security
from service.core.config import Settings
from service.core.errors import install_error_handlers
from service.state import ServiceState

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
VERSION = "0.1.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState(settings)
        app.state.service = state
        warmup = asyncio.create_task(state.start(), name="warm-up")
        try:
            yield
        finally:
            warmup.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await warmup
            await state.close()

    # /docs (Swagger UI) with its assets from a pinned package (fastapi-offline), not a CDN: the API
    # page works without internet; no online validator badge either. No /redoc: its bundle still
    # fetches a logo from Redocly's CDN.
    app = FastAPIOffline(
        title="skelact",
        version=VERSION,
        description="Real-time skeleton-based human action recognition: MediaPipe pose -> tracking -> "
        "ST-GCN family on ONNX Runtime. See docs/api.md.",
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},
        redoc_url=None,
    )
    install_error_handlers(app)
    security.install(app, settings)  # API keys, CORS, body/time/admission limits (docs/security.md)
    app.include_router(ops.router)
    app.include_router(recognize.router)
    recognize.document_request_models(app)
    app.include_router(jobs.router)
    app.include_router(stream.router)
    app.include_router(action_sets.router)

    @app.get("/", include_in_schema=False, response_model=None)
    async def index() -> Response:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html")
        return JSONResponse({"service": "skelact", "docs": "/docs", "api": "docs/api.md"})

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
