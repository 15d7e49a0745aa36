"""``Annotated`` dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Query
from starlette.requests import HTTPConnection

from service.core.errors import not_ready
from service.registry import LoadedModel
from service.state import ServiceState


def get_state(conn: HTTPConnection) -> ServiceState:
    state: ServiceState = conn.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def require_ready(state: StateDep) -> ServiceState:
    if not state.ready:
        raise not_ready(state.not_ready_reason() or "not ready")
    return state


ReadyState = Annotated[ServiceState, Depends(require_ready)]


def get_model(
    state: ReadyState,
    model: Annotated[
        str | None, Query(description="model name (GET /models); default: the default model")
    ] = None,
) -> LoadedModel:
    return state.registry.get(model)


ModelDep = Annotated[LoadedModel, Depends(get_model)]
TopK = Annotated[int | None, Query(ge=1, le=100, description="labels in each top list (default 5)")]
Stride = Annotated[
    int | None, Query(ge=1, le=10_000, description="model frames between windows (default: the manifest's)")
]
FramesOut = Annotated[
    Literal["none", "boxes", "landmarks"],
    Query(description="also return each frame's people: their boxes, or boxes and landmarks (docs/api.md)"),
]
