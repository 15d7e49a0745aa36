"""Wire schemas of the HTTP and WebSocket API (documented in docs/api.md).

The browser client is written against exactly these models: change them only together with
docs/api.md and service/static/.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from skeleton.manifest import FallRuleSpec

NUM_LANDMARKS = 33
MAX_FRAME_SIDE = 1 << 16  # pixels: a sanity bound for client-declared frame sizes

# ----------------------------------------------------------------------------- shared


class LabelScore(BaseModel):
    label: str
    score: float


class WindowInfo(BaseModel):
    """How the model sees time: ``length`` frames at ``fps``, a new window every ``stride`` frames."""

    length: int
    fps: float
    stride: int
    seconds: float


# ----------------------------------------------------------------------------- fall events


def _overrides_model(name: str, extra: Literal["forbid", "ignore"]) -> type[BaseModel]:
    """Every parameter of ``FallRuleSpec`` but the label group, optional, with its bounds and
    description: the one definition of what a request or a stream may override."""
    fields: dict[str, Any] = {
        key: (Annotated[float, *f.metadata] | None, Field(default=None, description=f.description))
        for key, f in FallRuleSpec.model_fields.items()
        if key != "fall_group"
    }
    doc = "Changes to the model's fall rule for one request or stream (docs/api.md, 'Fall events')."
    return create_model(name, __config__=ConfigDict(extra=extra), __doc__=doc, **fields)


# query parameters of POST /recognize and WS /stream (other query parameters are the routes')
FallRuleQuery = _overrides_model("FallRuleQuery", "ignore")
# the ``fall_rule`` object of a stream's config message
FallRuleOverrides = _overrides_model("FallRuleOverrides", "forbid")


class PostureOut(BaseModel):
    """Body posture over half a second (medians; null where it was not measurable): docs/falls.md."""

    torso_angle: float | None = Field(description="degrees from upright: 0 upright, 90 lying across the view")
    torso_length: float | None = Field(description="hip centre to shoulder centre, in frame heights")
    shoulder_y: float | None = Field(description="shoulder height, frame heights from the top")
    seen: float = Field(description="share of the core joints seen inside the frame")


class FallEventOut(BaseModel):
    """A confirmed fall (the fall pattern, then the person seen down for ``confirm_s``) or, later,
    a recovery (seen up again for ``recover_s``); ``skeleton.falls``."""

    type: Literal["fall", "recovered"]
    track_id: int = Field(description="the track that showed the person down (fall) or up (recovered)")
    time: float = Field(description="when the event was decided: end of the deciding window (s)")
    fall_time: float = Field(description="the moment of the fall: fastest shoulder descent (s)")
    confidence: float = Field(description="highest fall probability of the fall's windows")
    label: str = Field(description="the fall class, most likely over the fall's windows")
    fall_windows: list[float] = Field(description="end times of the windows that showed the fall pattern")
    before: PostureOut = Field(description="posture before the fall (the standing baseline)")
    after: PostureOut = Field(description="posture when the event was decided")
    down_s: float = Field(description="fall: seconds seen down; recovered: seconds since the fall was raised")
    handed_over_from: int | None = Field(
        default=None, description="the track that showed the fall pattern, when the fall broke it"
    )


# ----------------------------------------------------------------------------- skeleton input

Landmark = Annotated[list[float], Field(min_length=2, max_length=4)]


class SkeletonPersonIn(BaseModel):
    """One person in one frame, as MediaPipe Pose gives it (33 landmarks, MediaPipe order).

    ``image``: 33 × [x, y] or [x, y, z] in pixels of the frame (or in 0..1 when the frame's
    ``normalized`` is true; z then scales like x). ``world``: 33 × [x, y, z] metres, hip-centred,
    MediaPipe axes (y down). Give the one the model's manifest uses (``coordinates`` in
    GET /models), or both. ``visibility``: 33 values in 0..1 (default 1). ``id``: your own
    track id; when any person in a request has one, the server's tracker is bypassed.
    """

    id: int | None = None
    image: list[Landmark] | None = Field(default=None, min_length=NUM_LANDMARKS, max_length=NUM_LANDMARKS)
    world: list[Landmark] | None = Field(default=None, min_length=NUM_LANDMARKS, max_length=NUM_LANDMARKS)
    visibility: list[float] | None = Field(default=None, min_length=NUM_LANDMARKS, max_length=NUM_LANDMARKS)

    @model_validator(mode="after")
    def _some_coordinates(self) -> SkeletonPersonIn:
        if self.image is None and self.world is None:
            raise ValueError("a person needs 'image' and/or 'world' landmarks")
        if self.world is not None and any(len(p) != 3 for p in self.world):
            raise ValueError("'world' landmarks are [x, y, z]")
        return self


class SkeletonFrameIn(BaseModel):
    """All people seen in one frame. ``timestamp`` in seconds, increasing."""

    timestamp: float = Field(ge=0, allow_inf_nan=False)
    people: list[SkeletonPersonIn] = Field(default_factory=list, max_length=64)
    width: int | None = Field(default=None, gt=0, le=MAX_FRAME_SIDE, description="frame width in pixels")
    height: int | None = Field(default=None, gt=0, le=MAX_FRAME_SIDE, description="frame height in pixels")
    normalized: bool = Field(default=False, description="image landmarks are in 0..1, not pixels")


class SkeletonSequenceIn(BaseModel):
    """A whole clip of skeletons for POST /recognize (clients that run pose themselves)."""

    width: int = Field(
        default=640, gt=0, le=MAX_FRAME_SIDE, description="default frame width for every frame"
    )
    height: int = Field(
        default=480, gt=0, le=MAX_FRAME_SIDE, description="default frame height for every frame"
    )
    frames: list[SkeletonFrameIn] = Field(min_length=1)

    @model_validator(mode="after")
    def _increasing(self) -> SkeletonSequenceIn:
        ts = [f.timestamp for f in self.frames]
        if any(b <= a for a, b in pairwise(ts)):
            raise ValueError("frame timestamps must be strictly increasing")
        return self


# ----------------------------------------------------------------------------- POST /recognize


class VideoInfo(BaseModel):
    filename: str
    width: int
    height: int
    fps: float
    frames: int = Field(description="frames decoded")
    duration_s: float


class Segment(BaseModel):
    """A stretch of time with one (smoothed, hysteresis-filtered) label."""

    start: float
    end: float
    label: str
    confidence: float = Field(description="mean smoothed score of the label over the segment")


class TrackResult(BaseModel):
    track_id: int
    members: list[int] = Field(
        default_factory=list, description="online track ids joined into this person (left and re-entered)"
    )
    primary: bool
    first_seen: float
    last_seen: float
    frames: int = Field(description="frames in which this person was detected")
    windows: int = Field(description="model windows classified for this track")
    segments: list[Segment]
    top: list[LabelScore] = Field(description="top-k of the mean window probabilities")


class ClipResult(BaseModel):
    """Clip-level decision, by the same rule as the offline evaluation (skeleton.clip)."""

    track_id: int
    label: str
    confidence: float
    top: list[LabelScore] = Field(description="clip scores: mean over the windows that decided")
    fall: bool = Field(default=False, description="a fall was confirmed in the clip (`falls` has it)")
    fall_time: float | None = Field(
        default=None, description="the moment of the confirmed fall (the primary person's if they fell), s"
    )
    fall_probability: float = Field(
        default=0.0, description="highest window probability of any fall class (primary person)"
    )


class StageTimes(BaseModel):
    """Milliseconds spent in each stage, summed over the clip (stages overlap in time)."""

    decode: float = 0.0
    pose: float = 0.0
    track: float = 0.0
    buffer: float = 0.0
    classify: float = 0.0
    encode: float = 0.0


class ProcessingStats(BaseModel):
    frames_decoded: int
    frames_processed: int
    windows: int
    batches: int = Field(description="classifier calls these windows were part of")
    wall_s: float = Field(description="seconds from the first frame to the response (annotated video too)")
    fps_processed: float = Field(description="frames_processed / wall_s")
    pose_lanes: int = Field(1, description="estimators the frames ran on at once (SKELACT_CLIP_POSE_LANES)")
    stage_ms: StageTimes
    overlay_s: float | None = Field(
        default=None, description="seconds spent drawing and encoding the annotated video (part of wall_s)"
    )


class FramePerson(BaseModel):
    """One person in one frame of a clip, with the id of their entry in ``tracks``."""

    track_id: int
    box: list[float] = Field(description="[x0, y0, x1, y1] of the landmarks, pixels of the video's frames")
    landmarks: list[list[float]] | None = Field(
        default=None, description="33 × [x, y, visibility], pixels (with frames=landmarks)"
    )


class FramePeople(BaseModel):
    """Who is where in one frame (``frames=boxes|landmarks``): the people of ``tracks`` seen in it."""

    frame: int = Field(description="0-based index of the frame (video: as decoded; skeletons: as sent)")
    time: float = Field(description="seconds")
    people: list[FramePerson]


class RecognizeResponse(BaseModel):
    model: str
    provider: str
    source: Literal["video", "skeleton"]
    video: VideoInfo | None
    window: WindowInfo
    tracks: list[TrackResult]
    primary_track_id: int | None
    clip: ClipResult | None = Field(description="null when nobody was detected")
    stats: ProcessingStats
    overlay_url: str | None = Field(default=None, description="annotated video, when overlay=true")
    warnings: list[str] = Field(default_factory=list)
    falls: list[FallEventOut] = Field(
        default_factory=list, description="confirmed falls and recoveries of every person, in time order"
    )
    fall_rule: FallRuleSpec | None = Field(
        default=None, description="the fall rule applied (with the request's overrides); null: no falls"
    )
    frames: list[FramePeople] | None = Field(
        default=None, description="every frame's people, when frames=boxes or frames=landmarks"
    )


# ----------------------------------------------------------------------------- GET /models, health


class ModelInfo(BaseModel):
    name: str
    version: str
    architecture: str
    description: str
    labels: list[str]
    label_groups: dict[str, list[str]]
    layout: str
    coordinates: Literal["world", "image"]
    window: WindowInfo
    provider: str
    providers: list[str]
    default: bool
    metrics: dict[str, object] = Field(default_factory=dict)
    kind: Literal["classifier", "embedding"] = Field(
        default="classifier", description="embedding: no labels of its own; action sets enrol on it"
    )


class ModelsResponse(BaseModel):
    default: str | None
    models: list[ModelInfo]


HealthStatus = Literal["ok", "starting", "error", "draining", "full"]


class HealthResponse(BaseModel):
    status: HealthStatus = Field(
        description="full: at its stream capacity (SKELACT_MAX_STREAMS); draining: shutting down"
    )
    ready: bool
    models: dict[str, str] = Field(default_factory=dict, description="model -> provider in use")
    pose: str = ""
    warnings: list[str] = Field(default_factory=list)
    reason: str = ""
    providers: list[str] = Field(
        default_factory=list,
        description="the requested ONNX Runtime providers that can run on this host (loadable, not "
        "merely compiled in), in order of preference",
    )
    provider_note: str = Field(default="", description="which provider runs the models, and why")


# ----------------------------------------------------------------------------- WebSocket /stream


class TrackState(BaseModel):
    track_id: int
    box: list[float] = Field(description="[x0, y0, x1, y1] pixels")
    landmarks: list[list[float]] = Field(description="33 × [x, y, visibility], pixels")
    label: str | None = Field(description="current smoothed label, null until one is confident")
    confidence: float
    top: list[LabelScore]
    window_fill: float = Field(description="share of the first model window seen so far (0..1)")


class EventOut(BaseModel):
    type: Literal["start", "end"]
    track_id: int
    label: str
    time: float = Field(description="stream time in seconds")


class FrameTimings(BaseModel):
    decode: float
    pose: float
    track: float
    classify: float
    total: float = Field(description="processing time of this frame")
    latency: float = Field(description="frame received -> reply sent, including waiting")
    queue: float = Field(
        0.0,
        description="frame received -> its decode + pose started: waiting for a pose lane, a pose "
        "slot (other streams, clips) and a pose thread (SKELACT_STREAM_MAX_QUEUE_MS bounds it)",
    )


class FrameMessage(BaseModel):
    type: Literal["frame"] = "frame"
    frame_id: int
    timestamp: float
    width: int
    height: int
    tracks: list[TrackState]
    events: list[EventOut]
    timings_ms: FrameTimings
    received: int
    processed: int
    dropped: int
    falls: list[FallEventOut] = Field(default_factory=list, description="fall events decided at this frame")


class HelloMessage(BaseModel):
    type: Literal["hello"] = "hello"
    model: str
    labels: list[str]
    provider: str
    window: WindowInfo
    fall_rule: FallRuleSpec | None = Field(
        default=None, description="the stream's fall rule (with its overrides); null: no fall classes"
    )


class ErrorMessage(BaseModel):
    type: Literal["error"] = "error"
    code: str
    message: str


class ConfigMessage(BaseModel):
    """Client -> server: switch model (the server answers with a new hello)."""

    model_config = ConfigDict(protected_namespaces=())

    type: Literal["config"]
    model: str | None = None
    unknown_threshold: float | None = Field(
        default=None, description="open-set threshold from now on (null: the model's manifest)"
    )
    fall_rule: FallRuleOverrides | None = Field(  # type: ignore[valid-type]
        default=None, description="new fall-rule overrides for the stream ({}: the model's own rule)"
    )


class SkeletonFrameMessage(SkeletonFrameIn):
    """Client -> server: a frame of skeletons instead of an image."""

    type: Literal["skeleton"]


# ----------------------------------------------------------------------------- clip jobs (mode=async)


class JobProgress(BaseModel):
    frames_done: int = Field(default=0, description="frames through the pipeline so far")
    frames_total: int | None = Field(
        default=None, description="frames of the clip (as its container declares them; null until it is read)"
    )


class JobError(BaseModel):
    code: str
    message: str
    hint: str = ""


class JobStatus(BaseModel):
    """An asynchronous POST /recognize (``mode=async``): GET /jobs/{job_id} until ``done`` or ``failed``."""

    job_id: str
    state: Literal["queued", "running", "done", "failed"] = Field(
        description="queued: waiting for a place (SKELACT_MAX_CONCURRENT_CLIPS); running: in the "
        "pipeline; done: ``result`` holds the response; failed: ``error`` says why"
    )
    created_at: datetime
    updated_at: datetime
    progress: JobProgress = Field(default_factory=lambda: JobProgress())
    result: RecognizeResponse | None = Field(
        default=None, description="when done: what the synchronous POST /recognize answers"
    )
    error: JobError | None = None
