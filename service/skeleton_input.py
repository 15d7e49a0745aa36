"""Client-supplied skeletons (JSON) -> the same `PosedFrame` a pose estimator's frame becomes."""

from __future__ import annotations

from collections.abc import Collection, Iterator

import numpy as np

from service.core.errors import ServiceError
from service.frames import PosedFrame, TrackedPerson
from service.schemas import SkeletonFrameIn, SkeletonPersonIn, SkeletonSequenceIn
from skeleton.types import MEDIAPIPE_JOINTS, BoundingBox, PersonPose


def _invalid(message: str, hint: str) -> ServiceError:
    return ServiceError(422, "invalid_skeleton", message, hint)


def person_pose(
    p: SkeletonPersonIn, width: int, height: int, normalized: bool, coordinates: Collection[str]
) -> PersonPose:
    """``coordinates``: the landmarks the model reads (``image``, ``world``), each required."""
    if "world" in coordinates and p.world is None:
        raise _invalid(
            "this model reads MediaPipe world landmarks and a person has none",
            "send 'world' (33 × [x, y, z] metres) for every person, or pick a model whose "
            "coordinates are 'image' (GET /models)",
        )
    if "image" in coordinates and p.image is None:
        raise _invalid(
            "this model reads image landmarks and a person has none",
            "send 'image' (33 × [x, y] or [x, y, z] pixels) for every person",
        )
    image = np.full((MEDIAPIPE_JOINTS, 3), np.nan, np.float32)
    if p.image is not None:
        for j, pt in enumerate(p.image):
            image[j, : min(3, len(pt))] = pt[:3]
            if len(pt) == 2:
                image[j, 2] = 0.0
        if normalized:
            image[:, 0] *= width
            image[:, 1] *= height
            image[:, 2] *= width
    world = np.full((MEDIAPIPE_JOINTS, 3), np.nan, np.float32)
    if p.world is not None:
        world[:] = np.asarray(p.world, np.float32)
    raw_vis = np.ones(MEDIAPIPE_JOINTS) if p.visibility is None else np.asarray(p.visibility, np.float64)
    vis = np.clip(np.nan_to_num(raw_vis), 0.0, 1.0).astype(np.float32)
    if (
        not (np.isfinite(image).all() or p.image is None)
        or not (np.isfinite(world).all() or p.world is None)
        or not np.isfinite(raw_vis).all()
    ):
        raise _invalid(
            "landmarks must be finite numbers",
            "replace NaN/inf by the last seen position, or leave the person out of that frame",
        )
    if p.image is not None:
        x = np.clip(image[:, 0], 0, width)
        y = np.clip(image[:, 1], 0, height)
        box = BoundingBox(float(x.min()), float(y.min()), float(x.max()), float(y.max()))
    else:
        box = BoundingBox(0.0, 0.0, 0.0, 0.0)
    return PersonPose(image, world, vis, box, float(vis.mean()))


def posed_frame(
    frame: SkeletonFrameIn,
    index: int,
    coordinates: Collection[str],
    default_width: int = 640,
    default_height: int = 480,
) -> PosedFrame:
    """A frame of client skeletons: with the client's track ids (``people``), or as poses for the
    server's tracker (``poses``). ``coordinates``: what the model reads (``world``, ``image``)."""
    width = frame.width or default_width
    height = frame.height or default_height
    poses = tuple(person_pose(p, width, height, frame.normalized, coordinates) for p in frame.people)
    ids = [p.id for p in frame.people]
    if any(i is not None for i in ids):
        if any(i is None for i in ids) or len(set(ids)) != len(ids):
            raise _invalid(
                "either every person in a frame has a distinct 'id' or none has",
                "drop 'id' to let the server track people",
            )
        people = tuple(
            TrackedPerson(int(i), pose) for i, pose in zip(ids, poses, strict=True) if i is not None
        )
        return PosedFrame(index, frame.timestamp, width, height, people=people)
    if any(p.image is None for p in frame.people):
        raise _invalid(
            "server-side tracking needs 'image' landmarks",
            "send 'image' landmarks, or give each person your own 'id'",
        )
    return PosedFrame(index, frame.timestamp, width, height, poses)


def sequence_frames(seq: SkeletonSequenceIn, coordinates: Collection[str]) -> Iterator[PosedFrame]:
    """Frames of a JSON skeleton clip, in the shape the clip pipeline consumes."""
    for i, f in enumerate(seq.frames):
        yield posed_frame(f, i, coordinates, seq.width, seq.height)
