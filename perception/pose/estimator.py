"""Pose estimation stage: RGB frame -> `PersonPose` tuples. MediaPipe types never leave this module.

Two implementations behind one `PoseEstimator` protocol:

* `TasksPoseEstimator` -- multi-person MediaPipe Tasks pose landmarker (VIDEO mode; its two model
  graphs with the ROI choice in Python, `perception.pose.graph`), run fully offline from the
  bundle of `perception.pose.bundle` (nothing is downloaded). Optional tiling finds small people.
* `LegacyPoseEstimator` -- single-person ``mp.solutions.pose`` (fallback).

An estimator instance belongs to one stream or clip: VIDEO mode tracks people between calls and
needs increasing timestamps (non-increasing ones are nudged forward by 1 ms).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from perception.pose.bundle import ensure_pose_bundle, mediapipe_version
from perception.pose.graph import (
    Carried,
    PoseGraph,
    Roi,
    Window,
    landmark_arrays,
    landmark_xyz,
    roi_from_landmarks,
)
from perception.pose.person import choose_people, make_person_pose
from skeleton.types import PersonPose

__all__ = [
    "ESTIMATOR_KINDS",
    "LegacyPoseEstimator",
    "PoseEstimator",
    "PoseSpec",
    "SearchSpec",
    "TasksPoseEstimator",
    "TileSpec",
    "create_pose_estimator",
]


@runtime_checkable
class PoseEstimator(Protocol):
    """Finds people in one RGB frame. One instance per stream/clip; not thread-safe."""

    name: str
    max_people: int

    def estimate(
        self, frame_rgb: np.ndarray, timestamp_s: float, expected: Sequence[PersonPose] = ()
    ) -> tuple[PersonPose, ...]:
        """People in ``frame_rgb`` (H, W, 3) uint8 RGB at ``timestamp_s``; pixel coordinates.
        ``expected``: where the caller's tracks expect people in this frame (pixel landmarks of
        this frame's size); an estimator that does not track them itself looks there."""
        ...

    def close(self) -> None:
        """Release native resources; the instance is unusable afterwards."""
        ...


# --------------------------------------------------------------------------- helpers


def _check_frame(frame_rgb: np.ndarray) -> np.ndarray:
    if frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3 or frame_rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame_rgb.shape} {frame_rgb.dtype}")
    return np.ascontiguousarray(frame_rgb)


class _Clock:
    """Strictly increasing integer milliseconds, as MediaPipe's VIDEO mode demands."""

    def __init__(self) -> None:
        self.last_ms: int | None = None

    def __call__(self, timestamp_s: float) -> int:
        ms = round(float(timestamp_s) * 1000.0) if np.isfinite(timestamp_s) else 0
        if self.last_ms is not None and ms <= self.last_ms:
            ms = self.last_ms + 1
        self.last_ms = ms
        return ms


# --------------------------------------------------------------------------- Tasks estimator


