"""Custom action sets: ``/action-sets``, their labels and examples (`service.action_sets`).

A set is usable at once as ``model=set:NAME`` in ``POST /recognize`` and ``WS /stream``. Writes
take an optional ``If-Match`` (the ETag of the version read) and answer 412 when the set moved on.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from service.action_set_schemas import (
    ActionSet,
    ActionSetCheck,
    ActionSetCreate,
    ActionSetList,
    ExampleAdded,
    ExampleCheckInfo,
    ExampleInfo,
    Rename,
)
from service.action_sets import check_label
from service.api.deps import ReadyState, StateDep, UnknownThreshold
from service.api.recognize import _OPENAPI_BODY, _read_json
from service.api.upload import VIDEO_FIELD, save_upload, video_upload
from service.core.errors import ServiceError
from service.core.limits import check_skeleton_sequence
from service.enrol import Span, from_skeletons, from_video
from service.open_set import check_threshold, default_threshold
from service.state import ServiceState
from service.store import Versioned, parse_etag

router = APIRouter(prefix="/action-sets", tags=["action sets"])
T = TypeVar("T")

IfMatch = Annotated[str | None, Header(description="ETag of the version this write replaces (optional)")]
Start = Annotated[float | None, Query(ge=0, description="example starts here (s from the clip's beginning)")]
End = Annotated[float | None, Query(gt=0, description="example ends here (s)")]
OnePerson = Annotated[bool, Query(description="refuse (422 several_people) a clip with more than one person")]

_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "no such set, label or example"},
    409: {"description": "the name exists, or no embedding model is loaded"},
    412: {"description": "If-Match names an older version"},
    422: {"description": "invalid name, or a bad example (nobody found, too short, several people)"},
}


async def _io(state: ServiceState, fn: Callable[..., T], *args: object) -> T:
    """Store work (file reads and writes) off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(state.io_pool, fn, *args)


def _version(value: str | None) -> int | None:
    try:
        return parse_etag(value)
    except ValueError as exc:
        raise ServiceError(422, "invalid_if_match", str(exc), "send the ETag of a GET") from None


def _answer(saved: Versioned, status: int = 200, location: str | None = None) -> JSONResponse:
    headers = {"ETag": saved.etag}
    if location:
        headers["Location"] = location
    return JSONResponse(ActionSet.of(saved).model_dump(mode="json"), status_code=status, headers=headers)


@router.get("", response_model=ActionSetList)
async def list_sets(state: StateDep) -> ActionSetList:
    """Every set, with its labels and examples."""

    def read_all() -> list[ActionSet]:
        return [ActionSet.of(current) for current in state.action_sets.documents().values()]

    return ActionSetList(sets=await _io(state, read_all))


@router.post("", response_model=ActionSet, status_code=201, responses=_ERRORS)
async def create_set(body: ActionSetCreate, state: ReadyState) -> JSONResponse:
    """A new, empty set on an embedding model (the first loaded unless named)."""
    saved = await _io(state, state.action_sets.create, body.name, body.embedding)
    return _answer(saved, 201, f"/action-sets/{body.name}")


@router.get("/{name}", response_model=ActionSet, responses=_ERRORS)
async def get_set(name: str, state: StateDep) -> JSONResponse:
    return _answer(await _io(state, state.action_sets.read, name))


@router.patch("/{name}", response_model=ActionSet, responses=_ERRORS)
async def rename_set(name: str, body: Rename, state: StateDep, if_match: IfMatch = None) -> JSONResponse:
    """Rename the set (its model name becomes set:NEW)."""
    saved = await _io(state, state.action_sets.rename, name, body.name, _version(if_match))
    return _answer(saved, 200, f"/action-sets/{body.name}")


@router.delete("/{name}", status_code=204, responses=_ERRORS)
async def delete_set(name: str, state: StateDep, if_match: IfMatch = None) -> Response:
    await _io(state, state.action_sets.delete, name, _version(if_match))
    return Response(status_code=204)


