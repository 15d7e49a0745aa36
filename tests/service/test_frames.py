"""One function tracks a frame for clips and streams (`service.frames.FrameTracking`): client-numbered
tracks end on the tracker's own timeout, a pause ends the server's tracks, and `TrackSet` frees an
ended track in a stream but keeps (and continues) it in a clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception.tracking.tracker import TrackedPerson
from service.core.config import Settings
from service.frames import FrameTracking, PosedFrame
from service.metrics import Metrics
from service.registry import LoadedModel, ModelRegistry
from service.smoothing import smoothing_config
from service.tracks import TrackSet
from skeleton.types import MEDIAPIPE_JOINTS, BoundingBox, PersonPose
from tests.service_helpers import write_linear_model


def _pose(x: float = 300.0) -> PersonPose:
    image = np.zeros((MEDIAPIPE_JOINTS, 3), np.float32)
    image[:, 0] = x + np.linspace(-30, 30, MEDIAPIPE_JOINTS)
    image[:, 1] = np.linspace(100, 400, MEDIAPIPE_JOINTS)
    world = np.zeros((MEDIAPIPE_JOINTS, 3), np.float32)
    world[:, 1] = np.linspace(-0.8, 0.8, MEDIAPIPE_JOINTS)
    return PersonPose(
        image, world, np.ones(MEDIAPIPE_JOINTS, np.float32), BoundingBox(x - 30, 100, x + 30, 400)
    )


def _client(index: int, t: float, *ids: int) -> PosedFrame:
    return PosedFrame(index, t, 640, 480, people=tuple(TrackedPerson(i, _pose()) for i in ids))


def _nobody(index: int, t: float) -> PosedFrame:
    return PosedFrame(index, t, 640, 480)


def test_client_tracks_end_on_the_trackers_timeout() -> None:
    tracking = FrameTracking()
    assert tracking.timeout_s == tracking.tracker.config.max_missed_s == 1.0
    assert tracking.track(_client(0, 0.0, 7, 8)).people[0].track_id == 7
    assert tracking.track(_client(1, 0.5, 8)).closed == ()  # 7 unseen for 0.5 s: still open
    ended = tracking.track(_nobody(2, 1.2))  # an empty frame ages the client's tracks too
    assert ended.closed == (7,) and ended.ended_before == ()
    back = tracking.track(_client(3, 2.0, 8))  # 8 unseen for 1.5 s, seen again: a fresh start
    assert back.ended_before == (8,) and back.closed == () and [p.track_id for p in back.people] == [8]


def test_a_pause_ends_the_servers_tracks_before_the_frame() -> None:
    tracking = FrameTracking()
    (first,) = tracking.track(PosedFrame(0, 0.0, 640, 480, (_pose(),))).people
    assert tracking.track(PosedFrame(1, 0.1, 640, 480, (_pose(),))).people[0].track_id == first.track_id
    after = tracking.track(PosedFrame(2, 5.0, 640, 480, (_pose(),)))
    assert after.ended_before == (first.track_id,) and after.people[0].track_id != first.track_id


def test_a_stream_reports_a_track_from_its_confirmation_a_clip_from_its_first_frame() -> None:
    """``tentative=False`` (streams): a frame's people are the confirmed tracks only, so a track
    appears once its probation (``confirm_s``) is over; a clip's pass sees every track."""
    for tentative in (False, True):
        tracking = FrameTracking(confirm_s=0.2, tentative=tentative)
        people = [tracking.track(PosedFrame(k, k / 10, 640, 480, (_pose(),))).people for k in range(5)]
        seen = [len(p) for p in people]
        assert seen == ([0, 0, 1, 1, 1] if not tentative else [1] * 5)
        flags = [p[0].confirmed for p in people if p]
        assert flags == ([True] * 3 if not tentative else [False] * 2 + [True] * 3)
    assert FrameTracking(confirm_s=0.7).tracker.config.confirm_s == 0.7


def _model(tmp_path: Path) -> LoadedModel:
    write_linear_model(tmp_path / "linear", ["a", "b"], length=8, fps=10, stride=2)
    registry = ModelRegistry(Settings(models_dir=tmp_path, providers=["cpu"], warmup=False), Metrics())
    registry.load_all()
    return registry.get("linear")


def test_a_stream_restarts_a_returning_track_and_a_clip_continues_it(tmp_path: Path) -> None:
    model = _model(tmp_path)
    frames = [_client(i, i * 0.1, 5) for i in range(12)] + [
        _client(12 + i, 3.0 + i * 0.1, 5) for i in range(3)
    ]
    for keep_history in (False, True):
        tracking = FrameTracking()
        tracks = TrackSet(model, smoothing_config(Settings()), None, keep_history)
        first = None
        ended = []
        for frame in frames:
            outcome = tracks.observe(tracking.track(frame))
            ended += [r.track_id for r in outcome.ended]
            first = first or tracks.open[5]
        assert ended == [5]  # the track ended before the frame at 3.0 s
        if keep_history:  # one record per id: its windows follow the clip's protocol over the gap
            assert tracks.open[5] is first and tracks.ended == {} and first.buffer.first_seen == 0.0
        else:  # the stream's track starts afresh (its window fills from zero)
            assert tracks.open[5] is not first and tracks.open[5].buffer.first_seen == 3.0
