"""UTD-MHAD skeleton reader (Chen, Jafari, Kehtarnavaz, ICIP 2015).

Files ``a{action}_s{subject}_t{trial}_skeleton.mat`` hold ``d_skel`` (20 joints x 3 x T, metres,
Kinect v1 camera space) in the joint order of ``skeleton.layouts.KINECT_20``. The reader returns
canonical axes (``skeleton.preprocess.kinect_to_canonical``) so every later step is shared with
MediaPipe input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from skeleton.layouts import KINECT_20
from skeleton.paths import missing_data
from skeleton.preprocess import kinect_to_canonical

SKELETON_DIR = "utd_mhad/skeleton"
NUM_FILES = 861  # 27 actions x 8 subjects x 4 trials, minus 3 missing in the release
FPS = 30.0  # Kinect v1 skeleton rate: a clip played as a stream (training.metric_learning) uses it

LABELS: tuple[str, ...] = (
    "right arm swipe to the left", "right arm swipe to the right", "right hand wave", "two hand front clap",
    "right arm throw", "cross arms in the chest", "basketball shoot", "right hand draw x",
    "right hand draw circle (clockwise)", "right hand draw circle (counter clockwise)", "draw triangle",
    "bowling (right hand)", "front boxing", "baseball swing from right", "tennis right hand forehand swing",
    "arm curl (two arms)", "tennis serve", "two hand push", "right hand knock on door",
    "right hand catch an object", "right hand pick up and throw", "jogging in place", "walking in place",
    "sit to stand", "stand to sit", "forward lunge (left foot forward)", "squat (two arms stretch out)",
)

_NAME = re.compile(r"a(\d+)_s(\d+)_t(\d+)_skeleton\.mat$")


@dataclass(frozen=True)
class UtdClip:
    """One recorded sequence; ``label`` is 0-based (action - 1); joints (T, 20, 3) canonical."""

    action: int
    subject: int
    trial: int
    joints: np.ndarray

    @property
    def label(self) -> int:
        return self.action - 1


def parse_name(path: Path) -> tuple[int, int, int]:
    """(action, subject, trial) from a UTD-MHAD skeleton file name."""
    m = _NAME.search(path.name)
    if m is None:
        raise ValueError(f"not a UTD-MHAD skeleton file name: {path.name}")
    a, s, t = (int(g) for g in m.groups())
    return a, s, t


def read_skeleton(path: Path) -> np.ndarray:
    """(T, 20, 3) float32 canonical joints from one ``.mat`` file."""
    d = scipy.io.loadmat(str(path))["d_skel"]
    if d.ndim != 3 or d.shape[:2] != (KINECT_20.num_joints, 3):
        raise ValueError(f"{path}: d_skel has shape {d.shape}, expected (20, 3, T)")
    return kinect_to_canonical(np.transpose(d, (2, 0, 1)).astype(np.float32))


def skeleton_files(data_root: Path) -> list[Path]:
    return sorted((data_root / SKELETON_DIR).glob("a*_s*_t*_skeleton.mat"))


def load_utd_mhad(data_root: Path, subjects: set[int] | None = None) -> list[UtdClip]:
    """Every clip (optionally only ``subjects``), sorted by (action, subject, trial)."""
    files = skeleton_files(data_root)
    if not files:
        raise missing_data("UTD-MHAD skeleton files (a*_s*_t*_skeleton.mat)", data_root / SKELETON_DIR)
    clips = []
    for path in files:
        a, s, t = parse_name(path)
        if subjects is None or s in subjects:
            clips.append(UtdClip(a, s, t, read_skeleton(path)))
    return sorted(clips, key=lambda c: (c.action, c.subject, c.trial))
