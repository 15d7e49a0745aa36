"""POST /recognize: a video upload (multipart) or a JSON skeleton sequence -> timelines + clip label."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from perception.video import VIDEO_SUFFIXES
from service.api.deps import FramesOut, ModelDep, ReadyState, Stride, TopK
from service.clips.job import ClipJob
from service.core.errors import ServiceError, too_large, validation_message
from service.core.limits import check_skeleton_sequence
from service.schemas import RecognizeResponse, SkeletonSequenceIn
from service.state import ServiceState

router = APIRouter(tags=["recognize"])

# content types of videos whose file name has none of VIDEO_SUFFIXES
_VIDEO_TYPES = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "video/x-msvideo": ".avi",
    "video/avi": ".avi",
}

_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
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


class ClientDisconnected(Exception):
    """The client hung up before its recognition finished; the work was cancelled."""


async def _unless_disconnected(request: Request, work: Awaitable[RecognizeResponse]) -> RecognizeResponse:
    """Await ``work`` but cancel it as soon as the client disconnects.

    A clip costs seconds of pose time per second of video; a client that gave up (closed tab,
    timeout on its side) must not hold one of the places of the clips run at once. Called once the
    body has been read, so the next ASGI message can only be ``http.disconnect``.
    """

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    if not task.done() or task.cancelled():
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnected
    return task.result()


def _save_upload(upload: UploadFile, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="skelact-upload-")
    with open(fd, "wb") as out:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return Path(name)


async def _recognize_upload(
    request: Request, state: ServiceState, job: ClipJob, overlay: bool
) -> RecognizeResponse:
    limit = state.settings.max_upload_bytes
    form = await request.form(max_files=1, max_fields=16)
    try:
        uploads = [v for v in form.values() if isinstance(v, UploadFile)]
        if not uploads:
            raise ServiceError(
                422,
                "missing_file",
                "no file in the multipart body",
                "send the video as the multipart field 'file' (curl -F file=@clip.mp4)",
            )
        upload = uploads[0]
        filename = upload.filename or "upload"
        suffix = Path(filename).suffix.lower()
        ctype = (upload.content_type or "").lower()
        if suffix not in VIDEO_SUFFIXES:
            if ctype not in _VIDEO_TYPES:
                raise ServiceError(
                    415,
                    "unsupported_media_type",
                    f"{filename!r} ({ctype or 'no content type'}) is not a supported video",
                    f"send one of {', '.join(s.lstrip('.') for s in VIDEO_SUFFIXES)}; "
                    "skeletons go as application/json",
                )
            suffix = _VIDEO_TYPES[ctype]
        size = upload.size if upload.size is not None else 0
        if size > limit:  # the file itself, without the multipart framing the middleware allows
            raise too_large(size, limit, "SKELACT_MAX_UPLOAD_MB")
        if size == 0:
            raise ServiceError(
                422,
                "undecodable_video",
                f"{filename}: upload is empty (0 bytes)",
                "check the file path in your client",
            )
        loop = asyncio.get_running_loop()
        path = await loop.run_in_executor(state.io_pool, _save_upload, upload, suffix)
    finally:
        await form.close()
    overlay_path: Path | None = None
    rid = ""
    if overlay:
        rid, overlay_path = state.results.new(".webm")
    try:
        response = await _unless_disconnected(request, job.video(path, filename, overlay_path))
    finally:
        path.unlink(missing_ok=True)
    if overlay:
        response.overlay_url = str(request.url_for("result", result_id=rid).path)
    return response


@router.post(
    "/recognize",
    response_model=RecognizeResponse,
    openapi_extra=_OPENAPI_BODY,
    responses={
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
    top_k: TopK = None,
    stride: Stride = None,
    overlay: Annotated[bool, Query(description="also render an annotated video (overlay_url)")] = False,
    frames: FramesOut = "none",
) -> RecognizeResponse | Response:
    """Recognise the actions in a clip: per-track timelines, the primary person and the clip label.

    Send ``multipart/form-data`` with the video in the field ``file``, or ``application/json``
    with a ``SkeletonSequenceIn`` (clients that run pose themselves).
    """
    ctype = request.headers.get("content-type", "").lower()
    outcome = "ok"
    job = ClipJob(state, model, top_k, stride, frames)
    try:
        if ctype.startswith("application/json"):
            seq = await _read_json(request)
            check_skeleton_sequence(seq, model.window_info(stride), state.settings)
            return await job.skeletons(seq)
        if ctype.startswith("multipart/form-data"):
            return await _recognize_upload(request, state, job, overlay)
        raise ServiceError(
            415,
            "unsupported_media_type",
            f"content type {ctype or 'none'!r} is not accepted",
            "send multipart/form-data with the video in 'file', or application/json skeletons",
        )
    except ServiceError as exc:
        outcome = exc.code
        raise
    except ClientDisconnected:
        outcome = "client_disconnected"
        return Response(status_code=499)  # nobody reads it; nginx's code for "client closed request"
    except Exception:
        outcome = "internal_error"
        raise
    except asyncio.CancelledError:  # the request timed out (service.core.limits) or the server stops
        outcome = "cancelled"
        raise
    finally:
        state.metrics.requests.labels(outcome=outcome).inc()
