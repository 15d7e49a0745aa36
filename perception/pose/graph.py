"""MediaPipe's pose landmarker as its two model graphs, with the ROI bookkeeping in Python.

MediaPipe's ``PoseLandmarkerGraph`` (VIDEO mode) runs the person detector while fewer than
``num_poses`` people are tracked, then merges the detector's ROIs with those tracked from the last
frame's landmarks (``AssociationNormRectCalculator``: an ROI overlapping a later one by IoU >
``min_tracking_confidence`` is dropped), and runs the landmark model once per ROI left. That rule
has no good threshold for several people: at 0.5 two people standing close merge into one, at 0.8
a fresh detection of an already tracked person is often kept as a second ROI, which costs a whole
landmark pass and is removed only afterwards (docs/benchmarks.md, "Targets that still FAIL").

`PoseGraph` runs the same two subgraphs of the same wheel (``PoseDetectorGraph`` and
``MultiplePoseLandmarksDetectorGraph``) as two graphs, and chooses the ROIs in between:

* ``association="mediapipe"`` -- MediaPipe's own rule, bit for bit (float32 IoU, same order):
  landmarks are bitwise those of ``vision.PoseLandmarker`` (tests/perception/test_pose_graph.py).
* ``association="one-to-one"`` -- each tracked person takes at most one detection (the one it
  overlaps most, IoU > ``MATCH_IOU``), so a detection can neither double a tracked person nor
  swallow two neighbours; only unmatched detections are new people.

Besides the whole frame, the person detector can look into *search windows* (crops of the frame,
``process(..., search=...)``): it sees the whole frame letterboxed to 224x224, so people small
relative to the frame are missed (felix_exercise.avi: 16 % of the people in a frame found), while
a crop enlarges them (three half-width windows: 87 %; docs/tracking.md). A person found in a
window only adds a ROI when nobody already found is there (`select_rois`); the landmark model
then runs on the whole frame's pixels as for any other ROI, so people found before keep exactly
the landmarks they get without windows.

MediaPipe types stay inside this module: callers get `GraphPose` arrays.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from perception.pose.bundle import DETECTOR_FILE, LANDMARKS_FILE

__all__ = [
    "ASSOCIATIONS",
    "MATCH_IOU",
    "Association",
    "Carried",
    "GraphPose",
    "PoseGraph",
    "Roi",
    "Window",
    "landmark_arrays",
    "landmark_xyz",
    "roi_from_landmarks",
    "select_rois",
]

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 pixels of a frame: where to look for people


@dataclass(frozen=True)
class Carried:
    """A `PoseGraph`'s state between two frames: the tracked ROIs (MediaPipe's packet and ours)."""

    packet: Any
    tracked: tuple[Roi, ...]
    aligned: bool
    forgotten: frozenset[int]

Association = Literal["mediapipe", "one-to-one"]
ASSOCIATIONS: tuple[str, ...] = get_args(Association)
MATCH_IOU = 0.5  # MediaPipe's default min_tracking_confidence: below it, not the same person

_DETECTOR_GRAPH = "mediapipe.tasks.vision.pose_detector.PoseDetectorGraph"
_LANDMARKS_GRAPH = "mediapipe.tasks.vision.pose_landmarker.MultiplePoseLandmarksDetectorGraph"
_F32 = np.float32


@dataclass(frozen=True, slots=True)
class Roi:
    """A pose ROI as the association sees it: centre and size, normalised to the frame."""

    x_center: float
    y_center: float
    width: float
    height: float
    rotation: float = 0.0  # radians, as MediaPipe's NormalizedRect (the IoU ignores it)

    def iou(self, other: Roi) -> float:
        """IoU of the axis-aligned boxes (rotation ignored), in float32 like MediaPipe's C++."""
        ax0, ay0 = (
            _F32(self.x_center) - _F32(self.width) / _F32(2),
            _F32(self.y_center) - _F32(self.height) / _F32(2),
        )
        bx0, by0 = (
            _F32(other.x_center) - _F32(other.width) / _F32(2),
            _F32(other.y_center) - _F32(other.height) / _F32(2),
        )
        ax1, ay1 = ax0 + _F32(self.width), ay0 + _F32(self.height)
        bx1, by1 = bx0 + _F32(other.width), by0 + _F32(other.height)
        if ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0:
            return 0.0
        inter = (min(ax1, bx1) - max(ax0, bx0)) * (min(ay1, by1) - max(ay0, by0))
        union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
        return float(inter / union) if union > 0 else 0.0


