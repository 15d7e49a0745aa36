"""Helpers for the service tests: real apps on real data, tiny real ONNX models, short real clips
(also the video tests' whole-clip decode)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.clips import jpeg_frames as bench_jpeg_frames
from perception.video import ContainerInfo, Frame, VideoReader
from skeleton.manifest import load_manifest, sha256_file
from skeleton.paths import REPO_ROOT

# The shipped models; SKELACT_MODELS_DIR points the tests at another zoo, as it does the service.
MODEL_ZOO = Path(os.environ.get("SKELACT_MODELS_DIR") or REPO_ROOT / "model_zoo")


def write_linear_model(
    folder: Path,
    labels: list[str],
    length: int = 32,
    fps: float = 15.0,
    stride: int = 8,
    layout: str = "mediapipe33",
    joints: int = 33,
    seed: int = 0,
    coordinates: str = "world",
) -> Path:
    """A real (tiny) ONNX model + manifest: flatten -> matmul, dynamic batch. For plumbing tests."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    k = len(labels)
    w = np.random.default_rng(seed).normal(size=(3 * length * joints, k)).astype(np.float32) * 0.05
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["skeleton"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info("skeleton", TensorProto.FLOAT, ["batch", 3, length, joints])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    manifest = {
        "name": folder.name,
        "version": "test",
        "architecture": "linear",
        "labels": labels,
        "input": {
            "layout": layout,
            "coordinates": coordinates,
            "window": {"length": length, "fps": fps, "stride": stride},
            "normalization": {"centre_joint": "left_hip" if layout == "mediapipe33" else "spine"},
        },
        "onnx": {
            "sha256": sha256_file(folder / "model.onnx"),
            "opset": 17,
            "input_shape": ["batch", 3, length, joints],
            "output_shape": ["batch", k],
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


def trim_video(src: Path, dst: Path, start: int = 0, frames: int = 30, every: int = 1) -> Path:
    """Copy ``frames`` frames (from ``start``, every ``every``-th) of a real clip into a short mp4."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    i = written = 0
    while written < frames:
        ok, bgr = cap.read()
        if not ok:
            break
        if i >= start and (i - start) % every == 0:
            if writer is None:
                writer = cv2.VideoWriter(
                    str(dst), cv2.VideoWriter.fourcc(*"mp4v"), fps / every, (bgr.shape[1], bgr.shape[0])
                )
            writer.write(bgr)
            written += 1
        i += 1
    cap.release()
    assert writer is not None, f"no frames in {src}"
    writer.release()
    return dst


def read_video(
    path: Path, max_side: int | None = None, allow_truncated: bool = False
) -> tuple[ContainerInfo, list[Frame]]:
    """Decode a whole (short) real clip into memory."""
    reader = VideoReader(path, max_side, allow_truncated)
    return reader.info, list(reader)


def jpeg_frames(src: Path, frames: int, start: int = 0, max_side: int = 640) -> tuple[list[bytes], float]:
    """JPEG-encoded frames of a real clip (as a webcam client would send them) and the clip's fps."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.release()
    return bench_jpeg_frames(src, frames, quality=85, start=start, max_side=max_side), fps


def wait_ready(client: Any, timeout: float = 120.0) -> dict[str, Any]:
    """Poll /health/ready until 200 (the app warms up in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get("/health/ready")
        if r.status_code == 200:
            return dict(r.json())
        assert time.monotonic() < deadline, f"not ready after {timeout} s: {r.json()}"
        time.sleep(0.1)


def upfall_model_name() -> str | None:
    """The shipped UP-Fall model's folder name in model_zoo/, if there is one."""
    names = sorted(
        p.parent.name for p in MODEL_ZOO.glob("*/manifest.json") if "upfall" in p.parent.name.lower()
    )
    return names[0] if names else None


def require_upfall_model() -> str:
    """Skip locally, fail in CI (CI=true), when model_zoo/ has no UP-Fall model."""
    import pytest

    name = upfall_model_name()
    if name is None:
        message = f"no UP-Fall model in {MODEL_ZOO} (train and export one: configs/upfall-*.yaml)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return name


def embedding_dir() -> Path:
    """The shipped embedding model (a development export under runs/ until one is shipped)."""
    for root in (
        REPO_ROOT / "model_zoo" / "embeddings",
        REPO_ROOT / "model_zoo",
        REPO_ROOT / "runs" / "dev-zoo",
    ):
        for manifest in sorted(root.glob("*/manifest.json")):
            if load_manifest(manifest.parent, verify_sha=False).kind == "embedding":
                return manifest.parent
    raise AssertionError("no embedding model (manifest kind 'embedding') under model_zoo/")
