"""Your own labelled clips: a folder with one sub-folder per label, or a CSV of clip, start, end,
label (optional: group); and the held-out split, by group and stratified by label.

CSV columns (header required): ``clip`` (a video path, relative to the CSV's folder or absolute),
``label``, optional ``start`` / ``end`` (seconds into the video; empty = its start / end),
``group`` (clips of one group -- a subject, a session, a trial -- are never split between
training and test; default: the video itself). The run's own ``samples.csv`` adds ``split`` and
``skeletons`` (the cached extraction).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mov", ".mkv")
COLUMNS = ("clip", "start", "end", "label", "group", "split", "skeletons")


class SamplesError(ValueError):
    """The folder or CSV cannot give a training set; the message says which line and how to fix it."""


@dataclass(frozen=True)
class Sample:
    """One labelled stretch of one video."""

    video: Path
    label: str
    start: float = 0.0
    end: float | None = None  # None: to the end of the video
    group: str = ""  # never split; "" = the video
    split: str = ""  # "train" / "test" once split
    skeletons: Path | None = None  # the cached extraction (training.clip_cache)

    @property
    def group_key(self) -> str:
        return self.group or str(self.video)

    @property
    def name(self) -> str:
        span = (
            ""
            if self.start == 0 and self.end is None
            else f"@{self.start:g}-{'' if self.end is None else f'{self.end:g}'}"
        )
        return f"{self.video.parent.name}/{self.video.name}{span}"  # the folder: labels often name it


def read_folder(root: Path) -> list[Sample]:
    """``root/<label>/<video>``: every video of a sub-folder (searched recursively) is one sample."""
    samples = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        videos = sorted(p for p in sub.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        samples += [Sample(v.absolute(), sub.name) for v in videos]
    if not samples:
        raise SamplesError(
            f"no videos ({', '.join(VIDEO_SUFFIXES)}) in the sub-folders of {root}: "
            "put each label's clips in a sub-folder named after it, or pass a CSV"
        )
    return samples


def _seconds(value: str | None, where: str, column: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        out = float(value)
    except ValueError:
        raise SamplesError(f"{where}: {column} {value!r} is not a number of seconds") from None
    if not math.isfinite(out) or out < 0:
        raise SamplesError(f"{where}: {column} {value!r} must be >= 0 seconds")
    return out


def read_csv(path: Path, videos_root: Path | None = None) -> list[Sample]:
    """Rows of a samples CSV; ``clip`` paths are relative to ``videos_root`` (default: the CSV's folder)."""
    root = videos_root or path.parent
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"clip", "label"} - set(reader.fieldnames or ())
        if missing:
            raise SamplesError(
                f"{path}: missing column(s) {sorted(missing)}; expected a header clip,start,end,label[,group]"
            )
        samples = []
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            clip, label = (row.get("clip") or "").strip(), (row.get("label") or "").strip()
            if not clip or not label:
                raise SamplesError(f"{where}: clip and label are required")
            video = (root / clip).absolute()
            if not video.is_file():
                raise SamplesError(f"{where}: no video {video}")
            start = _seconds(row.get("start"), where, "start") or 0.0
            end = _seconds(row.get("end"), where, "end")
            if end is not None and end <= start:
                raise SamplesError(f"{where}: end {end:g} s is not after start {start:g} s")
            skel = (row.get("skeletons") or "").strip()
            samples.append(
                Sample(
                    video,
                    label,
                    start,
                    end,
                    (row.get("group") or "").strip(),
                    (row.get("split") or "").strip(),
                    Path(skel) if skel else None,
                )
            )
    if not samples:
        raise SamplesError(f"{path}: no rows")
    return samples


def read_samples(source: Path, videos_root: Path | None = None) -> list[Sample]:
    """A folder of label sub-folders, or a CSV."""
    if source.is_dir():
        return read_folder(source)
    if source.is_file():
        return read_csv(source, videos_root)
    raise SamplesError(f"{source}: no such folder or CSV file")


def write_samples(samples: Iterable[Sample], path: Path) -> Path:
    """The run's samples.csv (absolute paths, the split, the skeleton files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for s in samples:
            w.writerow(
                [
                    s.video,
                    f"{s.start:g}",
                    "" if s.end is None else f"{s.end:g}",
                    s.label,
                    s.group,
                    s.split,
                    s.skeletons or "",
                ]
            )
    return path


def split_samples(
    samples: Sequence[Sample], test_size: float = 0.25, seed: int = 0, test_groups: Sequence[str] = ()
) -> list[Sample]:
    """Mark each sample train or test, whole groups at a time.

    With ``test_groups`` those groups are held out. Otherwise, label by label (fewest groups
    first), seeded random groups go to test until about ``test_size`` of the label's groups are
    there -- never the last training group of any label, so every label is learnt; a label with a
    single group has no test example (the caller reports it).
    """
    labels_of: dict[str, set[str]] = {}
    for s in samples:
        labels_of.setdefault(s.group_key, set()).add(s.label)
    groups_of: dict[str, set[str]] = {}
    for g, labels in labels_of.items():
        for lab in labels:
            groups_of.setdefault(lab, set()).add(g)
    if test_groups:
        unknown = sorted(set(test_groups) - set(labels_of))
        if unknown:
            raise SamplesError(f"test groups {unknown} not found; groups: {sorted(labels_of)[:20]}")
        test = set(test_groups)
        bare = sorted(lab for lab, gs in groups_of.items() if gs <= test)
        if bare:
            raise SamplesError(f"labels {bare} would have no training clips with test groups {sorted(test)}")
    else:
        if not 0 < test_size < 1:
            raise SamplesError(f"test size {test_size} must be between 0 and 1")
        rng = np.random.default_rng(seed)
        test = set()
        for lab in sorted(groups_of, key=lambda k: (len(groups_of[k]), k)):
            groups = sorted(groups_of[lab])
            target = min(len(groups) - 1, max(1, round(test_size * len(groups))))
            for g in rng.permutation(groups):
                if len(test & groups_of[lab]) >= target:
                    break
                g = str(g)
                if g in test:
                    continue
                # never take the last training group of any label this group carries
                if all(groups_of[other] - test - {g} for other in labels_of[g]):
                    test.add(g)
    return [replace(s, split="test" if s.group_key in test else "train") for s in samples]


def labels_of(samples: Iterable[Sample]) -> list[str]:
    """The model's labels: every label of the samples, sorted."""
    return sorted({s.label for s in samples})
