"""Data readers on the real shared data, augmentation, configs, and a short real training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skeleton.layouts import KINECT_20
from tests.conftest import REPO_ROOT, require_data
from tests.model_helpers import TEST_TRIAL2_ACTIVITIES, UPFALL_CACHE, require_cache
from training.config import TrainConfig, load_config

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def test_utd_reader_reads_all_861_files() -> None:
    from training.utd_mhad import NUM_FILES, load_utd_mhad, parse_name, skeleton_files

    root = require_data()
    files = skeleton_files(root)
    assert len(files) == NUM_FILES
    assert parse_name(files[0]) == (10, 1, 1)  # sorted by name: a10_s1_t1
    clips = load_utd_mhad(root)
    assert len(clips) == NUM_FILES
    assert {c.action for c in clips} == set(range(1, 28)) and {c.subject for c in clips} == set(range(1, 9))
    lengths = np.array([c.joints.shape[0] for c in clips])
    assert all(c.joints.shape[1:] == (20, 3) and c.joints.dtype == np.float32 for c in clips)
    assert lengths.min() > 30 and lengths.max() < 200
    assert np.isfinite(np.concatenate([c.joints for c in clips])).all()
    train = [c for c in clips if c.subject in (1, 3, 5, 7)]
    assert len(train) == 431 and len(clips) - len(train) == 430


@pytest.mark.skeleton_cache
def test_upfall_reader_and_fall_moment() -> None:
    from training.upfall import ACTIVITIES, detect_fall_time, load_upfall

    data = require_data("upfall")
    assert len(list(data.glob("Activity*/Trial*Cam*.mp4"))) == 44
    for a in TEST_TRIAL2_ACTIVITIES:
        require_cache(f"Activity{a}", "Trial2Cam1.npz")
    cfg = load_config(REPO_ROOT / "configs" / "upfall-stgcnpp-lite.yaml")
    frontal = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"cameras": [1]})})
    clips = load_upfall(UPFALL_CACHE, frontal, [2])
    assert {c.activity for c in clips} >= set(TEST_TRIAL2_ACTIVITIES) and len(ACTIVITIES) == 11
    assert sum(c.is_fall for c in clips) == 5
    for clip in clips:
        assert clip.joints.shape == (len(clip.timestamps), 20, 3)
        assert clip.seen.mean() > 0.1
        if clip.is_fall:
            # The detected moment is where the hips drop: lower in the image 0.5 s later than 0.5 s before.
            assert clip.fall_time is not None
            hip = clip.joints[:, KINECT_20.index("hip_center"), 1]
            before = np.nanmean(hip[np.abs(clip.timestamps - (clip.fall_time - 0.5)) < 0.15])
            after = np.nanmean(hip[np.abs(clip.timestamps - (clip.fall_time + 0.5)) < 0.15])
            assert after < before, clip.name
    from training.skeleton_cache import load_clip

    track = load_clip(require_cache("Activity1/Trial1Cam1.npz")).primary_track
    assert track is not None
    assert 2.0 < (detect_fall_time(track, 480.0) or 0) < 5.0


def test_augmentation_keeps_bone_lengths_on_real_clip() -> None:
    from training.augment import geometric, temporal_crop
    from training.config import AugmentConfig
    from training.utd_mhad import read_skeleton

    joints = read_skeleton(require_data("utd_mhad", "skeleton", "a7_s3_t2_skeleton.mat"))
    rng = np.random.default_rng(0)
    rotated = geometric(joints, AugmentConfig(yaw_deg=40, tilt_deg=10), rng, KINECT_20)
    bones = [(j, p) for j, p in enumerate(KINECT_20.parents) if j != p]

    def lengths(x: np.ndarray) -> np.ndarray:
        return np.stack([np.linalg.norm(x[:, j] - x[:, p], axis=-1) for j, p in bones])

    np.testing.assert_allclose(lengths(rotated), lengths(joints), rtol=1e-4)
    assert not np.allclose(rotated, joints)
    crop = temporal_crop(joints, 0.8, rng)
    assert 0.8 * len(joints) - 1 <= len(crop) <= len(joints)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert cfg.input.window.length > 0 and cfg.input.layout in ("kinect20", "mediapipe33")
    if cfg.dataset.name == "utd_mhad":
        assert not cfg.augment.mirror, "UTD-MHAD actions are right-handed: no mirroring"


def test_short_training_run_loss_falls(tmp_path: Path) -> None:
    """A small model on 96 real UTD-MHAD clips for 5 epochs: the loss must fall, deterministically."""
    from training.train import train

    data = require_data()
    cfg = load_config(REPO_ROOT / "configs" / "utd-mhad-stgcnpp-lite.yaml", {
        "name": "tiny", "model.kwargs": {"base_channels": 16, "num_stages": 3, "inflate_stages": [],
                                         "down_stages": [2]},
        "input.window.length": 16, "dataset.test_subjects": [2], "optim.epochs": 5, "optim.warmup_epochs": 0,
        "optim.lr": 0.1, "optim.batch_size": 16, "optim.label_smoothing": 0.0, "optim.eval_every": 5,
        "threads": 1,
    })
    assert isinstance(cfg, TrainConfig)
    m1 = train(cfg, tmp_path / "a", data, log=lambda _: None, max_train=96)
    losses = [h["train_loss"] for h in m1["history"]]
    assert losses[-1] < 0.9 * losses[0], losses
    assert m1["num_train"] == 96 and m1["num_test"] == 108 and m1["top1"] is not None
    for name in ("checkpoint.pt", "metrics.json", "curves.png", "confusion.png", "config.yaml"):
        assert (tmp_path / "a" / name).is_file()
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["params"] > 0 and saved["flops"] > 0 and len(saved["confusion_matrix"]) == 27
    m2 = train(cfg, tmp_path / "b", data, log=lambda _: None, max_train=96, plots=False)
    assert [h["train_loss"] for h in m2["history"]] == losses, "seeded training is deterministic"


@pytest.mark.skeleton_cache
def test_upfall_window_labels_around_the_fall() -> None:
    """Windows holding the detected fall get the fall class; before: standing; settled: laying."""
    from training.upfall import LAYING, STANDING, clip_window_ends, load_upfall, window_label

    require_cache("Activity3/Trial1Cam1.npz")
    cfg = load_config(REPO_ROOT / "configs" / "upfall-stgcnpp-lite-t1.yaml")
    cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"cameras": [1]})})
    clip = next(c for c in load_upfall(UPFALL_CACHE, cfg, [1]) if c.activity == 3)
    assert clip.fall_time is not None
    seconds, margin = cfg.input.window.seconds, cfg.dataset.fall_margin_s
    ends = clip_window_ends(clip, cfg, hop_s=0.125, lead_in=0.5)
    labels = [window_label(clip, float(e), cfg) for e in ends]
    for end, label in zip(ends, labels, strict=True):
        inside = end - seconds + margin <= clip.fall_time <= end - margin
        assert (label == clip.label) == inside
        if end < clip.fall_time - cfg.dataset.pre_fall_gap_s:
            assert label == STANDING
        if end - seconds > clip.fall_time + cfg.dataset.post_fall_gap_s:
            assert label == LAYING
    assert labels.count(clip.label) >= 8 and None in labels
    require_cache("Activity6/Trial2Cam1.npz")
    walking = next(c for c in load_upfall(UPFALL_CACHE, cfg, [2]) if c.activity == 6)
    assert {window_label(walking, float(e), cfg) for e in clip_window_ends(walking, cfg)} == {5}
