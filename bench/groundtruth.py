"""Ground truth for multi-person tracking: MOTChallenge files built from hand-checked keyframes.

Layout (``groundtruth/``, see its README.md for how the boxes are defined and were checked):

* ``clips.json`` -- the labelled clips: video path relative to the data root, fps, frame count,
  size, who is who, why the clip was labelled.
* ``keyframes/<video path without suffix>.csv`` -- the editable source, one row per person and
  keyframe: ``frame,id,x0,y0,x1,y1,visibility,state`` (frame 1-based, pixels of the video's own
  frames). ``state``: ``in`` (counted), ``ignore`` (labelled but neither required nor penalised:
  MOT ``conf`` 0), ``out`` (the person is not in view from this frame until their next keyframe;
  its box columns are empty). Between two consecutive keyframes of a person the box and the
  visibility are interpolated linearly; a frame next to an ``ignore`` keyframe is ignored too.
* ``mot/<video path without suffix>.txt`` -- MOTChallenge rows ``frame,id,x,y,w,h,conf,class,
  visibility`` for every frame in which a person is in view, written by ``build``.

    python -m bench.groundtruth build                 # keyframes -> MOT files (all clips)
    python -m bench.groundtruth check                 # every MOT file parses, matches its keyframes
    python -m bench.groundtruth draw clips/felix_exercise.avi --out /tmp/felix [--keyframes] [--sheet 24]

Drawing is how the ground truth is checked by eye: ``--sheet N`` puts N frames per PNG.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skeleton.paths import REPO_ROOT, data_root

GT_ROOT = REPO_ROOT / "groundtruth"
INDEX = "clips.json"
KEYFRAME_FIELDS = ("frame", "id", "x0", "y0", "x1", "y1", "visibility", "state")
STATES = ("in", "ignore", "out")
MAX_KEYFRAME_GAP_S = 0.5  # the labelling rule: a keyframe at least every half second
PEDESTRIAN, DISTRACTOR = 1, 8  # MOTChallenge classes (8: seen through the glass wall, never counted)

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class Keyframe:
    frame: int  # 1-based
    person: int
    box: Box | None  # None for state "out"
    visibility: float
    state: str


@dataclass(frozen=True)
class TruthBox:
    """One MOT ground-truth row."""

    frame: int
    person: int
    box: Box
    conf: int  # 1 counted, 0 ignored
    cls: int
    visibility: float

    @property
    def counted(self) -> bool:
        return self.conf > 0


@dataclass(frozen=True)
class ClipInfo:
    """One labelled clip (an entry of ``clips.json``)."""

    video: str  # relative to the data root
    fps: float
    frames: int
    width: int
    height: int
    people: dict[int, str] = field(default_factory=dict)  # id -> who
    distractors: tuple[int, ...] = ()  # ids labelled as class 8 and always ignored
    why: str = ""

    @property
    def stem(self) -> str:
        return str(Path(self.video).with_suffix(""))

    @property
    def keyframes_path(self) -> Path:
        return GT_ROOT / "keyframes" / f"{self.stem}.csv"

    @property
    def mot_path(self) -> Path:
        return GT_ROOT / "mot" / f"{self.stem}.txt"

    @property
    def video_path(self) -> Path:
        return data_root() / self.video


def load_index(root: Path = GT_ROOT) -> dict[str, ClipInfo]:
    """``clips.json`` as {video path: ClipInfo}."""
    raw = json.loads((root / INDEX).read_text())
    out = {}
    for item in raw["clips"]:
        info = ClipInfo(
            video=item["video"],
            fps=float(item["fps"]),
            frames=int(item["frames"]),
            width=int(item["width"]),
            height=int(item["height"]),
            people={int(k): v for k, v in item.get("people", {}).items()},
            distractors=tuple(int(x) for x in item.get("distractors", ())),
            why=item.get("why", ""),
        )
        out[info.video] = info
    return out


def clip_info(name: str, root: Path = GT_ROOT) -> ClipInfo:
    """The labelled clip called ``name`` (its data path, with or without suffix, or its file stem)."""
    index = load_index(root)
    for info in index.values():
        if name in (info.video, info.stem, Path(info.video).name, Path(info.video).stem):
            return info
    raise KeyError(f"no ground truth for {name!r}; labelled clips: {sorted(index)}")


# ----------------------------------------------------------------------------- keyframes


def read_keyframes(path: Path) -> list[Keyframe]:
    out = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != KEYFRAME_FIELDS:
            raise ValueError(f"{path}: header must be {','.join(KEYFRAME_FIELDS)}")
        for line, row in enumerate(reader, start=2):
            state = row["state"].strip() or "in"
            if state not in STATES:
                raise ValueError(f"{path}:{line}: state {state!r} is not one of {STATES}")
            box = None
            if state != "out":
                x0, y0, x1, y1 = (float(row[k]) for k in ("x0", "y0", "x1", "y1"))
                if not (x1 > x0 and y1 > y0):
                    raise ValueError(f"{path}:{line}: empty box {(x0, y0, x1, y1)}")
                box = (x0, y0, x1, y1)
            vis = float(row["visibility"]) if row["visibility"].strip() else 1.0
            out.append(Keyframe(int(row["frame"]), int(row["id"]), box, vis, state))
    return out


def write_keyframes(path: Path, keyframes: Iterable[Keyframe]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(keyframes, key=lambda k: (k.person, k.frame))
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(KEYFRAME_FIELDS)
        for k in rows:
            coords = ["", "", "", ""] if k.box is None else [f"{v:.0f}" for v in k.box]
            w.writerow([k.frame, k.person, *coords, f"{k.visibility:g}", k.state])


def runs(keyframes: Sequence[Keyframe]) -> dict[int, list[list[Keyframe]]]:
    """Per person, the runs of consecutive in-view keyframes (an ``out`` keyframe ends a run)."""
    by_person: dict[int, list[Keyframe]] = defaultdict(list)
    for k in sorted(keyframes, key=lambda k: (k.person, k.frame)):
        by_person[k.person].append(k)
    out: dict[int, list[list[Keyframe]]] = {}
    for person, ks in by_person.items():
        frames = [k.frame for k in ks]
        if len(set(frames)) != len(frames):
            raise ValueError(f"person {person}: two keyframes on one frame")
        spans: list[list[Keyframe]] = []
        current: list[Keyframe] = []
        for k in ks:
            if k.state == "out":
                if current:
                    spans.append(current)
                current = []
            else:
                current.append(k)
        if current:
            spans.append(current)
        out[person] = spans
    return out


def interpolate(keyframes: Sequence[Keyframe], info: ClipInfo) -> list[TruthBox]:
    """Every frame's boxes: linear between consecutive keyframes of a run, nothing outside runs."""
    rows: list[TruthBox] = []
    for person, spans in runs(keyframes).items():
        cls = DISTRACTOR if person in info.distractors else PEDESTRIAN
        for span in spans:
            for a, b in zip(span, [*span[1:], span[-1]], strict=True):
                last = b.frame if b is span[-1] and a is span[-1] else b.frame - 1
                for frame in range(a.frame, last + 1):
                    t = 0.0 if b.frame == a.frame else (frame - a.frame) / (b.frame - a.frame)
                    assert a.box is not None and b.box is not None
                    box = tuple((1 - t) * p + t * q for p, q in zip(a.box, b.box, strict=True))
                    ignored = (
                        person in info.distractors or a.state == "ignore" or (t > 0 and b.state == "ignore")
                    )
                    vis = (1 - t) * a.visibility + t * b.visibility
                    rows.append(TruthBox(frame, person, _clip(box, info), 0 if ignored else 1, cls, vis))
    rows.sort(key=lambda r: (r.frame, r.person))
    return rows


