"""Unit tests of the service's own stages: settings, buffer, smoothing, batching, classifier, inputs.

Real ONNX Runtime sessions on tiny generated models; real skeletons from UTD-MHAD-free synthetic
motion only where the maths is what is tested (window clock, hysteresis).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service.batching import MicroBatcher
from service.buffer import TrackBuffer
from service.classifier import OnnxClassifier
from service.core.config import Settings
from service.core.errors import ServiceError
from service.schemas import SkeletonFrameIn, SkeletonSequenceIn
from service.skeleton_input import posed_frame
from service.smoothing import LabelEvent, LabelSmoother, SmoothingConfig, TimelineBuilder
from skeleton.manifest import load_manifest
from skeleton.preprocess import prepare_window, sequence_to_layout
from skeleton.types import BoundingBox, PersonPose, SkeletonSequence
from tests.conftest import gpu_available, gpu_providers
from tests.service_helpers import write_linear_model


def _pose(t: float, rng: np.random.Generator) -> PersonPose:
    base = np.linspace(0, 1, 33 * 3, dtype=np.float32).reshape(33, 3)
    image = (base * 200 + 100 + 20 * np.sin(t)).astype(np.float32)
    world = (base - 0.5 + 0.05 * rng.normal(size=(33, 3))).astype(np.float32)
    return PersonPose(image, world, np.full(33, 0.9, np.float32), BoundingBox(100, 100, 300, 300))


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SKELACT_PROVIDERS", "cuda,cpu")
    monkeypatch.setenv("SKELACT_MODELS", "a,b")
    monkeypatch.setenv("SKELACT_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("SKELACT_BATCH_DEADLINE_MS", "2.5")
    s = Settings()
    assert s.providers == ["cuda", "cpu"] and s.models == ["a", "b"] and s.models_dir == tmp_path
    assert s.batch_deadline_ms == 2.5 and s.gpu_requested
    monkeypatch.setenv("SKELACT_PROVIDERS", '["cpu"]')
    assert Settings().providers == ["cpu"]
    monkeypatch.setenv("SKELACT_PROVIDERS", "npu")
    with pytest.raises(ValueError):
        Settings()


def test_solo_threads_follow_the_pose_workers() -> None:
    """Auto: one thread per pose worker (a lone frame holds every slot), at most 4; never more
    than the workers; off (1) for the legacy estimator, which has no thread option."""
    assert Settings(pose_workers=2).solo_threads == 2
    assert Settings(pose_workers=16).solo_threads == 4
    assert Settings(pose_workers=1).solo_threads == 1
    assert Settings(pose_workers=8, solo_pose_threads=6).solo_threads == 6
    assert Settings(pose_workers=2, solo_pose_threads=6).solo_threads == 2
    assert Settings(pose_workers=4, solo_pose_threads=1).solo_threads == 1
    assert Settings(pose_workers=4, pose_kind="legacy").solo_threads == 1


def test_buffer_cuts_windows_on_the_model_clock_like_offline_preprocess(tmp_path: Path) -> None:
    """Windows every stride/fps seconds once a window is full; each equals prepare_window offline."""
    manifest = load_manifest(write_linear_model(tmp_path / "m", ["a", "b"], length=16, fps=10, stride=4))
    spec = manifest.input
    rng = np.random.default_rng(0)
    buf = TrackBuffer(1, spec, keep_all=True)
    times = np.arange(0, 4.0, 1 / 30)  # a 30 fps camera
    poses: list[PersonPose | None] = []
    ends: list[float] = []
    windows = []
    for i, t in enumerate(times):
        pose = None if 40 <= i < 50 else _pose(t, rng)  # a third of a second missed
        poses.append(pose)
        buf.push(float(t), pose, 480)
        due = buf.due()
        ends += due
        windows += buf.cut(due)
    assert ends[0] == pytest.approx(1.5) and np.allclose(np.diff(ends), 0.4)
    assert buf.fill == 1.0 and len(windows) == len(ends)
    seq = SkeletonSequence.from_poses(list(times), poses)
    offline = sequence_to_layout(seq, spec, 480)
    # windows ending inside the gap wait for the person to come back, then interpolate across it,
    # exactly like the offline protocol on the whole clip (evaluation.upfall)
    for w in windows:
        assert w.tensor.shape == (3, 16, 33) and np.isfinite(w.tensor).all()
        expect = prepare_window(seq.timestamps, offline, spec, w.end_time)
        np.testing.assert_array_equal(w.tensor, expect)  # exactly the whole-track computation


def test_buffer_short_track_gets_one_window_and_stream_buffer_stays_bounded(tmp_path: Path) -> None:
    spec = load_manifest(write_linear_model(tmp_path / "m", ["a", "b"], length=32, fps=15)).input
    rng = np.random.default_rng(1)
    short = TrackBuffer(1, spec, keep_all=True)
    for t in np.arange(0, 0.5, 1 / 30):
        short.push(float(t), _pose(t, rng), 480)
        assert short.due() == []
    assert 0 < short.fill < 1
    assert short.cut(short.flush())[0].tensor.shape == (3, 32, 33)
    stream = TrackBuffer(2, spec, keep_all=False)
    for t in np.arange(0, 30, 1 / 30):
        stream.push(float(t), _pose(t, rng), 480)
        stream.cut(stream.due())
    assert len(stream._times) < 30 * (spec.window.seconds + 1.5)


def test_smoothing_hysteresis_does_not_flicker() -> None:
    sm = LabelSmoother(["walk", "fall"], SmoothingConfig(alpha=0.5, enter=0.6, exit=0.4, margin=0.1))
    timeline = TimelineBuilder()
    labels: list[str | None] = []
    events: list[LabelEvent] = []
    noisy = [0.7, 0.45, 0.7, 0.5, 0.65, 0.55]  # walk, with dips that a raw argmax would flip on
    for i, p in enumerate(noisy):
        st = sm.update(np.array([p, 1 - p]), float(i))
        timeline.add(st)
        labels.append(st.label)
        events += st.events
    assert labels == ["walk"] * len(noisy)
    assert [(e.kind, e.label) for e in events] == [("start", "walk")]
    for i in range(6, 12):  # a real change: fall takes over, walk ends first
        st = sm.update(np.array([0.05, 0.95]), float(i))
        timeline.add(st)
        events += st.events
    assert [(e.kind, e.label) for e in events] == [("start", "walk"), ("end", "walk"), ("start", "fall")]
    segs = timeline.end(12.0)
    assert [(s.label, s.start, s.end) for s in segs] == [
        ("walk", 0.0, events[1].time),
        ("fall", events[2].time, 12.0),
    ]
    assert sm.end(12.0)[0].kind == "end" and sm.label is None


def test_classifier_reports_the_provider_in_use(tmp_path: Path) -> None:
    folder = write_linear_model(tmp_path / "m", ["a", "b", "c"])
    manifest = load_manifest(folder)
    clf = OnnxClassifier(folder, manifest, ["tensorrt", "cuda", "cpu"])
    probs = clf.predict(np.zeros((5, 3, 32, 33), np.float32))
    assert probs.shape == (5, 3) and np.allclose(probs.sum(axis=1), 1)
    assert clf.provider in gpu_providers() and clf.provider == clf.providers[0]
    # a GPU host runs it there; without a GPU, CPU is the only provider that can run: none fell back
    assert (clf.choice.available == ["cpu"]) == (not gpu_available()) and not clf.gpu_fell_back
    cpu = OnnxClassifier(folder, manifest, ["cpu"])
    assert cpu.provider == "cpu" and not cpu.gpu_fell_back


def test_micro_batcher_merges_concurrent_windows(tmp_path: Path) -> None:
    folder = write_linear_model(tmp_path / "m", ["a", "b"])
    clf = OnnxClassifier(folder, load_manifest(folder), ["cpu"])
    sizes: list[int] = []
    rng = np.random.default_rng(2)
    inputs = [rng.normal(size=(n, 3, 32, 33)).astype(np.float32) for n in (1, 2, 1, 3, 1, 1, 2, 1)]

    async def run() -> list[np.ndarray]:
        batcher = MicroBatcher(clf, max_batch=64, deadline_s=0.02, observer=lambda n, _: sizes.append(n))
        batcher.add_producer()
        batcher.add_producer()
        try:
            results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
            big = await batcher.submit(rng.normal(size=(150, 3, 32, 33)).astype(np.float32))
            assert big.probs.shape == (150, 2)
            return [r.probs for r in results]
        finally:
            await batcher.close()

    out = asyncio.run(run())
    assert sizes[0] == sum(x.shape[0] for x in inputs), sizes  # one call for all eight callers
    assert max(sizes) <= 64
    for x, p in zip(inputs, out, strict=True):
        np.testing.assert_allclose(p, clf.predict(x), atol=1e-6)


def test_micro_batcher_waits_for_partners_only_when_there_can_be_some(tmp_path: Path) -> None:
    """With one producer (a lone stream) a window runs at once; with two, it waits the deadline
    for the other's windows."""
    folder = write_linear_model(tmp_path / "m", ["a", "b"])
    clf = OnnxClassifier(folder, load_manifest(folder), ["cpu"])
    x = np.random.default_rng(3).normal(size=(1, 3, 32, 33)).astype(np.float32)

    async def run() -> tuple[float, float]:
        batcher = MicroBatcher(clf, max_batch=64, deadline_s=0.4)
        try:
            with batcher.producing():
                alone = (await batcher.submit(x)).wait_ms
                with batcher.producing():
                    assert batcher.producers == 2
                    shared = (await batcher.submit(x)).wait_ms
            assert batcher.producers == 0
            return alone, shared
        finally:
            await batcher.close()

    alone, shared = asyncio.run(run())
    assert alone < 200 and shared >= 390, (alone, shared)


