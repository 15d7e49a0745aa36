"""Prometheus metrics, one registry per app (several apps may live in one test process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_STAGE_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
)
STAGES = ("decode", "pose", "track", "buffer", "classify", "encode", "total", "latency", "queue")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stage_seconds = Histogram(
            "skelact_stage_seconds",
            "time per frame (per clip for encode) spent in a pipeline stage",
            ["stage", "source"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.frames_processed = Counter(
            "skelact_frames_processed_total", "frames through pose", ["source"], registry=r
        )
        self.frames_received = Counter(
            "skelact_frames_received_total", "frames received", ["source"], registry=r
        )
        self.frames_dropped = Counter(
            "skelact_frames_dropped_total", "stream frames dropped because a newer one arrived", registry=r
        )
        self.frames_expired = Counter(
            "skelact_frames_expired_total",
            "stream frames dropped because they waited longer than SKELACT_STREAM_MAX_QUEUE_MS for pose "
            "(also counted in skelact_frames_dropped_total)",
            registry=r,
        )
        self.solo_frames = Counter(
            "skelact_solo_pose_frames_total",
            "stream frames posed solo: one call on every pose core (SKELACT_SOLO_POSE_THREADS)",
            registry=r,
        )
        self.windows = Counter("skelact_windows_total", "model windows classified", ["model"], registry=r)
        self.batch_size = Histogram(
            "skelact_batch_size",
            "windows per classifier call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "skelact_batch_seconds", "classifier call time", ["model"], buckets=_STAGE_BUCKETS, registry=r
        )
        self.active_streams = Gauge("skelact_active_streams", "open WebSocket streams", registry=r)
        self.active_tracks = Gauge("skelact_active_tracks", "people tracked in open streams", registry=r)
        self.pose_spares_missing = Gauge(
            "skelact_pose_spares_missing",
            "pre-built pose estimators still to build (they are built only while no stream is open)",
            registry=r,
        )
        self.requests = Counter(
            "skelact_recognize_requests_total", "POST /recognize by outcome", ["outcome"], registry=r
        )
        self.clips_in_pose = Gauge(
            "skelact_clips_in_pose",
            "clips between taking their pose estimators and finishing their frames (a stream poses "
            "solo only while there are none)",
            registry=r,
        )
        self.recognize_in_progress = Gauge(
            "skelact_recognize_in_progress",
            "POST /recognize requests admitted and not finished, their upload included (503 busy at "
            "SKELACT_MAX_CONCURRENT_CLIPS + SKELACT_MAX_QUEUED_CLIPS)",
            registry=r,
        )
        self.events = Counter(
            "skelact_action_events_total", "action start events", ["model", "label"], registry=r
        )
        # What this replica can take and is doing: readiness and the autoscaler read these
        # (docs/deployment.md, "Autoscaling"); ServiceState binds them to the live values.
        self.stream_capacity = Gauge(
            "skelact_stream_capacity", "streams this replica accepts (SKELACT_MAX_STREAMS)", registry=r
        )
        self.active_clips = Gauge(
            "skelact_active_clips", "clips in the pipeline (POST /recognize and clip jobs)", registry=r
        )
        self.queued_clips = Gauge(
            "skelact_queued_clips",
            "clips waiting for a place in the pipeline (SKELACT_MAX_CONCURRENT_CLIPS)",
            registry=r,
        )
        self.pose_busy = Gauge(
            "skelact_pose_busy_ratio",
            "share of the pose workers' time spent in pose over the last 30 s (0..1): the pose load",
            registry=r,
        )
        self.draining = Gauge(
            "skelact_draining",
            "1 while shutting down: no new streams or clips, streams closed (1001)",
            registry=r,
        )

    def observe_stage(self, stage: str, seconds: float, source: str) -> None:
        self.stage_seconds.labels(stage=stage, source=source).observe(seconds)

    def batch_observer(self, model: str) -> Callable[[int, float], None]:
        size = self.batch_size.labels(model=model)
        secs = self.batch_seconds.labels(model=model)
        wins = self.windows.labels(model=model)

        def observe(n: int, seconds: float) -> None:
            size.observe(n)
            secs.observe(seconds)
            wins.inc(n)

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