@router.get("/{name}/check", response_model=ActionSetCheck, responses=_ERRORS)
async def check_set(
    name: str, state: ReadyState, unknown_threshold: UnknownThreshold = None
) -> ActionSetCheck:
    """Each example judged by the set's other examples (leave one out): which ones the rest of the
    set would miss or take for another label, before you rely on the set."""

    def work() -> ActionSetCheck:
        model = state.action_sets.model(name)  # 404, 409 stale_examples: as using the set would
        bar = (
            default_threshold(model)
            if unknown_threshold is None
            else check_threshold(model, unknown_threshold)
        )
        bar = -math.inf if bar is None else bar
        current, checks = state.action_sets.check(name, bar)
        examples = [
            ExampleCheckInfo(id=e["id"], label=c.label, outcome=c.outcome, nearest=c.nearest, score=c.score)
            for e, c in checks
        ]
        return ActionSetCheck(
            name=name,
            version=current.version,
            unknown_threshold=bar,
            outcomes=dict(Counter(x.outcome for x in examples)),
            examples=examples,
        )

    return await _io(state, work)


@router.patch("/{name}/labels/{label}", response_model=ActionSet, responses=_ERRORS)
async def rename_label(name: str, label: str, body: Rename, state: StateDep) -> JSONResponse:
    return _answer(await _io(state, state.action_sets.rename_label, name, label, body.name))


@router.delete("/{name}/labels/{label}", status_code=204, responses=_ERRORS)
async def delete_label(name: str, label: str, state: StateDep) -> Response:
    """Delete the label and all its examples."""
    await _io(state, state.action_sets.delete_label, name, label)
    return Response(status_code=204)


@router.get("/{name}/labels/{label}/examples", response_model=list[ExampleInfo], responses=_ERRORS)
async def list_examples(name: str, label: str, state: StateDep) -> list[ExampleInfo]:
    saved = ActionSet.of(await _io(state, state.action_sets.read, name))
    found = next((lab for lab in saved.labels if lab.name == label), None)
    if found is None:
        raise ServiceError(404, "not_found", f"label {label!r} of {name!r} does not exist", "GET the set")
    return found.examples


@router.post(
    "/{name}/labels/{label}/examples",
    response_model=ExampleAdded,
    status_code=201,
    responses=_ERRORS,
    openapi_extra=_OPENAPI_BODY,  # a video (multipart, field "file") or skeleton JSON, as /recognize
)
async def add_example(
    name: str,
    label: str,
    request: Request,
    state: ReadyState,
    start: Start = None,
    end: End = None,
    one_person: OnePerson = False,
) -> JSONResponse:
    """Add an example of ``label`` (created with its first example) from a video (multipart, field
    ``file``) or skeleton JSON (``SkeletonSequenceIn``), optionally only ``start``..``end`` seconds:
    the primary person's windows there, embedded and pooled. 422 when nobody is found, the person
    is seen too briefly, or (``one_person``) several people are in it."""
    check_label(label)
    span = Span(start, end, one_person).check()
    current = await _io(state, state.action_sets.read, name)  # 404 before any work
    emb = state.action_sets.embedding_model((current.doc or {})["embedding"])
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("application/json"):
        seq = await _read_json(request)
        check_skeleton_sequence(seq, emb.window_info(), state.settings)
        example = await from_skeletons(state, emb, seq, span)
    elif ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=16)
        try:
            upload, suffix = video_upload(form, state.settings.max_upload_bytes)
            filename = upload.filename or "upload"
            path = await _io(state, save_upload, upload, suffix)
        finally:
            await form.close()
        try:
            example = await from_video(state, emb, path, filename, span)
        finally:
            path.unlink(missing_ok=True)
    else:
        raise ServiceError(
            415,
            "unsupported_media_type",
            f"content type {ctype or 'none'!r} is not accepted",
            f"send multipart/form-data with the video in {VIDEO_FIELD!r}, or application/json skeletons",
        )
    saved, item = await _io(state, state.action_sets.add_example, name, label, example)
    info = ExampleInfo(**{k: v for k, v in item.items() if k != "vector"})
    body = ExampleAdded(set=name, label=label, version=saved.version, example=info)
    location = f"/action-sets/{name}/labels/{label}/examples/{item['id']}"
    return JSONResponse(
        body.model_dump(mode="json"), status_code=201, headers={"ETag": saved.etag, "Location": location}
    )


@router.delete("/{name}/labels/{label}/examples/{example_id}", status_code=204, responses=_ERRORS)
async def delete_example(name: str, label: str, example_id: str, state: StateDep) -> Response:
    """Delete one example (a label left without examples is deleted with it)."""
    await _io(state, state.action_sets.delete_example, name, label, example_id)
    return Response(status_code=204)
