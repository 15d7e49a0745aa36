"""Health, metrics, model listing and result downloads."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import StateDep
from service.core.security import authenticated
from service.schemas import HealthResponse, HealthStatus, ModelsResponse
from service.state import ServiceState

router = APIRouter()


def _health(
    request: Request, state: ServiceState, status: HealthStatus, ready: bool, reason: str, code: int
) -> Response:
    """The health body: what is loaded (models with their provider, pose, warnings, the providers
    this host can run) for a caller with a key or when keys are off; else only status and reason."""
    body = HealthResponse(status=status, ready=ready, reason=reason)
    if not authenticated(request):
        if status == "error":
            body.reason = "start-up failed (the details: this route with an API key, or the service log)"
        return JSONResponse(body.model_dump(include={"status", "ready", "reason"}), status_code=code)
    body.models = {n: m.runtime.provider for n, m in state.registry.models.items()}
    body.pose = state.pose_info
    body.warnings = state.warnings
    body.providers = state.providers_here
    body.provider_note = state.provider_note
    return JSONResponse(body.model_dump(), status_code=code)


@router.get("/health/live", response_model=HealthResponse, tags=["ops"])
async def live(request: Request, state: StateDep) -> Response:
    """The process is up and serving HTTP (200 even while models warm up); names what is loaded."""
    reason = "" if state.ready else state.not_ready_reason()
    return _health(request, state, "ok", state.ready, reason, 200)


@router.get(
    "/health/ready",
    response_model=HealthResponse,
    tags=["ops"],
    responses={
        503: {
            "model": HealthResponse,
            "description": "warming up, failed, shutting down or at stream capacity",
        }
    },
)
async def ready(request: Request, state: StateDep) -> Response:
    """200 when this replica takes new work; 503 while warming up, shutting down or at its stream
    capacity (``reason`` says which). Open to probes without a key; the model and pose details
    only with one."""
    ok, reason = state.readiness()
    status: HealthStatus
    if ok:
        status = "ok"
    elif state.lifecycle.draining:
        status = "draining"
    elif state.ready:
        status = "full"
    else:
        status = "starting" if state.starting else "error"
    return _health(request, state, status, ok, reason, 200 if ok else 503)


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
