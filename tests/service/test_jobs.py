"""service/jobs.py's job files as another replica reads them: the lease (an unfinished job whose
owner stopped writing is failed, a finished one is not), expiry by age, ids that name no file."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.core.errors import ServiceError
from service.jobs import JobRecord, JobStore
from service.schemas import JobStatus
from service.store import new_id


def write(store: JobStore, state: str, heartbeat_age_s: float) -> str:
    now = datetime.now(UTC)
    status = JobStatus(job_id=new_id(), state=state, created_at=now, updated_at=now)  # type: ignore[arg-type]
    store.save(JobRecord(status=status, owner="pod-a/7", heartbeat=time.time() - heartbeat_age_s))
    return status.job_id


def test_an_unfinished_job_past_its_lease_is_failed(tmp_path: Path) -> None:
    store = JobStore(tmp_path, ttl_s=3600, lease_s=30)
    fresh = write(store, "running", heartbeat_age_s=5)
    assert store.status(fresh).state == "running" and store.status(fresh).error is None
    for state in ("running", "queued"):
        lost = store.status(write(store, state, heartbeat_age_s=31))
        assert lost.state == "failed" and lost.error is not None and lost.error.code == "job_lost"
        assert "pod-a/7" in lost.error.message and "SKELACT_JOB_LEASE_S" in lost.error.message
    for state in ("done", "failed"):  # finished jobs have no owner to wait for
        assert store.status(write(store, state, heartbeat_age_s=3000)).state == state


def test_jobs_expire_by_age_and_bad_ids_are_not_found(tmp_path: Path) -> None:
    store = JobStore(tmp_path, ttl_s=60, lease_s=30)
    old = write(store, "done", heartbeat_age_s=0)
    then = time.time() - 120
    os.utime(store.path(old), (then, then))
    for job_id in (old, new_id(), "../" + old, old.upper(), ""):
        with pytest.raises(ServiceError) as missing:
            store.status(job_id)
        assert missing.value.status == 404 and missing.value.code == "job_not_found"
        assert "SKELACT_RESULTS_TTL_S" in missing.value.hint
    assert store.expiry.run(force=True) == 1 and not store.path(old).exists()