def _overlaps(a: Roi, b: Roi, threshold: float) -> bool:
    return bool(_F32(a.iou(b)) > _F32(threshold))


def select_rois(
    tracked: Sequence[Roi],
    detected: Sequence[Roi],
    association: str,
    threshold: float,
    limit: int,
    searched: Sequence[Roi] = (),
    expected: Sequence[Roi] = (),
) -> list[int]:
    """Indices into ``tracked + detected + expected + searched`` of the ROIs that get a landmark
    pass, ascending.

    ``threshold``: MediaPipe's IoU for merging (its ``min_tracking_confidence``). ``limit``: at
    most this many ROIs (``num_poses``), the first ones kept, as MediaPipe clips its vector.
    ``expected`` (a caller's tracks) and ``searched`` (detections in search windows) only add
    people nobody kept so far is (`_new_people`).
    """
    kept = _select(tracked, detected, association, threshold)
    rois = [*tracked, *detected]
    known = [rois[k] for k in kept]
    new_expected = _new_people(known, expected, exclusive=True)
    known += [expected[j] for j in new_expected]
    base = len(rois)
    kept += [base + j for j in new_expected]
    kept += [base + len(expected) + j for j in _new_people(known, searched, exclusive=False)]
    return kept[:limit]


def _new_people(known: Sequence[Roi], candidates: Sequence[Roi], exclusive: bool) -> list[int]:
    """Indices of ``candidates`` that nobody in ``known`` (nor an earlier new one) already is.

    A candidate is someone known when their ROIs overlap by IoU > ``MATCH_IOU`` or their centres
    are within ``CENTRE_MATCH`` ROI sides (ROIs from landmarks and from the detector differ in
    size for a seated or cut person, not in centre), or when it lies inside a larger known ROI
    (`_inside`). ``exclusive`` (expected people): one-to-one, nearest first, so someone expected
    right beside a known person (an embrace: hips 0.2 ROI sides apart in
    mmaction2_demo_skeleton.mp4) is not taken for them once that person has their own match.
    Otherwise (detections in search windows) any known person's match drops a candidate: a
    window that cuts a person finds a shifted ROI for them.
    """
    taken: set[int] = set()
    if exclusive:
        pairs = sorted(
            (_centre_distance(c, k), i, j)
            for i, k in enumerate(known)
            for j, c in enumerate(candidates)
            if _matches(c, k)
        )
        taken_known: set[int] = set()
        for _, i, j in pairs:
            if i not in taken_known and j not in taken:
                taken_known.add(i)
                taken.add(j)
    else:
        taken = {j for j, c in enumerate(candidates) if any(_matches(c, k) for k in known)}
    new: list[int] = []
    for j, c in enumerate(candidates):
        if j in taken or any(_inside(c, k) for k in known):
            continue
        if any(_matches(c, candidates[n]) for n in new):
            continue
        new.append(j)
    return new


# ROI centres closer than this many ROI sides are one person (one-to-one for expected people)
CENTRE_MATCH = 0.25


def _centre_distance(a: Roi, b: Roi) -> float:
    """Distance of the centres in sides of ``b`` (a ROI is square in pixels, so each normalised
    axis is divided by its own normalised side)."""
    return float(
        np.hypot(
            (a.x_center - b.x_center) / max(b.width, 1e-9), (a.y_center - b.y_center) / max(b.height, 1e-9)
        )
    )


def _matches(a: Roi, b: Roi) -> bool:
    return a.iou(b) > MATCH_IOU or _centre_distance(a, b) <= CENTRE_MATCH


# A candidate ROI this much inside a known one that is this much larger is part of that person (a
# limb, a partial skeleton over the body), not someone else: landmarking it draws a second,
# garbled skeleton over the person (stgcn_clean_and_jerk.mp4, a track that kept itself alive).
INSIDE_FRACTION = 0.8
INSIDE_AREA_RATIO = 0.5


