"""Health, metrics, model listing and result downloads."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import StateDep
from service.schemas import HealthResponse, ModelsResponse
from service.state import ServiceState

router = APIRouter()


def _health(state: ServiceState, status: Literal["ok", "starting", "error"]) -> HealthResponse:
    """What is loaded: models with their provider, pose, warnings (empty while warming up)."""
    return HealthResponse(
        status=status,
        ready=state.ready,
        models={n: m.runtime.provider for n, m in state.registry.models.items()},
        pose=state.pose_info,
        warnings=state.warnings,
        reason=state.not_ready_reason() if not state.ready else "",
        providers=state.providers_here,
        provider_note=state.provider_note,
    )


@router.get("/health/live", response_model=HealthResponse, tags=["ops"])
async def live(state: StateDep) -> HealthResponse:
    """The process is up and serving HTTP (200 even while models warm up); names what is loaded."""
    return _health(state, "ok")


@router.get(
    "/health/ready",
    response_model=HealthResponse,
    tags=["ops"],
    responses={503: {"model": HealthResponse, "description": "warming up, or no usable model"}},
)
async def ready(state: StateDep) -> Response:
    """200 once every model is loaded and warmed up; says which provider runs each model."""
    body = _health(state, "ok" if state.ready else ("starting" if state.starting else "error"))
    return JSONResponse(body.model_dump(), status_code=200 if state.ready else 503)


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus text format."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/models", response_model=ModelsResponse, tags=["models"])
async def models(state: StateDep) -> ModelsResponse:
    default = state.registry.default_name
    return ModelsResponse(
        default=default, models=[m.info(n == default) for n, m in sorted(state.registry.models.items())]
    )


@router.get("/results/{result_id}", tags=["recognize"], response_class=FileResponse)
async def result(result_id: str, state: StateDep) -> FileResponse:
    """Annotated video of an earlier POST /recognize?overlay=true."""
    path = state.results.get(result_id)
    media = "video/webm" if path.suffix == ".webm" else "video/mp4"
    return FileResponse(path, media_type=media, filename=f"annotated{path.suffix}")