@dataclass(frozen=True, slots=True)
class TileSpec:
    """Overlapping crops run instead of (or besides) the whole frame, so small people are found.

    The person detector sees the frame letterboxed to 224x224 whatever its resolution, so people
    that are small *relative to the frame* are missed (upscaling does not help). Each tile is
    letterboxed on its own: ``cols`` x ``rows`` tiles each covering ``1/cols + overlap`` of the
    width (likewise height). The default 2x1 with 0.25 overlap makes 4:3 frames into two squares,
    1.33x the detector resolution of the whole frame. ``max_frame_side``: tile only frames whose
    longer side is at most this (None: always).
    """

    cols: int = 2
    rows: int = 1
    overlap: float = 0.25
    max_frame_side: int | None = None
    # a tile's landmarker stops re-detecting once it tracks this many; None: the estimator's max_people
    poses_per_tile: int | None = None
    # also run on the whole frame, for people larger than a tile (costs one more detector and
    # landmark pass per person; on felix_exercise.avi tiles alone find as many people)
    full_frame: bool = False

    def windows(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """Tile rectangles (x0, y0, x1, y1) in pixels."""
        out = []
        tw = min(1.0, 1.0 / self.cols + self.overlap)
        th = min(1.0, 1.0 / self.rows + self.overlap)
        for r in range(self.rows):
            for c in range(self.cols):
                fx0 = 0.0 if self.cols == 1 else c * (1.0 - tw) / (self.cols - 1)
                fy0 = 0.0 if self.rows == 1 else r * (1.0 - th) / (self.rows - 1)
                x0, y0 = round(fx0 * width), round(fy0 * height)
                out.append((x0, y0, min(width, x0 + round(tw * width)), min(height, y0 + round(th * height))))
        return out


@dataclass(frozen=True, slots=True)
class SearchSpec:
    """Where and how often the person detector also looks into crops of the frame for people it
    misses on the whole frame (`perception.pose.graph`: only new people get a landmark pass).

    The windows are three crops of half the frame's longer side (the whole shorter side) at 0, 1/4
    and 1/2 of it: every person narrower than a quarter of the frame lies wholly inside one, and
    the detector sees them 1.33x (4:3) to 1.78x (16:9) larger. On felix_exercise.avi the detector
    finds 87 % of the people per frame in them, 16 % on the whole frame (docs/tracking.md). One
    window is searched every ``every`` frames in turn (a detector pass costs ~8 ms, a quarter of a
    one-person frame); once found, a person is tracked by the landmark model's own ROI.
    ``confidence``: the detector's threshold there (lower than the whole frame's: a false
    detection costs one landmark pass, and the landmark model's presence score rejects it).
    """

    every: int = 3
    confidence: float = 0.3

    def windows(self, width: int, height: int) -> list[Window]:
        """The crops (x0, y0, x1, y1) of a width x height frame."""
        if width >= height:
            w = width // 2
            return [(0, 0, w, height), (width // 4, 0, width // 4 + w, height), (width - w, 0, width, height)]
        h = height // 2
        return [(0, 0, width, h), (0, height // 4, width, height // 4 + h), (0, height - h, width, height)]

    def due(self, frame: int, width: int, height: int) -> list[Window]:
        """The window searched at the estimator's ``frame``-th call (none between)."""
        if frame % self.every:
            return []
        wins = self.windows(width, height)
        return [wins[(frame // self.every) % len(wins)]]


@dataclass(frozen=True)
class _Carried:
    """A `TasksPoseEstimator`'s state between frames, replaced whole after each frame."""

    full: Carried | None
    tiles: tuple[Carried, ...]
    calls: int


class _ClosesAfterFrame:
    """``estimate`` and ``close`` under one lock: a cancelled request closes its estimators while a
    pose worker may still be on its last frame, and MediaPipe crashes when its graph closes under
    a running call. Subclasses implement ``_estimate`` and ``_release``."""

    def __init__(self) -> None:
        self._closed = False
        self._lock = threading.Lock()

    def estimate(
        self, frame_rgb: np.ndarray, timestamp_s: float, expected: Sequence[PersonPose] = ()
    ) -> tuple[PersonPose, ...]:
        with self._lock:
            if self._closed:
                raise RuntimeError("estimator is closed")
            return self._estimate(frame_rgb, timestamp_s, expected)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._release()

    def _estimate(
        self, frame_rgb: np.ndarray, timestamp_s: float, expected: Sequence[PersonPose]
    ) -> tuple[PersonPose, ...]:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError


class TasksPoseEstimator(_ClosesAfterFrame):
    """Multi-person MediaPipe Tasks PoseLandmarker (VIDEO mode) from the offline bundle.

    ``min_tracking_confidence`` is, in the Tasks graph, the IoU above which a fresh detection is
    taken for an already tracked person and dropped. MediaPipe's 0.5 drops the second of two
    people standing close (their body ROIs overlap): on the two-person NTU clip 0.5 finds one
    person in 72/72 frames, 0.8 finds both in 69/72. The duplicates a high value lets through are
    removed here (`nms_poses`). ``upscale_min_side``: frames whose shorter side is below this are
    enlarged first (does not help detection, whose input is a fixed 224x224 letterbox; kept for
    experiments). ``tiles``: see `TileSpec` -- what does help small people.

    ``spare_slot``: keep one ROI slot more than ``max_people`` (below). Without it, once
    ``max_people`` people are tracked MediaPipe skips its detector and the landmark pass of a
    duplicate ROI: with ``max_people=1`` a frame costs ~20 ms instead of ~35-45 ms here, with a
    tight tail, but whoever is tracked first keeps the slot until they leave (single-person apps).

    ``threads``: XNNPACK threads inside each model call. 2 on two cores cuts a frame ~1.3x with
    bitwise the same landmarks, but XNNPACK's workers spin while they wait: two such estimators
    (or one beside any other pose work) on the same cores run ~20x slower. Give an estimator
    more than one thread only while it has the cores to itself (the service's solo streams).

    ``association``: how fresh detections join tracked people (`perception.pose.graph`):
    ``"mediapipe"`` reproduces the Tasks ``PoseLandmarker`` to the bit; ``"one-to-one"`` gives a
    tracked person at most one detection, so no duplicate ROI is landmarked.
    """

    name = "mediapipe-tasks-pose-full"

    def __init__(
        self,
        max_people: int = 4,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
        min_tracking_confidence: float = 0.8,
        upscale_min_side: int = 0,
        tiles: TileSpec | None = None,
        dedupe_iou: float = 0.6,
        dedupe_keypoint_distance: float = 0.15,
        spare_slot: bool = True,
        threads: int = 1,
        association: str = "one-to-one",
        search: SearchSpec | None = SearchSpec(),
    ) -> None:
        super().__init__()
        if max_people < 1:
            raise ValueError("max_people must be >= 1")
        self.association = association  # checked by PoseGraph, built below
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.threads = int(threads)
        self.max_people = int(max_people)
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_presence_confidence = float(min_presence_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.upscale_min_side = int(upscale_min_side)
        self.tiles = tiles
        self.dedupe_iou = float(dedupe_iou)
        self.dedupe_keypoint_distance = float(dedupe_keypoint_distance)
        self.spare_slot = bool(spare_slot)
        self.search = search
        self._calls = 0
        self._bundle = ensure_pose_bundle()
        # One ROI slot more than people reported: with a high min_tracking_confidence a person can
        # briefly hold two ROIs, and with every slot full MediaPipe stops running the detector,
        # so nobody new is found (UP-Fall Cam2, max_people=2: the bystander was never detected).
        # Created up front so a broken MediaPipe install fails here, not on the first frame.
        self._full: Any = None
        if tiles is None or tiles.full_frame or tiles.max_frame_side is not None:
            self._full = self._new_landmarker(self.max_people)
        self._tile_landmarkers: list[Any] = []
        if tiles is not None:
            per_tile = min(self.max_people, tiles.poses_per_tile or self.max_people)
            self._tile_landmarkers = [self._new_landmarker(per_tile) for _ in range(tiles.cols * tiles.rows)]
        self._clock = _Clock()
        self.last_raw: tuple[PersonPose, ...] = ()  # the latest frame's poses before `select_people`
        self.carried: _Carried | None = None  # the state after the latest frame (`carry_from`)

    def _new_landmarker(self, people: int) -> PoseGraph:
        """A VIDEO-mode landmarker for ``people`` (plus the spare ROI slot when ``spare_slot``)."""
        return PoseGraph(
            self._bundle,
            num_poses=people + int(self.spare_slot),
            min_detection_confidence=self.min_detection_confidence,
            min_presence_confidence=self.min_presence_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
            association=self.association,
            threads=self.threads,
            search_confidence=None if self.search is None else self.search.confidence,
        )

    def config(self) -> dict[str, Any]:
        """Settings that change the output (stored with extracted skeletons; not ``threads``)."""
        return {
            "name": self.name,
            "max_people": self.max_people,
            "min_detection_confidence": self.min_detection_confidence,
            "min_presence_confidence": self.min_presence_confidence,
            "min_tracking_confidence": self.min_tracking_confidence,
            "upscale_min_side": self.upscale_min_side,
            "tiles": None
            if self.tiles is None
            else {
                "cols": self.tiles.cols,
                "rows": self.tiles.rows,
                "overlap": self.tiles.overlap,
                "max_frame_side": self.tiles.max_frame_side,
                "poses_per_tile": self.tiles.poses_per_tile,
                "full_frame": self.tiles.full_frame,
            },
            "dedupe_iou": self.dedupe_iou,
            "dedupe_keypoint_distance": self.dedupe_keypoint_distance,
            "spare_slot": self.spare_slot,
            "mediapipe": mediapipe_version(),
            # MediaPipe's own rule is what every stored skeleton before this option was made with
            **({} if self.association == "mediapipe" else {"association": self.association}),
            # likewise without search windows
            **({} if self.search is None else {"search": asdict(self.search)}),
        }

    def _estimate(
        self, frame_rgb: np.ndarray, timestamp_s: float, expected: Sequence[PersonPose] = ()
    ) -> tuple[PersonPose, ...]:
        import cv2

        frame = _check_frame(frame_rgb)
        height, width = frame.shape[:2]
        ms = self._clock(timestamp_s)
        factor = 1.0
        if self.upscale_min_side and min(height, width) < self.upscale_min_side:
            factor = self.upscale_min_side / min(height, width)
            frame = cv2.resize(
                frame, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_CUBIC
            )
        tiled = self.tiles is not None and (
            self.tiles.max_frame_side is None or max(height, width) <= self.tiles.max_frame_side
        )
        found: list[PersonPose] = []
        if not tiled or (self.tiles is not None and self.tiles.full_frame):
            if self._full is None:
                self._full = self._new_landmarker(self.max_people)
            search: list[Window] = []
            if self.search is not None:
                search = self.search.due(self._calls, frame.shape[1], frame.shape[0])
            rois = [
                r for r in (roi_from_landmarks(p.image, width, height) for p in expected) if r is not None
            ]
            found = self._run(self._full, frame, ms, (0, 0), factor, width, height, search, rois)
        if tiled and self.tiles is not None:
            windows = self.tiles.windows(frame.shape[1], frame.shape[0])
            for lmk, (x0, y0, x1, y1) in zip(self._tile_landmarkers, windows, strict=True):
                crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
                found += self._run(lmk, crop, ms, (x0, y0), factor, width, height)
        self._calls += 1
        self.last_raw = tuple(found)
        people, too_small = choose_people(
            found, self.max_people, self.dedupe_iou, self.dedupe_keypoint_distance
        )
        if self._full is not None and not tiled and too_small:
            # a skeleton far smaller than the person beside it is not tracked on. Duplicates are:
            # the lower-scored of two can be the better skeleton of a lying person (UP-Fall
            # Activity4/Trial2Cam1: forgetting them lost him for 16 frames)
            self._full.forget(too_small)
        self.carried = _Carried(
            None if self._full is None else self._full.carried(),
            tuple(lmk.carried() for lmk in self._tile_landmarkers),
            self._calls,
        )
        return people

    def carry_from(self, other: PoseEstimator) -> bool:
        """Continue the people ``other`` tracked up to its latest finished frame: a stream that
        poses its frames on more than one estimator (its lanes, its solo one) hands the carried
        ROIs and the search-window turn over whenever the frame before was posed elsewhere. Posed
        one at a time, each frame is then posed as one estimator posing every frame would; an
        estimator picking up its own ROIs from seconds before lost or doubled people and made a
        real-pace stream's results vary from run to run. ``other`` may be posing its next frame
        meanwhile (its `carried` is the state after its latest finished one). False, and nothing
        changed, when ``other`` is no estimator of the same kind and settings or this one is busy."""
        if not isinstance(other, TasksPoseEstimator) or other is self or other.config() != self.config():
            return False
        state = other.carried
        if state is None or not self._lock.acquire(blocking=False):  # never wait on a running call
            return False
        try:
            if self._closed:
                return False
            if state.full is not None:
                if self._full is None:
                    self._full = self._new_landmarker(self.max_people)
                self._full.resume(state.full)
            for lmk, carried in zip(self._tile_landmarkers, state.tiles, strict=True):
                lmk.resume(carried)
            self._calls = state.calls
            return True
        finally:
            self._lock.release()

    @staticmethod
    def _run(
        landmarker: PoseGraph,
        image: np.ndarray,
        ms: int,
        offset: tuple[int, int],
        factor: float,
        width: int,
        height: int,
        search: Sequence[Window] = (),
        expected: Sequence[Roi] = (),
    ) -> list[PersonPose]:
        """Run one landmarker on ``image`` (a crop at ``offset`` of the frame scaled by ``factor``)."""
        ih, iw = image.shape[:2]
        people = []
        for found in landmarker.process(image, ms, search, expected):
            xyz, vis, world = found.landmarks.copy(), found.visibility, found.world
            inside = float(np.mean((xyz[:, 0] >= 0) & (xyz[:, 0] <= 1) & (xyz[:, 1] >= 0) & (xyz[:, 1] <= 1)))
            # crop-normalised -> frame-normalised coordinates
            xyz[:, 0] = (xyz[:, 0] * iw + offset[0]) / (factor * width)
            xyz[:, 1] = (xyz[:, 1] * ih + offset[1]) / (factor * height)
            xyz[:, 2] = xyz[:, 2] * iw / (factor * width)
            # a skeleton cut by a tile edge scores lower than the same person seen whole
            people.append(make_person_pose(xyz, world, vis, width, height, float(vis.mean()) * inside))
        return people

    def _release(self) -> None:
        if self._full is not None:
            self._full.close()
        for lmk in self._tile_landmarkers:
            lmk.close()


# --------------------------------------------------------------------------- legacy estimator


class LegacyPoseEstimator(_ClosesAfterFrame):
    """Single-person ``mp.solutions.pose`` (model_complexity=1): the fallback when Tasks fails."""

    name = "mediapipe-legacy-pose-full"

    def __init__(
        self,
        max_people: int = 1,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        smooth_landmarks: bool = True,
    ) -> None:
        import mediapipe as mp

        super().__init__()
        self.max_people = 1  # the legacy graph tracks exactly one person
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.smooth_landmarks = bool(smooth_landmarks)
        self._pose = mp.solutions.pose.Pose(
            static_image_mode=False,
            model_complexity=1,
            smooth_landmarks=smooth_landmarks,
            enable_segmentation=False,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )
        self._clock = _Clock()

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_people": 1,
            "min_detection_confidence": self.min_detection_confidence,
            "min_tracking_confidence": self.min_tracking_confidence,
            "smooth_landmarks": self.smooth_landmarks,
            "mediapipe": mediapipe_version(),
        }

    def _estimate(
        self, frame_rgb: np.ndarray, timestamp_s: float, expected: Sequence[PersonPose] = ()
    ) -> tuple[PersonPose, ...]:
        frame = _check_frame(frame_rgb)
        self._clock(timestamp_s)  # the legacy graph keeps its own clock; validate for parity
        result = self._pose.process(frame)
        if result.pose_landmarks is None:
            return ()
        height, width = frame.shape[:2]
        xyz, vis = landmark_arrays(result.pose_landmarks.landmark)
        world = None
        if result.pose_world_landmarks is not None:
            world = landmark_xyz(result.pose_world_landmarks.landmark)
        return (make_person_pose(xyz, world, vis, width, height),)

    def _release(self) -> None:
        self._pose.close()


# --------------------------------------------------------------------------- factory

ESTIMATOR_KINDS = ("tasks", "legacy")


def create_pose_estimator(kind: str = "tasks", max_people: int = 4, **options: Any) -> PoseEstimator:
    """New estimator for one stream/clip. ``kind``: "tasks" (multi-person) or "legacy" (one person).

    ``options`` go to the implementation's constructor (e.g. ``min_detection_confidence``,
    ``tiles=True`` / a `TileSpec` / a dict of TileSpec fields, ``upscale_min_side``).
    """
    if kind == "tasks":
        if "search" in options:  # True / False / a SearchSpec / a dict of its fields
            search = options["search"]
            if search is True:
                options["search"] = SearchSpec()
            elif search is False:
                options["search"] = None
            elif isinstance(search, dict):
                options["search"] = SearchSpec(**search)
        tiles = options.pop("tiles", None)
        if tiles is True:
            tiles = TileSpec()
        elif tiles is False:
            tiles = None
        elif isinstance(tiles, dict):
            tiles = TileSpec(**tiles)
        return TasksPoseEstimator(max_people=max_people, tiles=tiles, **options)
    if kind == "legacy":
        return LegacyPoseEstimator(max_people=max_people, **options)
    raise ValueError(f"unknown pose estimator kind {kind!r}; choose one of {ESTIMATOR_KINDS}")


@dataclass(frozen=True)
class PoseSpec:
    """Which estimator to build: what a caller's settings say, as plain values (picklable, so a
    worker process can build the same one)."""

    kind: str = "tasks"
    max_people: int = 4
    options: dict[str, Any] = field(default_factory=dict)

    def create(self) -> PoseEstimator:
        return create_pose_estimator(self.kind, max_people=self.max_people, **self.options)
