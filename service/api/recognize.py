"""POST /recognize: a video upload (multipart) or a JSON skeleton sequence -> timelines + clip label."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from perception.video import VIDEO_SUFFIXES
from service.api.deps import ModelDep, ReadyState, Stride, TopK
from service.api.hangup import ClientDisconnected, unless_disconnected
from service.api.jobs import Mode, accepted, wants_async
from service.clips.job import ClipJob
from service.core.errors import ServiceError, too_large, validation_message
from service.core.limits import check_skeleton_sequence
from service.jobs import Progress
from service.schemas import JobStatus, RecognizeResponse, SkeletonSequenceIn
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


def _save_upload(upload: UploadFile, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="skelact-upload-")
    with open(fd, "wb") as out:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return Path(name)


async def _recognize_upload(
    request: Request,
    state: ServiceState,
    model: ModelDep,
    top_k: int | None,
    stride: int | None,
    overlay: bool,
    run_async: bool,
) -> RecognizeResponse | Response:
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
    overlay_url: str | None = None
    if overlay:
        rid, overlay_path = state.results.new(".webm")
        overlay_url = str(request.url_for("result", result_id=rid).path)

    async def work(progress: Progress | None) -> RecognizeResponse:
        response = await ClipJob(state, model, top_k, stride, progress).video(path, filename, overlay_path)
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
    top_k: TopK = None,
    stride: Stride = None,
    overlay: Annotated[bool, Query(description="also render an annotated video (overlay_url)")] = False,
    mode: Mode = "sync",
) -> RecognizeResponse | Response:
    """Recognise the actions in a clip: per-track timelines, the primary person and the clip label.

    Send ``multipart/form-data`` with the video in the field ``file``, or ``application/json``
    with a ``SkeletonSequenceIn`` (clients that run pose themselves). ``mode=async``: 202 and a job.
    """
    ctype = request.headers.get("content-type", "").lower()
    outcome = "ok"
    run_async = wants_async(request, mode)
    try:
        if run_async:
            state.jobs.admit()  # before the upload is read
        if ctype.startswith("application/json"):
            seq = await _read_json(request)
            check_skeleton_sequence(seq, model.window_info(stride), state.settings)
            if run_async:
                job = state.jobs.submit(lambda p: ClipJob(state, model, top_k, stride, p).skeletons(seq))
                return accepted(request, job)
            return await ClipJob(state, model, top_k, stride).skeletons(seq)
        if ctype.startswith("multipart/form-data"):
            return await _recognize_upload(request, state, model, top_k, stride, overlay, run_async)
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
