"""Asynchronous clip jobs: ``POST /recognize?mode=async`` answers 202 (`accepted`); ``GET /jobs/{id}``
reads the job from the shared jobs folder (`service.jobs`), on whichever replica the request reaches."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from service.api.deps import StateDep
from service.schemas import JobStatus

router = APIRouter(tags=["recognize"])

Mode = Annotated[
    Literal["sync", "async"],
    Query(
        description="async: answer 202 at once with a job (GET /jobs/{job_id} for progress and the "
        "result); the same as the header Prefer: respond-async"
    ),
]


def wants_async(request: Request, mode: str) -> bool:
    """``?mode=async``, or ``Prefer: respond-async`` (RFC 7240)."""
    prefer = request.headers.get("prefer", "")
    return mode == "async" or "respond-async" in (p.strip().lower() for p in prefer.split(","))


def accepted(request: Request, job: JobStatus) -> JSONResponse:
    """202 with the job and where to follow it (``Location``)."""
    location = str(request.url_for("job", job_id=job.job_id).path)
    return JSONResponse(
        job.model_dump(mode="json"),
        status_code=202,
        headers={"Location": location, "Retry-After": "1", "Preference-Applied": "respond-async"},
    )


@router.get(
    "/jobs/{job_id}",
    response_model=JobStatus,
    responses={404: {"description": "no such job, or it expired (SKELACT_RESULTS_TTL_S)"}},
)
async def job(job_id: str, state: StateDep) -> JobStatus:
    """A clip job's state and progress (frames done of total) and, when done, its
    ``RecognizeResponse``; a job whose replica died is ``failed`` (``job_lost``)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(state.io_pool, state.jobs.store.status, job_id)