def _inside(a: Roi, b: Roi) -> bool:
    """Whether ``a`` lies mostly inside ``b`` and is much smaller (axis-aligned, normalised)."""
    area_a, area_b = a.width * a.height, b.width * b.height
    if area_a <= 0 or area_a > INSIDE_AREA_RATIO * area_b:
        return False
    ix = min(a.x_center + a.width / 2, b.x_center + b.width / 2) - max(
        a.x_center - a.width / 2, b.x_center - b.width / 2
    )
    iy = min(a.y_center + a.height / 2, b.y_center + b.height / 2) - max(
        a.y_center - a.height / 2, b.y_center - b.height / 2
    )
    return max(ix, 0.0) * max(iy, 0.0) >= INSIDE_FRACTION * area_a


def _select(tracked: Sequence[Roi], detected: Sequence[Roi], association: str, threshold: float) -> list[int]:
    """Indices into ``tracked + detected``, ascending, before the limit."""
    rois = [*tracked, *detected]
    kept: list[int] = []
    if association == "mediapipe":
        # AssociationNormRectCalculator: each ROI in turn drops the kept ones it overlaps
        for i, roi in enumerate(rois):
            kept = [k for k in kept if not _overlaps(roi, rois[k], threshold)]
            kept.append(i)
    elif association == "one-to-one":
        for i in range(len(tracked)):  # tracked ROIs collapsed onto one person: as MediaPipe
            kept = [k for k in kept if not _overlaps(rois[i], rois[k], threshold)]
            kept.append(i)
        pairs = sorted(
            ((rois[t].iou(d), t, len(tracked) + j) for t in kept for j, d in enumerate(detected)),
            key=lambda p: -p[0],
        )
        matched_tracked: set[int] = set()
        matched_detected: set[int] = set()
        for iou, t, d in pairs:
            if iou <= MATCH_IOU:
                break
            if t in matched_tracked or d in matched_detected:
                continue
            matched_tracked.add(t)
            matched_detected.add(d)
            # the same person: the fresh detection's ROI replaces the tracked one, as MediaPipe does
            # above its threshold (keeping the tracked ROI instead agreed less with MediaPipe's
            # poses: 88 vs 140 of 150 frames bitwise the same on the stream clip)
            kept.remove(t)
        kept += [len(tracked) + j for j in range(len(detected))]
        kept.sort()
    else:
        raise ValueError(f"unknown association {association!r}; choose one of {ASSOCIATIONS}")
    return kept


@dataclass(frozen=True, slots=True)
class GraphPose:
    """One person's landmark pass: normalised (33, 3) x, y, z, (33,) visibility, (33, 3) world."""

    landmarks: np.ndarray
    visibility: np.ndarray
    world: np.ndarray


class _Runner:
    """One MediaPipe task graph in VIDEO mode (the Tasks API's own runner)."""

    def __init__(self, config: Any) -> None:
        from mediapipe.tasks.python.vision.core import base_vision_task_api, vision_task_running_mode

        self._api = base_vision_task_api.BaseVisionTaskApi(
            config, vision_task_running_mode.VisionTaskRunningMode.VIDEO, None
        )

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return dict(self._api._process_video_data(inputs))

    def close(self) -> None:
        self._api.close()


@dataclass
class _Options:
    """What ``TaskInfo`` wants: an object whose ``to_pb2`` is the graph's options proto."""

    proto: Any

    def to_pb2(self) -> Any:
        return self.proto


def _graph_config(graph: str, options: Any, inputs: list[str], outputs: list[str]) -> Any:
    from mediapipe.tasks.python.core import task_info

    info = task_info.TaskInfo(
        task_graph=graph, input_streams=inputs, output_streams=outputs, task_options=_Options(options)
    )
    return info.generate_graph_config()


def _base_options(model: bytes, threads: int) -> Any:
    from mediapipe.tasks.python.core.base_options import BaseOptions

    proto = BaseOptions(model_asset_buffer=model).to_pb2()
    proto.use_stream_mode = True
    if threads > 1:
        proto.acceleration.xnnpack.num_threads = threads
    return proto


