"""POST /recognize: a video upload (multipart) or a JSON skeleton sequence -> timelines + clip label."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from pydantic import ValidationError

from service.api.deps import FallOverrides, FramesOut, ModelDep, ReadyState, Stride, TopK
from service.api.hangup import ClientDisconnected, unless_disconnected
from service.api.jobs import Mode, accepted, wants_async
from service.api.outcomes import CLIENT_CLOSED, CountedRoute
from service.api.upload import VIDEO_FIELD, save_upload, video_upload
from service.clips.job import ClipJob
from service.core.errors import ServiceError, validation_message
from service.core.limits import check_skeleton_sequence
from service.jobs import Progress
from service.schemas import JobStatus, RecognizeResponse, SkeletonSequenceIn
from service.state import ServiceState

router = APIRouter(tags=["recognize"], route_class=CountedRoute)  # every outcome in the metrics

_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [VIDEO_FIELD],
                    "properties": {
                        VIDEO_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "mp4, avi, webm or mov video",
                        }
                    },
                },
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/SkeletonSequenceIn"}},
        },
    },
}


def document_request_models(app: FastAPI) -> None:
    """Put SkeletonSequenceIn (and the models it nests) into the OpenAPI components.

    ``_OPENAPI_BODY`` refers to it by ``$ref``, but FastAPI only emits components for models used
    as route parameters: without this the published schema has a dangling reference (/docs
    cannot show the JSON body and schema-driven clients and fuzzers cannot generate it).
    """
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            body = SkeletonSequenceIn.model_json_schema(ref_template="#/components/schemas/{model}")
            nested = body.pop("$defs", {})
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                {**nested, "SkeletonSequenceIn": body}
            )
        return app.openapi_schema or original()

    app.openapi = openapi  # type: ignore[method-assign]


async def _read_json(request: Request) -> SkeletonSequenceIn:
    """The JSON body (its size is capped by `RequestLimitsMiddleware`), validated."""
    try:
        return SkeletonSequenceIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise ServiceError(
            422,
            "invalid_skeleton",
            validation_message(exc.errors()),
            "see the SkeletonSequenceIn schema in docs/api.md or GET /docs",
        ) from None


async def _recognize_upload(
    request: Request,
    state: ServiceState,
    model: ModelDep,
    top_k: int | None,
    stride: int | None,
    overlay: bool,
    run_async: bool,
    falls: dict[str, float],
    frames: str = "none",
) -> RecognizeResponse | Response:
    form = await request.form(max_files=1, max_fields=16)
    try:
        upload, suffix = video_upload(form, state.settings.max_upload_bytes)
        filename = upload.filename or "upload"
        loop = asyncio.get_running_loop()
        path = await loop.run_in_executor(state.io_pool, save_upload, upload, suffix)
    finally:
        await form.close()
    overlay_path: Path | None = None
    overlay_url: str | None = None
    if overlay:
        rid, overlay_path = state.results.new(".webm")
        overlay_url = str(request.url_for("result", result_id=rid).path)

    async def work(progress: Progress | None) -> RecognizeResponse:
        job = ClipJob(state, model, top_k, stride, progress, falls, frames=frames)
        response = await job.video(path, filename, overlay_path)
        response.overlay_url = overlay_url
        return response

    if run_async:
        return accepted(request, state.jobs.submit(work, cleanup=lambda: path.unlink(missing_ok=True)))
    try:
        return await unless_disconnected(request, work(None))
    finally:
        path.unlink(missing_ok=True)


@router.post(
    "/recognize",
    response_model=RecognizeResponse,
    openapi_extra=_OPENAPI_BODY,
    responses={
        202: {"model": JobStatus, "description": "mode=async: the job; follow its Location (GET /jobs/{id})"},
        413: {"description": "upload too large or video too long"},
        415: {"description": "not a supported video type"},
        422: {"description": "undecodable video or invalid skeletons"},
        503: {"description": "models still warming up"},
    },
)
async def recognize(
    request: Request,
    state: ReadyState,
    model: ModelDep,
    falls: FallOverrides,
    top_k: TopK = None,
    stride: Stride = None,
    overlay: Annotated[bool, Query(description="also render an annotated video (overlay_url)")] = False,
    mode: Mode = "sync",
    frames: FramesOut = "none",
) -> RecognizeResponse | Response:
    """Recognise the actions in a clip: per-track timelines, the primary person and the clip label.

    Send ``multipart/form-data`` with the video in the field ``file``, or ``application/json``
    with a ``SkeletonSequenceIn`` (clients that run pose themselves). ``mode=async``: 202 and a job.
    """
    ctype = request.headers.get("content-type", "").lower()
    run_async = wants_async(request, mode)
    try:
        if run_async:
            state.jobs.admit()  # before the upload is read
        if ctype.startswith("application/json"):
            seq = await _read_json(request)
            check_skeleton_sequence(seq, model.window_info(stride), state.settings)
            if run_async:
                job = state.jobs.submit(
                    lambda p: ClipJob(state, model, top_k, stride, p, falls, frames=frames).skeletons(seq)
                )
                return accepted(request, job)
            return await ClipJob(state, model, top_k, stride, None, falls, frames=frames).skeletons(seq)
        if ctype.startswith("multipart/form-data"):
            return await _recognize_upload(
                request, state, model, top_k, stride, overlay, run_async, falls, frames
            )
        raise ServiceError(
            415,
            "unsupported_media_type",
            f"content type {ctype or 'none'!r} is not accepted",
            f"send multipart/form-data with the video in {VIDEO_FIELD!r}, or application/json skeletons",
        )
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)  # counted as client_disconnected
