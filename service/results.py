"""Annotated videos of ``POST /recognize?overlay=true``, kept for download (``GET /results/{id}``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from service.core.errors import ServiceError
from service.store import Expiry, check_id, new_id

__all__ = ["ResultStore"]

SUFFIXES = (".webm", ".mp4")


class ResultStore:
    """Annotated videos as ``<id>.webm`` files in one folder (``SKELACT_RESULTS_DIR``).

    The id is the file name: no index in memory, so every replica that mounts the folder finds every
    video. Videos older than ``ttl_s`` or beyond the newest ``keep`` are deleted by whichever
    replica makes the next one (`service.store.Expiry`).
    """

    def __init__(self, root: Path | None, keep: int, ttl_s: float) -> None:
        self._own = root is None
        self.root = Path(tempfile.mkdtemp(prefix="skelact-results-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.expiry = Expiry(self.root, ttl_s, keep=keep)

    def new(self, suffix: str) -> tuple[str, Path]:
        self.expiry.run()
        rid = new_id()
        return rid, self.root / f"{rid}{suffix}"

    def get(self, rid: str) -> Path:
        if check_id(rid):
            for suffix in SUFFIXES:
                path = self.root / f"{rid}{suffix}"
                if path.is_file() and not self.expiry.expired(path):
                    return path
        raise ServiceError(
            404,
            "result_not_found",
            f"no result {rid!r}",
            f"annotated videos are kept for {self.expiry.max_age_s:g} s (SKELACT_RESULTS_TTL_S), at most "
            f"the newest {self.keep} (SKELACT_RESULTS_KEEP); ask again with overlay=true",
        )

    def close(self) -> None:
        if self._own:
            shutil.rmtree(self.root, ignore_errors=True)
