"""Joint layouts as data: joint names, bone edges, the centre joint, and derived graphs.

Adjacency is always derived from a layout's edge list, never written by hand, so a new
layout is one data entry. The spatial-configuration partition (Yan et al., ST-GCN, AAAI 2018)
is computed here with numpy so that the torch models only wrap it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class JointLayout:
    name: str
    joints: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    centre: int
    # Pairs of joints swapped by a left/right mirror (used by flip augmentation).
    mirror_pairs: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        n = len(self.joints)
        for a, b in self.edges:
            if not (0 <= a < n and 0 <= b < n) or a == b:
                raise ValueError(f"{self.name}: bad edge ({a}, {b})")
        if not 0 <= self.centre < n:
            raise ValueError(f"{self.name}: centre {self.centre} out of range")
        if not np.isfinite(self.hop_distance).all():
            raise ValueError(f"{self.name}: the skeleton graph is not connected")

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, joint: str) -> int:
        return self.joints.index(joint)

    @cached_property
    def adjacency(self) -> np.ndarray:
        """Symmetric 0/1 adjacency without self loops, shape (V, V)."""
        a = np.zeros((self.num_joints, self.num_joints), dtype=np.float32)
        for i, j in self.edges:
            a[i, j] = a[j, i] = 1.0
        return a

    @cached_property
    def hop_distance(self) -> np.ndarray:
        """Shortest path length in edges between every pair of joints (inf if unreachable)."""
        n = self.num_joints
        dist = np.full((n, n), np.inf)
        np.fill_diagonal(dist, 0)
        reach = np.eye(n, dtype=bool)
        step = self.adjacency.astype(bool) | np.eye(n, dtype=bool)
        for hop in range(1, n):
            new = (reach.astype(np.int32) @ step.astype(np.int32)) > 0
            dist[new & ~reach] = hop
            if (new == reach).all():
                break
            reach = new
        return dist

    @cached_property
    def parents(self) -> tuple[int, ...]:
        """Each joint's neighbour one hop closer to the centre (the centre is its own parent).

        Defines bone vectors (joint minus parent) for models that use a bone stream.
        """
        to_centre = self.hop_distance[:, self.centre]
        out = []
        for v in range(self.num_joints):
            if v == self.centre:
                out.append(v)
                continue
            nbrs = np.flatnonzero(self.adjacency[v])
            out.append(int(min(nbrs, key=lambda w: (to_centre[w], w))))
        return tuple(out)

    def spatial_partition(self) -> np.ndarray:
        """ST-GCN spatial-configuration partition, shape (3, V, V), each normalised by in-degree.

        Subsets: the root node itself; neighbours closer to the centre of gravity (centripetal);
        neighbours farther from it (centrifugal). Distance to the centre is measured in hops.
        """
        n = self.num_joints
        to_centre = self.hop_distance[:, self.centre]
        neighbour = self.adjacency + np.eye(n, dtype=np.float32)
        degree = neighbour.sum(axis=0)
        norm = neighbour / degree[None, :]  # column-normalised: A D^-1
        root = np.zeros((n, n), np.float32)
        close = np.zeros((n, n), np.float32)
        far = np.zeros((n, n), np.float32)
        for j in range(n):
            for i in range(n):
                if neighbour[i, j] == 0:
                    continue
                if to_centre[i] == to_centre[j]:
                    root[i, j] = norm[i, j]
                elif to_centre[i] < to_centre[j]:
                    close[i, j] = norm[i, j]
                else:
                    far[i, j] = norm[i, j]
        return np.stack([root, close, far])


MEDIAPIPE_33 = JointLayout(
    name="mediapipe33",
    joints=(
        "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
        "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
        "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
        "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
        "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
        "right_heel", "left_foot_index", "right_foot_index",
    ),
    # MediaPipe's POSE_CONNECTIONS plus nose-mouth and nose-shoulder links so the graph is connected.
    edges=(
        (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (0, 9), (0, 10),
        (0, 11), (0, 12), (11, 12), (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19),
        (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20), (11, 23), (12, 24), (23, 24),
        (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (28, 30), (29, 31), (30, 32), (27, 31),
        (28, 32),
    ),
    centre=23,
    mirror_pairs=(
        (1, 4), (2, 5), (3, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18), (19, 20),
        (21, 22), (23, 24), (25, 26), (27, 28), (29, 30), (31, 32),
    ),
)

KINECT_20 = JointLayout(
    name="kinect20",
    joints=(
        "head", "shoulder_center", "spine", "hip_center", "left_shoulder", "left_elbow",
        "left_wrist", "left_hand", "right_shoulder", "right_elbow", "right_wrist", "right_hand",
        "left_hip", "left_knee", "left_ankle", "left_foot", "right_hip", "right_knee",
        "right_ankle", "right_foot",
    ),
    edges=(
        (0, 1), (1, 2), (2, 3), (1, 4), (4, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (10, 11),
        (3, 12), (12, 13), (13, 14), (14, 15), (3, 16), (16, 17), (17, 18), (18, 19),
    ),
    centre=2,
    mirror_pairs=((4, 8), (5, 9), (6, 10), (7, 11), (12, 16), (13, 17), (14, 18), (15, 19)),
)

COCO_17 = JointLayout(
    name="coco17",
    joints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    edges=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 5), (12, 6), (9, 7), (7, 5), (10, 8), (8, 6),
        (5, 0), (6, 0), (1, 0), (3, 1), (2, 0), (4, 2),
    ),
    centre=0,
    mirror_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
)

LAYOUTS: dict[str, JointLayout] = {layout.name: layout for layout in (MEDIAPIPE_33, KINECT_20, COCO_17)}


def get_layout(name: str) -> JointLayout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown joint layout {name!r}; known: {sorted(LAYOUTS)}") from None
