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

MediaPipe types stay inside this module: callers get `GraphPose` arrays.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from perception.pose.bundle import DETECTOR_FILE, LANDMARKS_FILE

__all__ = [
    "ASSOCIATIONS",
    "MATCH_IOU",
    "Association",
    "GraphPose",
    "PoseGraph",
    "Roi",
    "landmark_arrays",
    "landmark_xyz",
    "select_rois",
]

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
    tracked: Sequence[Roi], detected: Sequence[Roi], association: str, threshold: float, limit: int
) -> list[int]:
    """Indices into ``tracked + detected`` of the ROIs that get a landmark pass, ascending.

    ``threshold``: MediaPipe's IoU for merging (its ``min_tracking_confidence``). ``limit``: at
    most this many ROIs (``num_poses``), the first ones kept, as MediaPipe clips its vector.
    """
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
    return kept[:limit]


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
    ) -> None:
        from mediapipe.calculators.util import association_calculator_pb2
        from mediapipe.framework import calculator_options_pb2, calculator_pb2
        from mediapipe.tasks.cc.vision.pose_detector.proto import pose_detector_graph_options_pb2
        from mediapipe.tasks.cc.vision.pose_landmarker.proto import pose_landmarks_detector_graph_options_pb2

        if association not in ASSOCIATIONS:
            raise ValueError(f"unknown association {association!r}; choose one of {ASSOCIATIONS}")
        self.num_poses = int(num_poses)
        self.association = association
        self.min_tracking_confidence = float(min_tracking_confidence)
        with zipfile.ZipFile(bundle) as z:
            detector_model, landmarks_model = z.read(DETECTOR_FILE), z.read(LANDMARKS_FILE)
        self._detector = _Runner(
            _graph_config(
                _DETECTOR_GRAPH,
                pose_detector_graph_options_pb2.PoseDetectorGraphOptions(
                    base_options=_base_options(detector_model, threads),
                    min_detection_confidence=min_detection_confidence,
                    num_poses=self.num_poses,
                ),
                ["IMAGE:image_in", "NORM_RECT:norm_rect_in"],
                ["EXPANDED_POSE_RECTS:detected"],
            )
        )
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
        # ROIs come in as two packets the graphs made (tracked, detected) and a mask from Python:
        # an association that never merges (IoU > 2) concatenates them, the filter applies the mask
        concat = calculator_options_pb2.CalculatorOptions()
        concat.Extensions[
            association_calculator_pb2.AssociationCalculatorOptions.ext
        ].min_similarity_threshold = 2.0
        config.node.insert(
            0,
            calculator_pb2.CalculatorGraphConfig.Node(
                calculator="AssociationNormRectCalculator",
                input_stream=["tracked_in", "detected_in"],
                output_stream=["all_rects"],
                options=concat,
            ),
        )
        config.node.insert(
            1,
            calculator_pb2.CalculatorGraphConfig.Node(
                calculator="FilterNormalizedRectCollectionCalculator",
                input_stream=["ITERABLE:all_rects", "CONDITION:keep_in"],
                output_stream=["ITERABLE:chosen"],
            ),
        )
        del config.input_stream[:]
        config.input_stream.extend(["IMAGE:image_in", "tracked_in", "detected_in", "keep_in"])
        self._landmarks = _Runner(config)
        self._tracked_packet: Any = None
        self._tracked: list[Roi] = []
        self.last_landmark_passes = 0  # ROIs given a landmark pass in the latest frame

    def process(self, frame_rgb: np.ndarray, ms: int) -> list[GraphPose]:
        import mediapipe as mp
        from mediapipe.framework.formats import rect_pb2
        from mediapipe.python import packet_creator

        us = int(ms) * 1000
        image = packet_creator.create_image(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame_rgb))
        detected_packet: Any = None
        detected: list[Roi] = []
        n_tracked = len(self._tracked)
        if n_tracked < self.num_poses:  # MediaPipe's rule: detect while a slot is free
            whole = rect_pb2.NormalizedRect(x_center=0.5, y_center=0.5, width=1.0, height=1.0, rotation=0.0)
            out = self._detector.process(
                {"image_in": image.at(us), "norm_rect_in": packet_creator.create_proto(whole).at(us)}
            )
            detected_packet = out["detected"]
            detected = _rois(detected_packet)
        chosen = set(
            select_rois(
                self._tracked, detected, self.association, self.min_tracking_confidence, self.num_poses
            )
        )
        self.last_landmark_passes = len(chosen)
        if not n_tracked and not detected:
            self._tracked_packet, self._tracked = None, []
            return []
        # both inputs need a packet: a missing side repeats the other, masked out
        tracked_packet = self._tracked_packet if n_tracked else detected_packet
        detected_input = detected_packet if detected else tracked_packet
        mask = [k in chosen for k in range(n_tracked + len(detected))]
        if not (n_tracked and detected):
            mask += [False] * len(mask)
        out = self._landmarks.process(
            {
                "image_in": image.at(us),
                "tracked_in": tracked_packet.at(us),
                "detected_in": detected_input.at(us),
                "keep_in": packet_creator.create_bool_vector(mask).at(us),
            }
        )
        self._tracked_packet = out["next_rects"]
        self._tracked = _rois(self._tracked_packet)
        return _poses(out["landmarks"], out["world"])

    def close(self) -> None:
        self._detector.close()
        self._landmarks.close()


def _rois(packet: Any) -> list[Roi]:
    from mediapipe.python import packet_getter

    if packet is None or packet.is_empty():
        return []
    return [Roi(r.x_center, r.y_center, r.width, r.height) for r in packet_getter.get_proto_list(packet)]


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