class PoseGraph:
    """Person detector + landmark model for one video (VIDEO mode: call with increasing ``ms``).

    ``num_poses``: ROIs in flight at most; the detector runs only while fewer are tracked.
    ``min_detection_confidence`` is the detector's, ``min_presence_confidence`` the landmark
    model's (MediaPipe's ``min_pose_presence_confidence``), ``min_tracking_confidence`` the IoU of
    the association (see the module docstring). ``threads``: XNNPACK threads per model call.
    ``search_confidence``: the detector's threshold in search windows (None: the frame's).
    """

    def __init__(
        self,
        bundle: Path,
        num_poses: int,
        min_detection_confidence: float,
        min_presence_confidence: float,
        min_tracking_confidence: float,
        association: str = "mediapipe",
        threads: int = 1,
        search_confidence: float | None = None,
    ) -> None:
        from mediapipe.tasks.cc.vision.pose_landmarker.proto import pose_landmarks_detector_graph_options_pb2

        if association not in ASSOCIATIONS:
            raise ValueError(f"unknown association {association!r}; choose one of {ASSOCIATIONS}")
        self.num_poses = int(num_poses)
        self.association = association
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.threads = int(threads)
        self.search_confidence = search_confidence
        with zipfile.ZipFile(bundle) as z:
            self._detector_model, landmarks_model = z.read(DETECTOR_FILE), z.read(LANDMARKS_FILE)
        self._detector = self._new_detector(min_detection_confidence)
        self._searcher: _Runner | None = None  # built on the first search window
        self._search_threshold = min_detection_confidence if search_confidence is None else search_confidence
        config = _graph_config(
            _LANDMARKS_GRAPH,
            pose_landmarks_detector_graph_options_pb2.PoseLandmarksDetectorGraphOptions(
                base_options=_base_options(landmarks_model, threads),
                min_detection_confidence=min_presence_confidence,
                # MediaPipe smooths landmarks only when it tracks a single person
                smooth_landmarks=self.num_poses == 1,
            ),
            ["IMAGE:image_in", "NORM_RECT:chosen"],
            ["LANDMARKS:landmarks", "WORLD_LANDMARKS:world", "POSE_RECTS_NEXT_FRAME:next_rects"],
        )
        _add_roi_inputs(config, self.num_poses)
        self._landmarks = _Runner(config)
        self._filler = _rect_vector_packet()  # stands in for an absent ROI vector (masked out)
        self._tracked_packet: Any = None
        self._tracked: list[Roi] = []
        self._forgotten: set[int] = set()  # tracked ROIs not carried into the next frame (`forget`)
        self._aligned = False
        self.last_landmark_passes = 0  # ROIs given a landmark pass in the latest frame
        self.last_searched = 0  # people found in search windows (new ROIs) in the latest frame
        self.last_expected = 0  # expected ROIs landmarked in the latest frame

    def _new_detector(self, confidence: float) -> _Runner:
        from mediapipe.tasks.cc.vision.pose_detector.proto import pose_detector_graph_options_pb2

        return _Runner(
            _graph_config(
                _DETECTOR_GRAPH,
                pose_detector_graph_options_pb2.PoseDetectorGraphOptions(
                    base_options=_base_options(self._detector_model, self.threads),
                    min_detection_confidence=confidence,
                    num_poses=self.num_poses,
                ),
                ["IMAGE:image_in", "NORM_RECT:norm_rect_in"],
                ["EXPANDED_POSE_RECTS:detected"],
            )
        )

    @property
    def tracked(self) -> list[Roi]:
        """ROIs carried to the next frame (the landmark model's own tracking)."""
        return list(self._tracked)

    def process(
        self, frame_rgb: np.ndarray, ms: int, search: Sequence[Window] = (), expected: Sequence[Roi] = ()
    ) -> list[GraphPose]:
        """People in ``frame_rgb``. ``search``: windows the detector also looks into for people
        not tracked yet (only while a ROI slot is free, like MediaPipe's own detector);
        ``expected``: ROIs where someone is expected (a caller's tracks, `roi_from_landmarks`),
        landmarked when nobody tracked or detected is there."""
        import mediapipe as mp
        from mediapipe.python import packet_creator

        us = int(ms) * 1000
        image = packet_creator.create_image(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame_rgb))
        detected_packet: Any = None
        detected: list[Roi] = []
        n_tracked = len(self._tracked)
        live = [i for i in range(n_tracked) if i not in self._forgotten]
        self._forgotten = set()
        searched: list[Roi] = []
        if len(live) < self.num_poses:  # MediaPipe's rule: detect while a slot is free
            detected_packet = _detect(self._detector, image, us)
            detected = _rois(detected_packet)
            searched = self._search(frame_rgb, us, search)
        else:
            expected = ()
        picked = select_rois(
            [self._tracked[i] for i in live],
            detected,
            self.association,
            self.min_tracking_confidence,
            self.num_poses,
            searched,
            expected,
        )
        # indices into the live tracked ROIs -> into all of them (the tracked packet's order)
        chosen = {live[k] if k < len(live) else k - len(live) + n_tracked for k in picked}
        self.last_landmark_passes = len(chosen)
        base = n_tracked + len(detected)
        self.last_searched = sum(k >= base + len(expected) for k in chosen)
        self.last_expected = sum(base <= k < base + len(expected) for k in chosen)
        if not chosen:
            self._tracked_packet, self._tracked, self._aligned = None, [], False
            return []
        mask = [k in chosen for k in range(n_tracked)] if n_tracked else [False]
        mask += [n_tracked + k in chosen for k in range(len(detected))] if detected else [False]
        extra = [r for j, r in enumerate([*expected, *searched]) if base + j in chosen]  # <= num_poses
        mask += [k < len(extra) for k in range(self.num_poses)]
        inputs = {
            "image_in": image.at(us),
            "tracked_in": (self._tracked_packet if n_tracked else self._filler).at(us),
            "detected_in": (detected_packet if detected else self._filler).at(us),
            "keep_in": packet_creator.create_bool_vector(mask).at(us),
        }
        height, width = frame_rgb.shape[:2]
        for k in range(self.num_poses):
            roi = extra[k] if k < len(extra) else None
            inputs[f"searched_{k}"] = packet_creator.create_proto(_detection_for(roi, width, height)).at(us)
        out = self._landmarks.process(inputs)
        self._tracked_packet = out["next_rects"]
        self._tracked = _rois(self._tracked_packet)
        poses = _poses(out["landmarks"], out["world"])
        # pose k is the one of tracked ROI k when MediaPipe reports one ROI per pose
        self._aligned = len(poses) == len(self._tracked)
        return poses

    def carried(self) -> Carried:
        """What this graph carries into its next frame (the ROIs tracked from its latest one): all
        its state between frames, as an immutable value another graph can `resume` from."""
        return Carried(self._tracked_packet, tuple(self._tracked), self._aligned, frozenset(self._forgotten))

    def resume(self, carried: Carried) -> None:
        """Continue as if the frame ``carried`` was taken after had been processed here (by another
        graph of the same stream: `TasksPoseEstimator.carry_from`)."""
        self._tracked_packet, self._tracked = carried.packet, list(carried.tracked)
        self._aligned, self._forgotten = carried.aligned, set(carried.forgotten)

    def forget(self, poses: Iterable[int]) -> None:
        """Do not carry these of the latest frame's poses (indices into `process`'s result) into
        the next frame: the caller rejected them (a skeleton far smaller than the people beside
        it: `perception.pose.person.size_floor`). The landmark model would otherwise keep
        tracking its own ROI for them, and a rejected skeleton's ROI lives on
        (stgcn_clean_and_jerk.mp4: garbled skeletons over the barbell for 20-55 frames)."""
        if self._aligned:
            self._forgotten = {int(k) for k in poses if 0 <= int(k) < len(self._tracked)}

    def _search(self, frame_rgb: np.ndarray, us: int, windows: Sequence[Window]) -> list[Roi]:
        """Detections in each window's crop, as ROIs of the whole frame."""
        import mediapipe as mp
        from mediapipe.python import packet_creator

        if not windows:
            return []
        if self._searcher is None:
            self._searcher = self._new_detector(self._search_threshold)
        height, width = frame_rgb.shape[:2]
        found: list[Roi] = []
        for k, (x0, y0, x1, y1) in enumerate(windows):
            crop = np.ascontiguousarray(frame_rgb[y0:y1, x0:x1])
            image = packet_creator.create_image(mp.Image(image_format=mp.ImageFormat.SRGB, data=crop))
            cw, ch = x1 - x0, y1 - y0
            for r in _rois(_detect(self._searcher, image, us + 1 + k)):  # detector clock: strictly later
                found.append(
                    Roi(
                        (r.x_center * cw + x0) / width,
                        (r.y_center * ch + y0) / height,
                        r.width * cw / width,
                        r.height * ch / height,
                        r.rotation,
                    )
                )
        return found

    def close(self) -> None:
        self._detector.close()
        if self._searcher is not None:
            self._searcher.close()
        self._landmarks.close()


