"""TensorRT engine cache: one folder per model and build, one builder at a time, complete or absent.

ONNX Runtime's TensorRT provider names an engine file from the ONNX *file name*, the graph's
tensor names and the ORT / CUDA / TensorRT versions (plus ``_fp16`` and ``_sm<compute capability>``),
never from the weights or the optimisation profile, and writes it in place with a plain stream
(``<cache>/TensorrtExecutionProvider_TRTKernel_graph_<graph>_<hash>_0_0[_fp16]_sm<cc>.engine``
with its ``.profile``, and ``TensorrtExecutionProvider_cache_sm<cc>.timing``). The shipped models
share every one of those names, and ORT locks only inside one process. So here:

* ``engine_dir``: ``<root>/<model>/<onnx sha256[:12]>-<fp16|fp32>-b<min>-<opt>-<max>-trt<v>-ort<v>``,
  where root is ``SKELACT_TRT_CACHE_DIR`` or ``<model dir>/trt_cache``; the service, the export and
  the bench all call it, so the export writes where the service reads.
* ``load_or_build``: holds ``flock`` on ``<folder>.lock`` while ORT loads or builds the engine and
  a warm-up runs it; then records every file of the folder, with its size and sha256, in
  ``complete.json``. Before ORT looks, anything not recorded, or no longer matching its record
  (a build killed mid-write, a truncated or corrupt file), is removed, so ORT rebuilds it.

Torch- and ONNX-Runtime-free (callers pass what ORT needs), so it is tested with real processes
and a stand-in build step on machines without a GPU.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from skeleton.manifest import sha256_file

log = logging.getLogger(__name__)

CACHE_SUBDIR = "trt_cache"  # the default root, inside each model's folder
RECORD = "complete.json"
_T = TypeVar("_T")
_unwritable_reported = False


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT optimisation profile of the batch axis: one engine serves every batch in [min, max]."""

    min: int
    opt: int
    max: int

    @classmethod
    def up_to(cls, max_batch: int) -> BatchProfile:
        return cls(1, max(1, min(8, max_batch)), max_batch)


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on that is known without a GPU (ORT adds the GPU's
    ``sm<cc>`` to the file name inside the folder)."""

    model: str
    onnx_sha256: str
    fp16: bool
    profile: BatchProfile | None  # None: the graph has a fixed batch size
    tensorrt: str | None  # installed TensorRT package version, None when not installed here
    onnxruntime: str

    @property
    def folder(self) -> str:
        parts = [self.onnx_sha256[:12], "fp16" if self.fp16 else "fp32"]
        if self.profile is not None:
            parts.append(f"b{self.profile.min}-{self.profile.opt}-{self.profile.max}")
        parts += [f"trt{self.tensorrt or 'unknown'}", f"ort{self.onnxruntime}"]
        return "-".join(parts)


@functools.cache
def tensorrt_version() -> str | None:
    """Version of the installed TensorRT wheels (``tensorrt-cu13-libs`` in the images), if any."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "").lower())
        if re.fullmatch(r"tensorrt(-cu\d+)?(-libs)?", name):
            found[name] = dist.version
    libs = [v for n, v in sorted(found.items()) if n.endswith("-libs")]  # what ORT loads
    versions = libs or [v for _, v in sorted(found.items())]
    return versions[0] if versions else None


def engine_key(
    model: str, onnx_path: Path, fp16: bool, profile: BatchProfile | None, onnxruntime: str
) -> EngineKey:
    return EngineKey(model, sha256_file(onnx_path), fp16, profile, tensorrt_version(), onnxruntime)


def cache_root(model_dir: Path, configured: Path | None) -> Path:
    """``SKELACT_TRT_CACHE_DIR`` when set, else ``<model dir>/trt_cache``."""
    return configured if configured is not None else model_dir / CACHE_SUBDIR


def engine_dir(root: Path, key: EngineKey) -> Path:
    """The one folder of this model's engines for this build under a cache root."""
    return root / re.sub(r"[^A-Za-z0-9._-]", "_", key.model) / key.folder


def lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def writable_dir(candidates: Sequence[Path]) -> Path | None:
    """The first candidate folder that can be created and written (with room for its lock file);
    None, said once per process, when none can."""
    global _unwritable_reported
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock_path(folder).touch()
            with tempfile.TemporaryFile(dir=folder.parent):  # beside the folder: never in a record
                pass
            if not os.access(folder, os.W_OK):
                raise PermissionError(errno.EACCES, "not writable", str(folder))
        except OSError as exc:
            log.debug("TensorRT engine cache %s is not writable: %s", folder, exc)
            continue
        if folder != candidates[0]:
            log.warning("%s is not writable; caching TensorRT engines in %s", candidates[0], folder)
        return folder
    if not _unwritable_reported:
        _unwritable_reported = True
        log.warning(
            "no writable TensorRT engine cache (tried %s): engines are built in memory at every start; "
            "set SKELACT_TRT_CACHE_DIR to a writable folder",
            ", ".join(map(str, candidates)),
        )
    return None


def complete_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Files of ``folder`` recorded complete that still match their record (size and sha256)."""
    try:
        record = json.loads((folder / RECORD).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    good = {}
    for name, entry in record.items():
        path = folder / name
        try:
            if path.stat().st_size == entry["size"] and sha256_file(path) == entry["sha256"]:
                good[name] = entry
        except (OSError, KeyError, TypeError):
            continue
    return good


def _write_record(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    """Atomically: a crash leaves the old record or the new one, never half of one."""
    if not files:
        (folder / RECORD).unlink(missing_ok=True)
        return
    body = {"files": files, "by": f"{socket.gethostname()} pid {os.getpid()}", "at": time.time()}
    tmp = folder / f".{RECORD}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(body, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / RECORD)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_STALE = "not recorded complete, or changed since: an interrupted build or a corrupt file"


def _prune(folder: Path, why: str = _STALE) -> dict[str, dict[str, Any]]:
    """Remove what is not recorded complete (or no longer matches); return what is kept."""
    good = complete_files(folder)
    removed = []
    for path in sorted(folder.iterdir()):
        if path.name == RECORD or path.name in good:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
    if removed:
        _write_record(folder, good)
        log.warning("%s: removed %s (%s)", folder, ", ".join(removed), why)
    return good


def _current_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file now in the folder, flushed to disk first."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name == RECORD or not path.is_file():
            continue
        with open(path, "rb") as f:
            os.fsync(f.fileno())  # on disk before a record says it is complete
        files[path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return files


def _acquire(f: Any, lock: Path) -> bool:
    """Block until this process holds the lock; False where the file system has no locks."""
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            log.info("waiting for %s (held by %s)", lock, f.read().strip() or "another process")
            fcntl.flock(f, fcntl.LOCK_EX)
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        log.warning("%s: file locks unsupported here (%s); concurrent builds are possible", lock, exc)
        return False
    f.seek(0)
    f.truncate()
    f.write(f"{socket.gethostname()} pid {os.getpid()}\n")  # who holds it, for the waiters' log
    f.flush()
    return True


@contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """``flock`` on ``lock`` across processes (and hosts sharing the volume, where it supports
    locks); the kernel releases it when the holder dies, even by SIGKILL."""
    with open(lock, "a+") as f:
        locked = _acquire(f, lock)
        try:
            yield
        finally:
            if locked:
                fcntl.flock(f, fcntl.LOCK_UN)


def load_or_build(folder: Path, open_session: Callable[[], _T], warm_up: Callable[[_T], bool]) -> _T:
    """Run ``open_session`` (ORT loads the cached engine from ``folder``, or builds and writes one)
    as the only process doing so for this folder, after removing whatever is not recorded complete.
    ``warm_up`` runs the session and says whether the engine really ran (False: ORT fell back to
    another provider); only then are the folder's files recorded complete. On failure, what the
    attempt wrote is removed."""
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(lock_path(folder)):
        kept = _prune(folder)
        try:
            session = open_session()
            ran = warm_up(session)
        except BaseException:
            _prune(folder, "left by a failed TensorRT session")
            raise
        if not ran:
            _prune(folder, "left by a session that does not run on TensorRT")
            return session
        files = _current_files(folder)
        if files != kept:
            _write_record(folder, files)
            log.info("TensorRT engine files recorded complete in %s: %s", folder, ", ".join(files))
        return session