def test_skeleton_json_becomes_person_poses() -> None:
    pts = [[100.0 + j, 200.0 + j, 0.0] for j in range(33)]
    frame = SkeletonFrameIn.model_validate(
        {"timestamp": 0.5, "width": 640, "height": 480, "people": [{"image": pts}, {"image": pts}]}
    )
    posed = posed_frame(frame, 0, ("image",))
    people, poses, w, h = posed.people, posed.poses, posed.width, posed.height
    assert people is None and poses is not None and len(poses) == 2 and (w, h) == (640, 480)
    assert poses[0].box.x0 == 100 and np.isnan(poses[0].world).all()
    norm = SkeletonFrameIn.model_validate(
        {
            "timestamp": 0,
            "normalized": True,
            "width": 200,
            "height": 100,
            "people": [{"id": 7, "image": [[0.5, 0.5]] * 33}],
        }
    )
    people = posed_frame(norm, 0, ("image",)).people
    assert people is not None and people[0].track_id == 7 and people[0].pose.image[0, 0] == 100
    with pytest.raises(ServiceError) as err:
        posed_frame(frame, 0, ("world",))  # the model needs world landmarks
    assert err.value.status == 422 and "world" in err.value.message
    with pytest.raises(ValueError):
        SkeletonSequenceIn.model_validate({"frames": [{"timestamp": 1}, {"timestamp": 1}]})
    with pytest.raises(ValueError):
        SkeletonFrameIn.model_validate({"timestamp": 0, "people": [{"image": [[1, 2]] * 32}]})


