"""Files that every replica of the service shares on one volume: the storage primitives of annotated
videos (`service.results`), asynchronous clip jobs (`service.jobs`) and custom action sets
(``SKELACT_ACTION_SETS_DIR``).

Why files, not Redis: the state is a few JSON documents and large video files that must outlive a
pod and be read by every pod. A ReadWriteMany volume (NFS, CephFS, EFS, Azure Files, Filestore) is
something every Kubernetes cluster that runs this service for more than one host has or can get
from its cloud, holds the videos too (Redis would need a second store for them), needs no server to
run, secure and back up, and is a plain folder with one replica (docker compose, tests). What a
file system cannot give reliably over NFS is locks, so nothing here takes one.

The contract (what callers may rely on):

* **Ids** (`new_id`, `check_id`): 32 lower-case hex digits. A path is built only from an id that
  `check_id` accepted, so a request cannot name a file outside the folder.
* **Atomic writes** (`atomic_write`): a reader sees the old content or the new, never a part: the
  data goes to a temporary file in the same folder, is flushed to disk, then renamed over the
  name (rename within a folder is atomic on POSIX file systems and on NFS).
* **Exclusive creation** (`create_new`): the same, but fails with `FileExistsError` when the name
  exists: the temporary file is hard-linked to the name (``link`` is atomic and never replaces,
  also on NFS, where ``O_EXCL`` was not always honoured).
* **Versioned documents** (`VersionedStore`): named JSON documents with optimistic concurrency.
  Version ``n`` of document ``d`` is the file ``d/<n>.json``, created with `create_new`. A writer
  states the version it read (``if_version``, an HTTP ``If-Match`` of `etag`): when another
  process wrote that version's successor first, the write fails with `VersionConflict` instead of
  overwriting it (compare-and-swap without locks). Deleting writes a tombstone version, so
  versions only grow. `VersionedStore.read` finds the newest version by opening the next version's
  path until one is missing: opening a path revalidates it (NFS close-to-open consistency), so a
  reader sees what another process wrote, without relying on cached directory listings. The
  newest `KEEP_VERSIONS` versions are kept; older ones are deleted by the writer.
* **Expiry by age** (`Expiry`): files and folders older than a maximum age (modification time) are
  deleted, optionally also all but the newest ``keep``; any replica may run it at any time (a file
  deleted twice is not an error). Time is the file system's clock (mtime), not a process counter.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "KEEP_VERSIONS",
    "PRUNE_AGE_S",
    "Expiry",
    "VersionConflict",
    "Versioned",
    "VersionedStore",
    "atomic_write",
    "check_id",
    "create_new",
    "etag",
    "new_id",
    "parse_etag",
]

_ID = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TEMP_PREFIX = ".tmp-"
KEEP_VERSIONS = 8
PRUNE_AGE_S = 60.0
_TOMBSTONE = "__deleted__"


def new_id() -> str:
    return uuid.uuid4().hex


def check_id(value: str) -> bool:
    """A well-formed id (`new_id`); anything else must not reach a path."""
    return _ID.fullmatch(value) is not None


def _temp_beside(path: Path) -> Path:
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{uuid.uuid4().hex[:12]}")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(folder: Path) -> None:
    """Make a rename or link in ``folder`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new content, never a part."""
    tmp = _temp_beside(path)
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def create_new(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` at once; `FileExistsError` if it exists (nothing is replaced)."""
    tmp = _temp_beside(path)
    try:
        _write_synced(tmp, data)
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(path.parent)


# --------------------------------------------------------------------------- versioned documents


def etag(version: int) -> str:
    """The HTTP ETag of a document version (strong)."""
    return f'"{version}"'


def parse_etag(value: str | None) -> int | None:
    """The version an ``If-Match`` header names (`etag`, or a bare number); None when absent."""
    if value is None or not value.strip():
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise ValueError(f"If-Match must be an ETag this service gave out, like {etag(3)}, not {value!r}")
    return int(text)


@dataclass(frozen=True)
class Versioned:
    """A document as read: its content (None once deleted) and its version (0: never written)."""

    doc: dict[str, Any] | None
    version: int

    @property
    def etag(self) -> str:
        return etag(self.version)


class VersionConflict(Exception):
    """Another writer got there first: ``current`` is what the store holds now."""

    def __init__(self, name: str, expected: int, current: Versioned) -> None:
        super().__init__(f"{name}: version {expected} was expected, the store has {current.version}")
        self.name = name
        self.expected = expected
        self.current = current


class VersionedStore:
    """Named JSON documents with versions in ``root`` (see the module's contract)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._newest: dict[str, int] = {}  # the newest version this process has seen, per name

    def _folder(self, name: str) -> Path:
        if _NAME.fullmatch(name) is None:
            raise ValueError(
                f"document name {name!r}: 1-64 letters, digits, '_', '.' or '-', starting with a "
                "letter or digit"
            )
        return self.root / name

    @staticmethod
    def _file(folder: Path, version: int) -> Path:
        return folder / f"{version:012d}.json"

    def _listed(self, folder: Path) -> int:
        versions = [int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit()]
        return max(versions, default=0)

    def read(self, name: str) -> Versioned:
        """The newest version of ``name`` (``doc`` None, version 0 when it was never written)."""
        folder = self._folder(name)
        start = self._newest.get(name) or self._listed(folder)
        for _ in range(3):
            found = self._walk(folder, start)
            if found is not None:
                break
            start = self._listed(folder)  # the version we knew was pruned meanwhile: list once
        else:
            raise RuntimeError(f"{folder}: versions vanish while being read")
        version, data = found
        self._newest[name] = version
        if data is None:
            return Versioned(None, version)
        doc = json.loads(data)
        return Versioned(None if doc.get(_TOMBSTONE) else doc, version)

    def _walk(self, folder: Path, start: int) -> tuple[int, bytes | None] | None:
        """(newest version, its bytes) found by opening start + 1, start + 2, ... (never listing);
        None when version ``start`` itself is gone."""
        version, data = start, None
        while True:
            try:
                data = self._file(folder, version + 1).read_bytes()
            except FileNotFoundError:
                break
            version += 1
        if data is None and version:
            try:
                data = self._file(folder, version).read_bytes()
            except FileNotFoundError:
                return None
        return version, data

    def write(self, name: str, doc: dict[str, Any], if_version: int | None = None) -> Versioned:
        """Write the next version of ``name``. ``if_version``: the version this write replaces (0:
        the document must not exist); `VersionConflict` when the store moved on. None: whatever is
        there (last writer wins)."""
        return self._commit(name, doc, if_version)

    def delete(self, name: str, if_version: int | None = None) -> Versioned:
        """Write a tombstone: `read` then returns no document; the version number goes on."""
        return self._commit(name, {_TOMBSTONE: True}, if_version)

    def names(self) -> list[str]:
        """Documents that exist now (lists the folder: another replica's new document may show
        only after the volume's directory cache time)."""
        return list(self.documents())

    def documents(self) -> dict[str, Versioned]:
        """Name -> newest version of every document that exists now, each read once (as `names`)."""
        out = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)):
            current = self.read(folder.name)
            if current.doc is not None:
                out[folder.name] = current
        return out

    def _commit(self, name: str, doc: dict[str, Any], if_version: int | None) -> Versioned:
        folder = self._folder(name)
        folder.mkdir(exist_ok=True)
        data = json.dumps(doc, separators=(",", ":")).encode()
        while True:
            current = self.read(name)
            if if_version is not None and current.version != if_version:
                raise VersionConflict(name, if_version, current)
            version = current.version + 1
            try:
                create_new(self._file(folder, version), data)
            except FileExistsError:  # another writer took this version between our read and now
                if if_version is not None:
                    raise VersionConflict(name, if_version, self.read(name)) from None
                continue
            self._newest[name] = version
            self._prune(folder, version)
            return Versioned(None if _TOMBSTONE in doc else doc, version)

    def _prune(self, folder: Path, newest: int) -> None:
        """Delete versions older than the newest `KEEP_VERSIONS` and than `PRUNE_AGE_S`, oldest
        first: the versions left stay a contiguous run, which `read` relies on (a missing next
        version means the one at hand is the newest). The age keeps a slow writer's number from
        being freed and taken again."""
        top = newest - KEEP_VERSIONS
        low = top
        while low > 1 and self._file(folder, low - 1).exists():
            low -= 1
        cutoff = time.time() - PRUNE_AGE_S
        for version in range(max(low, 1), top + 1):
            path = self._file(folder, version)
            try:
                if path.stat().st_mtime > cutoff:
                    return
            except FileNotFoundError:
                continue
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- expiry


