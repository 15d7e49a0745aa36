"""The model manifest: everything the service needs to run an exported model correctly.

Written by the export stage next to ``model.onnx`` and read by the service; the input
section drives ``skeleton.preprocess`` on both sides, so training and serving cannot drift.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"


class WindowSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    length: int = Field(gt=0, description="frames fed to the model (T)")
    fps: float = Field(gt=0, description="sampling rate of those frames; streams are resampled to it")
    stride: int = Field(gt=0, description="model frames between two successive windows of a stream")

    @property
    def seconds(self) -> float:
        return (self.length - 1) / self.fps

    @property
    def hop_s(self) -> float:
        """Seconds between the ends of two successive windows."""
        return self.stride / self.fps

    def with_stride(self, stride: int | None) -> WindowSpec:
        """The same window with another stride (None: this one)."""
        return self if not stride or stride == self.stride else self.model_copy(update={"stride": stride})


class NormalizationSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    centre_joint: str = Field(description="joint (in the model layout) moved to the origin")
    centre_mode: Literal["first_frame", "per_frame"] = "first_frame"
    scale_joints: tuple[str, str] | None = Field(
        default=None, description="joints whose mean distance over the window becomes 1 (body size)"
    )
    align_view: bool = Field(
        default=False, description="rotate about the vertical axis so the hip line is parallel to x"
    )


class InputSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    layout: str = Field(description="joint layout of the model input: mediapipe33, kinect20 or coco17")
    coordinates: Literal["world", "image"] = Field(
        description="which MediaPipe landmarks feed the model: metric world or image-plane"
    )
    window: WindowSpec
    normalization: NormalizationSpec
    channels: int = 3


class OnnxSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    file: str = "model.onnx"
    sha256: str
    opset: int
    input_name: str = "skeleton"
    input_shape: list[str | int]
    output_name: str = "logits"
    output_shape: list[str | int]
    fp16_file: str | None = None
    fp16_max_abs_error: float | None = None


class ClipRuleSpec(BaseModel):
    """Parameters of the clip-level decision rule (``skeleton.clip.decide``) used offline and served."""

    model_config = ConfigDict(frozen=True)

    fall_group: str = Field(default="fall", description="label group whose windows raise a fall")
    fall_threshold: float = Field(
        default=0.5, ge=0, le=1,
        description="a window is a fall when its summed fall-class probability >= this",
    )
    min_fall_windows: int = Field(default=1, ge=1, description="consecutive fall windows needed")


class OpenSetSpec(BaseModel):
    """When a prediction is ``unknown`` (``skeleton.open_set``): ``score`` of a window or clip below
    ``threshold``. Optional in the manifest: a model without it never answers ``unknown``."""

    model_config = ConfigDict(frozen=True)

    score: Literal["max_softmax", "max_logit", "energy", "max_cosine", "relative_cosine"] = Field(
        description="max_softmax / max_logit / energy (= logsumexp) of a classifier's logits; "
        "max_cosine: similarity to the nearest prototype of an embedding's enrolled labels; "
        "relative_cosine: that similarity over the label's example spread (skeleton.prototypes)"
    )
    threshold: float = Field(description="unknown when score < threshold")
    chosen_by: str = Field(default="", description="how the threshold was chosen (data, rule)")
    metrics: dict[str, Any] = Field(default_factory=dict, description="measured known/unknown results")


class EmbeddingSpec(BaseModel):
    """What an embedding model's output is and how examples become a classifier (``skeleton.prototypes``)."""

    model_config = ConfigDict(frozen=True)

    dim: int = Field(gt=0, description="length of the output vector")
    metric: Literal["cosine"] = Field(
        default="cosine", description="outputs are L2-normalised: similarity = dot product"
    )
    pooling: Literal["mean"] = Field(
        default="mean",
        description="an example or a query of several windows = normalised mean of its window vectors",
    )
    logit_scale: float = Field(
        default=16.0, gt=0,
        description="softmax(logit_scale * cosine) over the enrolled labels gives per-label probabilities",
    )
    trained_on: list[str] = Field(default_factory=list, description="labels the embedding was trained on")


