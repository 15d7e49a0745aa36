"""Skeletons of your own videos, cached by file content: a re-run extracts only what is new.

Each video is extracted once per pose setting with `training.extract.extract_video` (the
service's perception stages) into ``<cache>/<content sha256>-<settings hash>.npz``, over the
span its samples need (frames outside it are decoded, not posed). A sidecar ``.json`` written
after the ``.npz`` records the span, so an interrupted run resumes where it stopped, and a
renamed or copied video is not extracted again. Content hashes are remembered per (path, size,
mtime) in ``hashes.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from perception.video import DecodeError
from training.extract import extract_video
from training.samples import Sample
from training.skeleton_cache import save_clip

log = logging.getLogger("training.clip_cache")

HASHES = "hashes.json"


@dataclass(frozen=True)
class Span:
    """Seconds of a video to pose; ``until`` None = to its end."""

    since: float = 0.0
    until: float | None = None

    def covers(self, other: Span) -> bool:
        return self.since <= other.since and (
            self.until is None or (other.until is not None and self.until >= other.until)
        )

    def union(self, other: Span) -> Span:
        until = None if self.until is None or other.until is None else max(self.until, other.until)
        return Span(min(self.since, other.since), until)


@dataclass
class CacheReport:
    """What one `extract_samples` call did."""

    extracted: list[Path] = field(default_factory=list)
    reused: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def content_hash(video: Path, known: dict[str, list[Any]]) -> str:
    """sha256 of the file, reused from ``known`` while its size and mtime are unchanged."""
    st = video.stat()
    key = str(video.absolute())
    hit = known.get(key)
    if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return str(hit[2])
    h = hashlib.sha256()
    with video.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    known[key] = [st.st_size, st.st_mtime_ns, h.hexdigest()]
    return h.hexdigest()


def settings_hash(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]


def needed_spans(samples: Sequence[Sample]) -> dict[Path, Span]:
    """Per video, the span covering all of its samples."""
    spans: dict[Path, Span] = {}
    for s in samples:
        span = Span(s.start, s.end)
        spans[s.video] = spans[s.video].union(span) if s.video in spans else span
    return spans


def _extract(video: Path, npz: Path, span: Span, options: dict[str, Any], progress: bool) -> str:
    """Extract one video's span into ``npz`` and its sidecar; returns the log line."""
    clip = extract_video(
        video, name=video.name, since_s=span.since, until_s=span.until, progress=progress, **options
    )
    save_clip(clip, npz)
    _write_json(
        npz.with_suffix(".json"),
        {
            "video": str(video),
            "since_s": span.since,
            "until_s": span.until,
            "options": options,
            "frames": clip.num_frames,
        },
    )
    return f"{video.name}: {clip.num_frames} frames posed, {len(clip.tracks)} tracks, primary={clip.primary}"


def extract_samples(
    samples: Sequence[Sample], cache_dir: Path, options: dict[str, Any], jobs: int = 1, progress: bool = True
) -> tuple[list[Sample], CacheReport]:
    """Samples with ``skeletons`` set (those whose video failed to decode are left out)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    hashes_path = cache_dir / HASHES
    known: dict[str, list[Any]] = json.loads(hashes_path.read_text()) if hashes_path.is_file() else {}
    suffix = settings_hash(options)
    report = CacheReport()
    files: dict[Path, Path] = {}
    todo: list[tuple[Path, Path, Span]] = []
    for video, span in needed_spans(samples).items():
        npz = cache_dir / f"{content_hash(video, known)[:24]}-{suffix}.npz"
        files[video] = npz
        sidecar = npz.with_suffix(".json")
        if npz.is_file() and sidecar.is_file():
            meta = json.loads(sidecar.read_text())
            done = Span(float(meta["since_s"]), meta["until_s"])
            if done.covers(span):
                report.reused.append(video)
                continue
            span = done.union(span)  # a longer span than before: extract the union once
        todo.append((video, npz, span))
    _write_json(hashes_path, known)
    pool = (
        ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
        if jobs > 1 and len(todo) > 1
        else None
    )
    try:
        futures: list[Future[str]] = []
        if pool is not None:
            futures = [pool.submit(_extract, video, npz, span, options, False) for video, npz, span in todo]
        bar = tqdm(
            todo, unit="video", desc="extracting skeletons", disable=not progress or not todo, file=sys.stderr
        )
        for i, (video, npz, span) in enumerate(bar):
            try:
                line = futures[i].result() if futures else _extract(video, npz, span, options, progress)
            except DecodeError as exc:
                log.error("skipping %s: %s", video, exc.reason)
                report.failed[video] = exc.reason
                continue
            report.extracted.append(video)
            log.info("%s", line)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    kept = [replace(s, skeletons=files[s.video]) for s in samples if s.video not in report.failed]
    return kept, report