# MediaPipe's ROI for the next frame is a square centred on the hip centre, turned so the body is
# upright, of side 1.25 x twice the distance to an alignment point above the head: measured on
# 708 tracked ROIs (UP-Fall, felix, tai chi), 2.66 x the largest hip-to-landmark distance
# (10-90 %: 2.2-3.3), rotation within 1.3 degrees of the hip-to-shoulder direction.
ROI_SIDE_PER_REACH = 2.66


def roi_from_landmarks(image: np.ndarray, width: int, height: int) -> Roi | None:
    """The ROI MediaPipe would track a person with, from their 33 pixel landmarks (None when the
    hips or shoulders are not finite)."""
    xy = np.asarray(image, np.float64)[:, :2]
    hip, shoulder = xy[[23, 24]].mean(axis=0), xy[[11, 12]].mean(axis=0)
    finite = np.isfinite(xy).all(axis=1)
    if not (np.isfinite(hip).all() and np.isfinite(shoulder).all()) or width <= 0 or height <= 0:
        return None
    reach = float(np.linalg.norm(xy[finite] - hip, axis=1).max())
    side = max(ROI_SIDE_PER_REACH * reach, 1.0)
    angle = float(np.arctan2(-(shoulder[1] - hip[1]), shoulder[0] - hip[0]))
    rotation = float((np.pi / 2 - angle + np.pi) % (2 * np.pi) - np.pi)
    return Roi(hip[0] / width, hip[1] / height, side / width, side / height, rotation)