class Expiry:
    """Deletes the entries of ``root`` older than ``max_age_s`` (and beyond the newest ``keep``),
    at most once every ``every_s`` seconds per process (`run`), or at once (`run(force=True)`)."""

    def __init__(self, root: Path, max_age_s: float, keep: int | None = None, every_s: float = 60.0) -> None:
        self.root = root
        self.max_age_s = max_age_s
        self.keep = keep
        self.every_s = every_s
        self._last = float("-inf")

    def expired(self, path: Path, now: float | None = None) -> bool:
        """Older than the maximum age (False when it does not exist)."""
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return False
        return (now if now is not None else time.time()) - mtime > self.max_age_s

    def run(self, force: bool = False) -> int:
        """Delete what has expired; returns how many entries were deleted."""
        t = time.monotonic()
        if not force and t - self._last < self.every_s:
            return 0
        self._last = t
        now = time.time()
        entries: list[tuple[float, Path]] = []
        for path in self.root.iterdir():
            with contextlib.suppress(FileNotFoundError):
                entries.append((path.stat().st_mtime, path))
        entries.sort(reverse=True)  # newest first
        kept = 0
        deleted = 0
        for mtime, path in entries:
            temp = path.name.startswith(TEMP_PREFIX)
            old = now - mtime > self.max_age_s
            over = not temp and self.keep is not None and kept >= self.keep
            if old or over:
                _remove(path)
                deleted += 1
            elif not temp:
                kept += 1
        return deleted


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