class FallRuleSpec(BaseModel):
    """Parameters of the confirmed-fall rule (``skeleton.falls``): the defaults were chosen by
    cross-validation on UP-Fall (docs/falls.md); a model, a request or a stream may override them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fall_group: str = Field(default="fall", description="label group whose windows show the fall pattern")
    fall_threshold: float = Field(
        default=0.5, gt=0, le=1, description="a window shows the fall pattern at this summed fall probability"
    )
    down_angle: float = Field(
        default=60.0, ge=0, le=180, description="down: torso this many degrees from upright"
    )
    down_drop: float = Field(
        default=1.2, gt=0, description="down: shoulders this many torso lengths below where they stood"
    )
    confirm_s: float = Field(
        default=2.0, ge=0, description="seen down this long after the fall pattern: a fall event"
    )
    recover_s: float = Field(default=2.0, gt=0, description="seen up this long: recovered (or no fall)")
    expire_s: float = Field(
        default=6.0, gt=0, description="a fall pattern not confirmed within this many seconds is dropped"
    )
    handover_s: float = Field(
        default=2.0, ge=0, description="a track first seen down this soon after a fall nearby takes it over"
    )
    handover_distance: float = Field(
        default=2.0, ge=0, description="'nearby' for a handover, in torso lengths of the fallen person"
    )
    posture_s: float = Field(default=0.5, gt=0, description="posture = medians over this many seconds")


class EnsembleMember(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run: str = Field(description="the member's training run (folder name)")
    seed: int
    sha256: str = Field(description="sha256 of the member run's checkpoint.pt when the ensemble was built")


class EnsembleSpec(BaseModel):
    """One graph that runs several trained members on each window and averages them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    combine: Literal["mean_probability", "mean_cosine"] = Field(
        default="mean_probability",
        description="mean_probability (classifiers): output logits = log of the members' mean softmax "
        "probability (softmax gives the mean); mean_cosine (embeddings): the members' unit vectors "
        "concatenated over sqrt(K), whose cosines are the mean of the members' cosines",
    )
    members: list[EnsembleMember] = Field(min_length=2)


class ModelManifest(BaseModel):
    name: str
    kind: Literal["classifier", "embedding"] = Field(
        default="classifier",
        description="classifier: output = logits over `labels`; embedding: output = unit vectors "
        "(`embedding`), labels come from enrolled examples",
    )
    version: str
    architecture: str
    description: str = ""
    labels: list[str]
    label_groups: dict[str, list[str]] = Field(
        default_factory=dict, description='named label sets, e.g. {"fall": [...]} for fall alerts'
    )
    input: InputSpec
    onnx: OnnxSpec
    clip_rule: ClipRuleSpec = Field(default_factory=ClipRuleSpec)
    embedding: EmbeddingSpec | None = None
    open_set: OpenSetSpec | None = None
    fall_rule: FallRuleSpec = Field(default_factory=FallRuleSpec)
    ensemble: EnsembleSpec | None = Field(
        default=None,
        description="set when the graph averages several trained members (its cost is theirs summed)",
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    created: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(model_dir: Path, verify_sha: bool = True) -> ModelManifest:
    """Read ``model_dir/manifest.json``; with ``verify_sha`` the ONNX file must match its hash."""
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST_FILE} in {model_dir}: export the model with `python -m export`"
        )
    manifest = ModelManifest.model_validate_json(path.read_text())
    onnx_path = model_dir / manifest.onnx.file
    if not onnx_path.is_file():
        raise FileNotFoundError(f"manifest {path} names {manifest.onnx.file}, which is missing")
    if verify_sha and sha256_file(onnx_path) != manifest.onnx.sha256:
        raise ValueError(f"{onnx_path} does not match the sha256 in {path}: re-export the model")
    return manifest