def _detect(detector: _Runner, image: Any, us: int) -> Any:
    """The detector's expanded pose ROIs (a packet, empty when nobody is found) on the whole image."""
    from mediapipe.framework.formats import rect_pb2
    from mediapipe.python import packet_creator

    whole = rect_pb2.NormalizedRect(x_center=0.5, y_center=0.5, width=1.0, height=1.0, rotation=0.0)
    out = detector.process(
        {"image_in": image.at(us), "norm_rect_in": packet_creator.create_proto(whole).at(us)}
    )
    return out["detected"]


# The searched ROIs enter the landmark graph as Detection protos (Python cannot build a vector of
# rects): merged into a vector, turned back into rects with their rotation (keypoints 0 -> 1 point
# along it; DetectionsToRectsCalculator needs the image size for the angle).
_ROTATION_PX = 100.0


def _detection_for(roi: Roi | None, width: int, height: int) -> Any:
    """A Detection whose rect (DetectionsToRectsCalculator, target angle 0) is ``roi``; a dummy
    (masked out) for None."""
    import math

    from mediapipe.framework.formats import detection_pb2, location_data_pb2

    r = roi or Roi(0.5, 0.5, 0.2, 0.2)
    det = detection_pb2.Detection()
    det.location_data.format = location_data_pb2.LocationData.RELATIVE_BOUNDING_BOX
    box = det.location_data.relative_bounding_box
    box.xmin, box.ymin = r.x_center - r.width / 2, r.y_center - r.height / 2
    box.width, box.height = r.width, r.height
    start = det.location_data.relative_keypoints.add()
    start.x, start.y = 0.5, 0.5
    end = det.location_data.relative_keypoints.add()
    end.x = 0.5 + _ROTATION_PX * math.cos(r.rotation) / max(width, 1)
    end.y = 0.5 + _ROTATION_PX * math.sin(r.rotation) / max(height, 1)
    return det


