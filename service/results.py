"""Annotated videos of ``POST /recognize?overlay=true``, kept for download (``GET /results/{id}``)."""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

from service.core.errors import ServiceError

__all__ = ["ResultStore"]


class ResultStore:
    """Annotated videos kept for download (the newest ``keep``; older ones are deleted)."""

    def __init__(self, root: Path | None, keep: int) -> None:
        self._own = root is None
        self.root = Path(tempfile.mkdtemp(prefix="skelact-results-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._items: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()

    def new(self, suffix: str) -> tuple[str, Path]:
        rid = uuid.uuid4().hex
        path = self.root / f"{rid}{suffix}"
        with self._lock:
            self._items[rid] = path
            while len(self._items) > self.keep:
                _, old = self._items.popitem(last=False)
                old.unlink(missing_ok=True)
        return rid, path

    def get(self, rid: str) -> Path:
        with self._lock:
            path = self._items.get(rid)
        if path is None or not path.is_file():
            raise ServiceError(
                404,
                "result_not_found",
                f"no result {rid!r}",
                f"results are kept for the last {self.keep} requests; ask again with overlay=true",
            )
        return path

    def close(self) -> None:
        if self._own:
            shutil.rmtree(self.root, ignore_errors=True)
