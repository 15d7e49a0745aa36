"""``Annotated`` dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Query
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from service.core.errors import not_ready
from service.falls import rule_for
from service.registry import LoadedModel
from service.schemas import FallRuleQuery
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


UnknownThreshold = Annotated[
    float | None,
    Query(
        description="open-set threshold: windows scoring below it are 'unknown' (default: the "
        "model's manifest; docs/api.md)"
    ),
]


def get_model(
    state: ReadyState,
    model: Annotated[
        str | None,
        Query(
            description="model name (GET /models), an action set as set:NAME, or a set next to a base "
            "model as set:NAME,MODEL; default: the default model"
        ),
    ] = None,
    unknown_threshold: UnknownThreshold = None,
) -> LoadedModel:
    return state.model(model, unknown_threshold)


ModelDep = Annotated[LoadedModel, Depends(get_model)]
TopK = Annotated[int | None, Query(ge=1, le=100, description="labels in each top list (default 5)")]
Stride = Annotated[
    int | None, Query(ge=1, le=10_000, description="model frames between windows (default: the manifest's)")
]


def get_fall_overrides(
    model: ModelDep,
    query: Annotated[FallRuleQuery, Query()],  # type: ignore[valid-type]
) -> dict[str, float]:
    """The request's changes to the model's fall rule, checked against the model (a 422 names the
    field) before any work starts."""
    overrides: dict[str, float] = BaseModel.model_dump(query, exclude_none=True)
    rule_for(model.manifest, overrides)
    return overrides


FallOverrides = Annotated[dict[str, float], Depends(get_fall_overrides)]


FramesOut = Annotated[
    Literal["none", "boxes", "landmarks"],
    Query(description="also return each frame's people: their boxes, or boxes and landmarks (docs/api.md)"),
]