def _clip(box: Sequence[float], info: ClipInfo) -> Box:
    x0, y0, x1, y1 = box
    return (
        min(max(x0, 0.0), info.width),
        min(max(y0, 0.0), info.height),
        min(max(x1, 0.0), info.width),
        min(max(y1, 0.0), info.height),
    )


# ----------------------------------------------------------------------------- MOT files


def format_mot(rows: Iterable[TruthBox]) -> str:
    lines = []
    for r in rows:
        x0, y0, x1, y1 = r.box
        box = f"{x0:.1f},{y0:.1f},{x1 - x0:.1f},{y1 - y0:.1f}"
        lines.append(f"{r.frame},{r.person},{box},{r.conf},{r.cls},{r.visibility:.2f}")
    return "\n".join(lines) + "\n"


def read_mot(path: Path) -> list[TruthBox]:
    """A MOTChallenge ground-truth file (``frame,id,x,y,w,h,conf,class,visibility``)."""
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) != 9:
            raise ValueError(f"{path}:{line_no}: expected 9 fields, got {len(parts)}")
        frame, person = int(parts[0]), int(parts[1])
        x, y, w, h = (float(v) for v in parts[2:6])
        rows.append(
            TruthBox(
                frame, person, (x, y, x + w, y + h), int(float(parts[6])), int(parts[7]), float(parts[8])
            )
        )
    return rows


def load_truth(name: str) -> tuple[ClipInfo, dict[int, list[TruthBox]]]:
    """A labelled clip's info and its MOT rows by frame (1-based; frames nobody is in are absent)."""
    info = clip_info(name)
    by_frame: dict[int, list[TruthBox]] = defaultdict(list)
    for r in read_mot(info.mot_path):
        by_frame[r.frame].append(r)
    return info, dict(by_frame)


