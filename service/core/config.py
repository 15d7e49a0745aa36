"""Service configuration from the environment (prefix ``SKELACT_``) or a ``.env`` file.

Every knob an operator may need lives here, with a default that works on a laptop without a GPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from perception.pose.estimator import PoseSpec
from perception.pose.graph import Association
from perception.pose.lanes import default_lanes
from perception.tracking.tracker import TrackerConfig
from skeleton.paths import REPO_ROOT

ProviderName = Literal["tensorrt", "cuda", "cpu"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SKELACT_", env_file=".env", extra="ignore")

    # --- server
    host: str = Field(default="127.0.0.1", description="bind address of `python -m service serve`")
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "info"

    # --- models
    models_dir: Path = Field(default=REPO_ROOT / "model_zoo", description="one sub-folder per model")
    default_model: str | None = Field(
        default=None, description="model used when a request names none (default: first loaded, sorted)"
    )
    models: Annotated[list[str] | None, NoDecode] = Field(
        default=None, description="load only these models (default: all)"
    )
    verify_sha: bool = Field(default=True, description="check model.onnx against the manifest's sha256")
    providers: Annotated[list[ProviderName], NoDecode] = Field(
        default=["tensorrt", "cuda", "cpu"],
        description="ONNX Runtime providers to try, in order; unavailable ones are skipped",
    )
    trt_cache_dir: Path | None = Field(
        default=None,
        description="root of the TensorRT engine cache, one folder per model, ONNX digest, precision, "
        "batch profile and TensorRT/ORT version; safe to share between replicas "
        "(default: <model dir>/trt_cache)",
    )
    trt_fp16: bool = Field(default=True, description="let TensorRT use FP16 kernels (its own engine folder)")
    ort_threads: int = Field(default=1, ge=0, description="intra-op threads per CPU session (0: all)")
    batch_max_size: int = Field(default=64, ge=1, description="windows per classifier call")
    batch_deadline_ms: float = Field(default=5.0, ge=0, description="wait this long to fill a batch")
    warmup: bool = True

    # --- pose
    pose_kind: Literal["tasks", "legacy"] = "tasks"
    max_people: int = Field(default=4, ge=1, le=16)
    pose_workers: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1),
        ge=1,
        description="threads running pose estimation (MediaPipe releases the GIL: one per core)",
    )
    pose_spare_slot: bool = Field(
        default=True,
        description="track one ROI more than SKELACT_MAX_PEOPLE so MediaPipe's detector runs every "
        "frame and new people are found at once; false with SKELACT_MAX_PEOPLE=1: ~2x faster "
        "frames with a tight tail, but the first person tracked keeps the slot (single-user apps)",
    )
    pose_association: Association = Field(
        default="one-to-one",
        description="how fresh detections join tracked people: MediaPipe's IoU rule, or one "
        "detection per tracked person (no duplicate landmark passes; perception/pose/graph.py)",
    )
    pose_tiles: bool = Field(
        default=False, description="also run pose on overlapping tiles (finds small people; ~2-4x slower)"
    )
    pose_upscale_min_side: int = Field(default=0, ge=0, description="enlarge smaller frames first (0: never)")
    pose_min_detection_confidence: float = Field(default=0.5, ge=0, le=1)
    pose_max_side: int | None = Field(
        default=None, ge=64, description="downscale video frames so the longer side is at most this"
    )
    pose_executor: Literal["thread", "process"] = Field(
        default="thread",
        description="run pose in threads of this process, or in spawned worker processes "
        "(bench/pose_threads.py measures which scales on a machine)",
    )
    stream_pose_lanes: int = Field(
        default=2,
        ge=1,
        le=16,
        description="frames of one WebSocket stream in pose at once, each on its own estimator "
        "(capped by SKELACT_POSE_WORKERS): a single stream can use several cores",
    )
    solo_pose_threads: int = Field(
        default=0,
        ge=0,
        le=16,
        description="XNNPACK threads per pose call while one WebSocket stream is the server's only "
        "pose work (no other stream, no clip): its frames run one at a time on every pose worker's "
        "core (~1.3x faster frames on two cores, landmarks bitwise the same), while that is faster "
        "than single-threaded frames. 0: SKELACT_POSE_WORKERS (at most 4); 1: off",
    )
    clip_pose_lanes: int = Field(
        default=0,
        ge=0,
        le=16,
        description="frames of one POST /recognize clip in pose at once, each lane with its own "
        "estimator fed every lanes-th frame (capped by SKELACT_POSE_WORKERS). 0: one per core while "
        "each lane still sees 15 frames/s, as offline extraction (training.extract --lanes) uses by "
        "default, so both see the same poses (perception/pose/lanes.py)",
    )
    pose_spares: int = Field(
        default=1,
        ge=0,
        le=16,
        description="pose estimators built ahead, so a new stream or clip starts without waiting "
        "for MediaPipe's graph (~0.3-0.5 s each)",
    )
    stitch_tracks: bool = Field(
        default=True,
        description="POST /recognize: join track fragments of one person (as training.extract does)",
    )
    min_pose_visibility: float = Field(
        default=0.0, ge=0, le=1, description="drop a person whose mean landmark visibility is lower"
    )
    track_confirm_s: float = Field(
        default=TrackerConfig().confirm_s,
        ge=0,
        le=5,
        description="a new track is reported once seen for this many seconds (streams: from then on; "
        "clips: from its first frame); shorter ones are dropped as phantoms (docs/tracking.md)",
    )

    # --- windows and smoothing
    stride: int | None = Field(default=None, ge=1, description="override the manifest's window stride")
    ema_alpha: float = Field(default=0.5, gt=0, le=1, description="weight of the newest window")
    enter_threshold: float = Field(default=0.5, ge=0, le=1, description="smoothed score to start a label")
    exit_threshold: float = Field(default=0.35, ge=0, le=1, description="score below which it ends")
    switch_margin: float = Field(default=0.1, ge=0, le=1, description="lead a new label needs to take over")
    top_k: int = Field(default=5, ge=1)

    # --- limits
    max_upload_mb: float = Field(default=200.0, gt=0)
    max_video_seconds: float = Field(default=900.0, gt=0)
    max_frame_bytes: int = Field(default=8 << 20, gt=0, description="largest WebSocket frame")
    max_streams: int = Field(default=32, ge=1)
    max_concurrent_clips: int = Field(default=4, ge=1, description="/recognize requests run at once")
    results_dir: Path | None = Field(
        default=None,
        description="annotated videos, shared by every replica that mounts it (default: a temp dir)",
    )
    results_keep: int = Field(
        default=32, ge=1, description="annotated videos kept in SKELACT_RESULTS_DIR (oldest deleted first)"
    )
    results_ttl_s: float = Field(
        default=86400.0, gt=0, description="annotated videos and finished clip jobs are deleted at this age"
    )
    jobs_dir: Path | None = Field(
        default=None,
        description="asynchronous POST /recognize jobs (state, progress, result), shared by every "
        "replica that mounts it (default: a temp dir)",
    )
    job_lease_s: float = Field(
        default=30.0,
        ge=1,
        description="a job whose replica wrote no heartbeat for this long is reported failed (it died)",
    )
    action_sets_dir: Path | None = Field(
        default=None,
        description="custom action sets, shared by every replica that mounts it (the storage "
        "contract: service/store.py); default: $SKELACT_CACHE_DIR or ~/.cache/skelact, /action-sets",
    )
    combined_first: Literal["set", "base"] = Field(
        default="set",
        description="a set next to a base model (model=set:NAME,BASE): which answers a window both "
        "accept (service/combined.py; chosen across UP-Fall trials, docs/action-sets.md)",
    )

    # --- reliability and access (docs/security.md)
    max_json_mb: float = Field(default=64.0, gt=0, description="largest JSON body (skeleton sequences)")
    max_message_bytes: int = Field(default=1 << 20, gt=0, description="largest WebSocket text message")
    max_frame_side: int = Field(
        default=4096, ge=16, description="largest width or height of a video or stream frame (pixels)"
    )
    max_stream_fps: float = Field(
        default=60.0, gt=0, description="messages per second a stream may send (burst: 2 s worth)"
    )
    max_queued_clips: int = Field(
        default=16, ge=0, description="/recognize requests waiting beyond max_concurrent_clips (503 beyond)"
    )
    batch_queue_size: int = Field(default=1024, ge=1, description="window groups queued per model batcher")
    request_timeout_s: float = Field(
        default=1800.0, gt=0, description="an HTTP request must start its response within this (503)"
    )
    read_timeout_s: float = Field(
        default=60.0, gt=0, description="longest wait for the next chunk of a request body (408)"
    )
    stream_idle_timeout_s: float = Field(
        default=300.0, gt=0, description="close a WebSocket stream that sends nothing for this long"
    )
    stream_max_queue_ms: float = Field(
        default=2000.0,
        gt=0,
        description="a stream frame that waited longer than this between its arrival and the start "
        "of its pose is dropped (counted, and the client told with frame_expired): its reply would "
        "no longer be live",
    )
    shutdown_timeout_s: float = Field(
        default=20.0, ge=0, description="on SIGTERM: time for open streams and requests to finish"
    )
    strict_models: bool = Field(
        default=True, description="any model that fails to load (or mismatches its manifest) fails start-up"
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="accepted API keys (empty: no authentication)"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins allowed to call the API from a browser ('*': any)"
    )

    @field_validator("models", "providers", "api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_csv(cls, v: object) -> object:
        """Accept ``a,b,c`` as well as JSON lists from the environment."""
        if isinstance(v, str):
            if v.strip().startswith("["):
                return json.loads(v)
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("providers", mode="after")
    @classmethod
    def _known_order(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one provider, e.g. SKELACT_PROVIDERS=cpu")
        return v

    def pose_spec(self, threads: int = 1) -> PoseSpec:
        """The pose estimator these settings ask for (`perception.pose.estimator.PoseSpec`);
        ``threads`` > 1: a solo estimator's XNNPACK threads (Tasks only, see `solo_threads`)."""
        options: dict[str, object]
        if self.pose_kind == "legacy":
            options = {"min_detection_confidence": self.pose_min_detection_confidence}
        else:
            options = {
                "tiles": self.pose_tiles,
                "upscale_min_side": self.pose_upscale_min_side,
                "min_detection_confidence": self.pose_min_detection_confidence,
                "spare_slot": self.pose_spare_slot,
                "association": self.pose_association,
                **({"threads": threads} if threads > 1 else {}),
            }
        return PoseSpec(self.pose_kind, self.max_people, options)

    def clip_lanes(self, fps: float | None = None) -> int:
        """Pose lanes of a clip of ``fps`` frames a second: ``clip_pose_lanes``, or by default
        `perception.pose.lanes.default_lanes` (one per core, as many as the frame rate allows);
        at most one per pose worker."""
        lanes = self.clip_pose_lanes or default_lanes(fps)
        return max(1, min(lanes, self.pose_workers))

    @property
    def solo_threads(self) -> int:
        """Threads of a solo stream's pose calls (1: off). Tasks only: the legacy solution has
        no thread option."""
        if self.pose_kind != "tasks":
            return 1
        threads = self.solo_pose_threads or min(self.pose_workers, 4)
        return max(1, min(threads, self.pose_workers))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * (1 << 20))

    @property
    def gpu_requested(self) -> bool:
        return any(p in ("tensorrt", "cuda") for p in self.providers)