def _add_roi_inputs(config: Any, searched: int) -> None:
    """ROIs come in as two packets the graphs made (tracked, detected), ``searched`` Detection
    protos and a mask from Python: an association that never merges (IoU > 2) concatenates them,
    the filter applies the mask."""
    from mediapipe.calculators.util import association_calculator_pb2, detections_to_rects_calculator_pb2
    from mediapipe.framework import calculator_options_pb2, calculator_pb2

    concat = calculator_options_pb2.CalculatorOptions()
    concat.Extensions[
        association_calculator_pb2.AssociationCalculatorOptions.ext
    ].min_similarity_threshold = 2.0
    to_rects = calculator_options_pb2.CalculatorOptions()
    rect_options = to_rects.Extensions[
        detections_to_rects_calculator_pb2.DetectionsToRectsCalculatorOptions.ext
    ]
    rect_options.rotation_vector_start_keypoint_index = 0
    rect_options.rotation_vector_end_keypoint_index = 1
    rect_options.rotation_vector_target_angle = 0.0
    names = [f"searched_{k}" for k in range(searched)]
    nodes = [
        calculator_pb2.CalculatorGraphConfig.Node(
            calculator="ImagePropertiesCalculator",
            input_stream=["IMAGE:image_in"],
            output_stream=["SIZE:image_size"],
        ),
        calculator_pb2.CalculatorGraphConfig.Node(
            calculator="MergeDetectionsToVectorCalculator",
            input_stream=names,
            output_stream=["searched_dets"],
        ),
        calculator_pb2.CalculatorGraphConfig.Node(
            calculator="DetectionsToRectsCalculator",
            input_stream=["DETECTIONS:searched_dets", "IMAGE_SIZE:image_size"],
            output_stream=["NORM_RECTS:searched_rects"],
            options=to_rects,
        ),
        calculator_pb2.CalculatorGraphConfig.Node(
            calculator="AssociationNormRectCalculator",
            input_stream=["tracked_in", "detected_in", "searched_rects"],
            output_stream=["all_rects"],
            options=concat,
        ),
        calculator_pb2.CalculatorGraphConfig.Node(
            calculator="FilterNormalizedRectCollectionCalculator",
            input_stream=["ITERABLE:all_rects", "CONDITION:keep_in"],
            output_stream=["ITERABLE:chosen"],
        ),
    ]
    for i, node in enumerate(nodes):
        config.node.insert(i, node)
    del config.input_stream[:]
    config.input_stream.extend(["IMAGE:image_in", "tracked_in", "detected_in", *names, "keep_in"])


def _rect_vector_packet() -> Any:
    """A packet holding a vector of one NormalizedRect (Python has no way to create one)."""
    import mediapipe as mp
    from mediapipe.python import packet_creator

    graph = mp.CalculatorGraph(
        graph_config="""
        input_stream: "det"
        output_stream: "rects"
        node { calculator: "MergeDetectionsToVectorCalculator" input_stream: "det" output_stream: "dets" }
        node { calculator: "DetectionsToRectsCalculator" input_stream: "DETECTIONS:dets"
               output_stream: "NORM_RECTS:rects" }
        """
    )
    got: list[Any] = []
    graph.observe_output_stream("rects", lambda _, packet: got.append(packet))
    graph.start_run()
    graph.add_packet_to_input_stream("det", packet_creator.create_proto(_detection_for(None, 1, 1)).at(0))
    graph.close()
    return got[0]


def _rois(packet: Any) -> list[Roi]:
    from mediapipe.python import packet_getter

    if packet is None or packet.is_empty():
        return []
    return [
        Roi(r.x_center, r.y_center, r.width, r.height, r.rotation)
        for r in packet_getter.get_proto_list(packet)
    ]


def _poses(landmarks_packet: Any, world_packet: Any) -> list[GraphPose]:
    from mediapipe.python import packet_getter

    if landmarks_packet.is_empty():
        return []
    worlds = [] if world_packet.is_empty() else packet_getter.get_proto_list(world_packet)
    poses = []
    for i, lms in enumerate(packet_getter.get_proto_list(landmarks_packet)):
        xyz, vis = landmark_arrays(lms.landmark)
        world = (
            landmark_xyz(worlds[i].landmark)
            if i < len(worlds)
            else np.full((len(xyz), 3), np.nan, np.float32)
        )
        poses.append(GraphPose(xyz, vis, world))
    return poses


def landmark_xyz(landmarks: Sequence[Any]) -> np.ndarray:
    """(N, 3) float32 x, y, z of MediaPipe landmark protos (image or world landmarks)."""
    return np.array([(lm.x, lm.y, lm.z) for lm in landmarks], np.float32)


def landmark_arrays(landmarks: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) raw x, y, z and (N,) visibility in [0, 1] from MediaPipe landmark protos (an unset
    visibility reads 0)."""
    vis = np.array([lm.visibility for lm in landmarks], np.float32)
    return landmark_xyz(landmarks), np.clip(np.nan_to_num(vis, nan=0.0), 0.0, 1.0)