def build(info: ClipInfo) -> list[TruthBox]:
    rows = interpolate(read_keyframes(info.keyframes_path), info)
    info.mot_path.parent.mkdir(parents=True, exist_ok=True)
    info.mot_path.write_text(format_mot(rows))
    return rows


def problems(info: ClipInfo) -> list[str]:
    """What is wrong with a clip's ground truth (empty: nothing)."""
    out: list[str] = []
    try:
        rows = read_mot(info.mot_path)
        keyframes = read_keyframes(info.keyframes_path)
    except (OSError, ValueError) as exc:
        return [str(exc)]
    if format_mot(rows) != format_mot(interpolate(keyframes, info)):
        out.append(f"{info.mot_path} differs from its keyframes: run python -m bench.groundtruth build")
    seen: set[tuple[int, int]] = set()
    for r in rows:
        x0, y0, x1, y1 = r.box
        where = f"{info.mot_path.name} frame {r.frame} id {r.person}"
        if not 1 <= r.frame <= info.frames:
            out.append(f"{where}: frame outside 1..{info.frames}")
        if (r.frame, r.person) in seen:
            out.append(f"{where}: two rows")
        seen.add((r.frame, r.person))
        if not (0 <= x0 < x1 <= info.width and 0 <= y0 < y1 <= info.height):
            out.append(f"{where}: box {r.box} not inside the {info.width}x{info.height} frame")
        if r.person not in info.people:
            out.append(f"{where}: id not described in clips.json")
        if not 0 <= r.visibility <= 1:
            out.append(f"{where}: visibility {r.visibility}")
    max_gap = math.floor(MAX_KEYFRAME_GAP_S * info.fps + 1e-6)
    for person, spans in runs(keyframes).items():
        for span in spans:
            for a, b in itertools.pairwise(span):
                if b.frame - a.frame > max_gap:
                    out.append(f"id {person}: keyframes {a.frame} and {b.frame} are more than 0.5 s apart")
        if person not in info.people:
            out.append(f"id {person} not described in clips.json")
    return out


# ----------------------------------------------------------------------------- drawing

_COLOURS = [
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 190),
    (0, 128, 128),
]


def colour(person: int) -> tuple[int, int, int]:
    """A fixed RGB colour per id."""
    return _COLOURS[(person - 1) % len(_COLOURS)]