def test_pose_worker_process_matches_in_process_estimator() -> None:
    """SKELACT_POSE_EXECUTOR=process: the same landmarks, computed in a spawned worker."""
    from perception.pose.estimator import PoseSpec, create_pose_estimator
    from perception.pose.workers import PoseWorkerPool
    from perception.video import VideoReader
    from tests.conftest import require_data

    with VideoReader(require_data("upfall", "Activity9", "Trial1Cam1.mp4")) as reader:
        frames = [f for f, _ in zip(reader, range(3), strict=False)]
    pool = PoseWorkerPool(1)
    try:
        remote = pool.open(PoseSpec("tasks", 2))
        local = create_pose_estimator("tasks", max_people=2)
        first = []
        for f in frames:
            a, b = remote.estimate(f.rgb, f.timestamp_s), local.estimate(f.rgb, f.timestamp_s)
            assert len(a) == len(b) >= 1
            np.testing.assert_allclose(a[0].image, b[0].image, atol=1e-3)
            first = first or a
        remote.close()
        local.close()
        with pytest.raises(RuntimeError):
            remote._worker.call("estimate", 999, frames[0].rgb, 1.0)  # unknown session: an error, no crash
        # ... and the worker still serves: a new session finds the same person on the first frame
        again = pool.open(PoseSpec("tasks", 2)).estimate(frames[0].rgb, frames[0].timestamp_s)
        assert len(again) == len(first) >= 1
        np.testing.assert_allclose(again[0].image, first[0].image, atol=1e-3)
    finally:
        pool.close()
