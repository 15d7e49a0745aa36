"""Start-up checks that a model folder is what its manifest says (docs/security.md, "Faults").

``load_manifest`` already refuses a missing ``model.onnx`` and a sha256 mismatch. Here:
``check_graph`` compares the ONNX graph's declared input and output with the manifest (channels,
window length, joints of the layout, number of labels), and ``describe_load_error`` turns ONNX
Runtime's errors about unreadable files into a sentence that says what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from skeleton.layouts import get_layout
from skeleton.manifest import ModelManifest


class ModelMismatch(ValueError):
    """The manifest does not describe the ONNX graph next to it."""


class HasGraphIO(Protocol):
    def graph_io(self) -> tuple[tuple[str, list[Any]], tuple[str, list[Any]]]: ...


def _fmt(shape: list[Any] | tuple[Any, ...]) -> str:
    return "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")"


def expected_shapes(manifest: ModelManifest) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    spec = manifest.input
    joints = get_layout(spec.layout).num_joints
    return ("N", spec.channels, spec.window.length, joints), ("N", manifest.num_classes)


def check_graph(name: str, manifest: ModelManifest, runtime: HasGraphIO) -> None:
    """Raise ``ModelMismatch`` when the graph's fixed dimensions contradict the manifest."""
    (in_name, in_shape), (_, out_shape) = runtime.graph_io()
    want_in, _ = expected_shapes(manifest)
    spec = manifest.input
    fix = "the manifest does not belong to this model.onnx: re-export the model (python -m export)"
    if len(in_shape) != 4 or any(
        isinstance(got, int) and got != want for got, want in zip(in_shape[1:], want_in[1:], strict=True)
    ):
        raise ModelMismatch(
            f"model {name}: model.onnx takes input {_fmt(in_shape)} but manifest.json describes "
            f"{_fmt(want_in)} (channels {spec.channels}, window length {spec.window.length}, layout "
            f"{spec.layout} with {want_in[3]} joints); {fix}"
        )
    width = manifest.embedding.dim if manifest.embedding is not None else manifest.num_classes
    if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != width):
        what = f"an embedding of {width}" if manifest.embedding is not None else f"{width} labels"
        raise ModelMismatch(
            f"model {name}: model.onnx outputs {_fmt(out_shape)} but manifest.json lists {what}; {fix}"
        )
    if in_name != manifest.onnx.input_name:
        raise ModelMismatch(
            f"model {name}: model.onnx's input is named {in_name!r}, manifest.json says "
            f"{manifest.onnx.input_name!r}; {fix}"
        )


def describe_load_error(path: Path, exc: BaseException) -> str:
    """One clear sentence for the readiness report and the log."""
    text = f"{type(exc).__name__}: {exc}"
    if "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text or "INVALID_GRAPH" in text:
        return (
            f"the ONNX file in {path} is not a readable ONNX model (corrupt or truncated?): "
            f"re-export or re-copy it ({text[:300]})"
        )
    return text