def read_frames(path: Path, frames: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(1-based frame, RGB image) for the wanted frames, decoded in order."""
    import cv2

    wanted = sorted(set(frames))
    cap = cv2.VideoCapture(str(path))
    try:
        index = 0
        for frame in wanted:
            while index < frame:
                ok, bgr = cap.read()
                index += 1
                if not ok:
                    return
            yield frame, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def draw_boxes(
    rgb: np.ndarray,
    truth: Sequence[TruthBox],
    predicted: Mapping[int, Box] | None = None,
) -> np.ndarray:
    """Ground-truth boxes (id at the top left; ignored ones thinner, id suffixed ``i``) and optionally
    predicted ones (thin, white, ``p<id>``) on a copy of ``rgb``."""
    import cv2

    img = rgb.copy()
    scale = max(1.0, img.shape[1] / 640)
    thick = max(1, round(2 * scale))
    font = 0.5 * scale
    for r in truth:
        x0, y0, x1, y1 = (round(v) for v in r.box)
        col = colour(r.person)
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), col, thick if r.counted else max(1, thick // 2))
        label = (
            f"{r.person}" + ("" if r.counted else "i") + (f" v{r.visibility:.1f}" if r.visibility < 1 else "")
        )
        cv2.putText(img, label, (x0 + 2, y0 + round(14 * scale)), 0, font, col, thick)
    for pid, box in (predicted or {}).items():
        px0, py0, px1, py1 = (round(v) for v in box)
        cv2.rectangle(img, (px0, py0), (px1, py1), (255, 255, 255), 1)
        cv2.putText(img, f"p{pid}", (px0 + 2, py1 - 4), 0, font, (255, 255, 255), 1)
    return img


def put_title(img: np.ndarray, title: str, highlight: bool = False) -> np.ndarray:
    """``title`` at the bottom left (yellow when ``highlight``: a keyframe)."""
    import cv2

    scale = max(1.0, img.shape[1] / 640)
    colour_ = (255, 255, 0) if highlight else (255, 255, 255)
    cv2.putText(img, title, (4, img.shape[0] - 6), 0, 0.5 * scale, colour_, max(1, round(2 * scale)))
    return img


def contact_sheet(images: Sequence[np.ndarray], columns: int, tile_width: int) -> np.ndarray:
    """Images scaled to ``tile_width`` in a grid (black where the last row is short)."""
    import cv2

    tiles = []
    for img in images:
        h = round(img.shape[0] * tile_width / img.shape[1])
        tiles.append(cv2.resize(img, (tile_width, h), interpolation=cv2.INTER_AREA))
    th = max(t.shape[0] for t in tiles)
    rows = []
    for i in range(0, len(tiles), columns):
        row = tiles[i : i + columns]
        row += [np.zeros((th, tile_width, 3), np.uint8)] * (columns - len(row))
        rows.append(np.hstack([np.pad(t, ((0, th - t.shape[0]), (0, 0), (0, 0))) for t in row]))
    return np.vstack(rows)


def draw(
    name: str,
    out: Path,
    frames: Iterable[int] | None = None,
    keyframes_only: bool = False,
    sheet: int = 0,
    columns: int = 4,
    tile_width: int = 480,
    predicted: Mapping[int, Mapping[int, Box]] | None = None,
    crop: tuple[int, int, int, int] | None = None,
) -> list[Path]:
    """Draw a clip's ground truth on its frames: one PNG per frame, or ``sheet`` frames per PNG.

    ``frames`` (1-based) default to every keyframe with ``keyframes_only``, else every frame.
    ``predicted``: {frame: {track id: box}} drawn too (e.g. a tracker's output to compare).
    ``crop``: (x0, y0, x1, y1) pixels of the frame to show, to look closely at small people.
    """
    import cv2

    info, truth = load_truth(name)
    key_frames = {k.frame for k in read_keyframes(info.keyframes_path)}
    if frames is None:
        frames = sorted(key_frames) if keyframes_only else range(1, info.frames + 1)
    out.mkdir(parents=True, exist_ok=True)
    stem = info.stem.replace("/", "_")
    written: list[Path] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            path = out / f"{stem}_sheet{len(written) + 1:03d}.png"
            img = contact_sheet(batch, min(columns, len(batch)), tile_width)
            cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            written.append(path)
            batch.clear()

    for frame, rgb in read_frames(info.video_path, frames):
        t = (frame - 1) / info.fps
        title = f"{frame} {t:.2f}s" + (" K" if frame in key_frames else "")
        img = draw_boxes(rgb, truth.get(frame, []), (predicted or {}).get(frame))
        if crop is not None:
            img = np.ascontiguousarray(img[crop[1] : crop[3], crop[0] : crop[2]])
        put_title(img, title, frame in key_frames)
        if sheet:
            batch.append(img)
            if len(batch) == sheet:
                flush()
        else:
            path = out / f"{stem}_{frame:05d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            written.append(path)
    flush()
    return written


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.groundtruth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="keyframes -> MOT files")
    b.add_argument("clips", nargs="*", help="clip names (default: all in clips.json)")
    c = sub.add_parser("check", help="validate every MOT file against its keyframes and the rules")
    c.add_argument("clips", nargs="*")
    d = sub.add_parser("draw", help="draw a clip's ground truth on its frames")
    d.add_argument("clip")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--keyframes", action="store_true", help="only the keyframes")
    d.add_argument("--frames", default="", help="1-based frames, e.g. 1,5,10-20 (default: all)")
    d.add_argument("--sheet", type=int, default=0, help="frames per PNG (0: one PNG per frame)")
    d.add_argument("--columns", type=int, default=4)
    d.add_argument("--tile-width", type=int, default=480)
    d.add_argument("--crop", default="", help="x0,y0,x1,y1: only this part of the frame")
    args = p.parse_args(argv)
    index = load_index()
    chosen = [clip_info(n) for n in args.clips] if getattr(args, "clips", None) else list(index.values())
    if args.command == "build":
        for info in chosen:
            rows = build(info)
            print(f"{info.mot_path.relative_to(REPO_ROOT)}: {len(rows)} rows")
        return 0
    if args.command == "check":
        bad = 0
        for info in chosen:
            found = problems(info)
            bad += len(found)
            print(f"{info.video}: " + ("ok" if not found else f"{len(found)} problem(s)"))
            for msg in found[:20]:
                print("  " + msg)
        return 1 if bad else 0
    frames = _frame_list(args.frames) if args.frames else None
    crop = tuple(int(v) for v in args.crop.split(",")) if args.crop else None
    paths = draw(
        args.clip,
        args.out,
        frames,
        args.keyframes,
        args.sheet,
        args.columns,
        args.tile_width,
        crop=crop,  # type: ignore[arg-type]
    )
    print(f"{len(paths)} PNG(s) in {args.out}")
    return 0


def _frame_list(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
