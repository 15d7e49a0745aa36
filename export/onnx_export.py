"""Checkpoint -> ``model_zoo/<name>/``: model.onnx, manifest.json, metrics.json and the plots.

Every export is verified before it is written as final: ``onnx.checker`` plus ONNX Runtime
(CPUExecutionProvider) against PyTorch on real skeleton windows prepared by the shared
preprocessing; a relative error above ``MAX_REL_ERROR`` fails the export.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from export.fuse import fuse_for_inference
from skeleton.layouts import get_layout
from skeleton.manifest import (
    MANIFEST_FILE,
    ClipRuleSpec,
    EmbeddingSpec,
    FallRuleSpec,
    ModelManifest,
    OnnxSpec,
    OpenSetSpec,
    load_manifest,
    sha256_file,
)
from training.checkpoint import LoadedCheckpoint, load_checkpoint
from training.datasets import real_windows

log = logging.getLogger("export")

OPSET = 18
INPUT_NAME = "skeleton"
OUTPUT_NAME = "logits"
EMBEDDING_OUTPUT_NAME = "embedding"  # an embedding model (manifest kind "embedding") outputs unit vectors
BATCH_AXIS = "batch"
MAX_REL_ERROR = 1e-4
MAX_ONNX_BYTES = 10 * 1024 * 1024
# Metrics copied into the manifest (the full set, with confusion matrices, is in metrics.json).
MANIFEST_METRIC_KEYS = ("top1", "clip_top1", "window_top1", "fall", "window_fall", "num_samples",
                        "num_test", "num_clips", "num_windows", "params", "flops", "epochs",
                        "train_seconds", "protocol", "cross_validation", "prototype_top1", "loss", "few_shot",
                        "unknown", "member_metrics")


class ExportError(RuntimeError):
    """The exported graph is invalid or does not reproduce PyTorch."""


@dataclass(frozen=True)
class Parity:
    windows: int
    max_abs_error: float
    rel_error: float
    top1_agreement: float


CHECKPOINT_SHIP_BYTES = 10 << 20


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = OPSET,
                output_name: str = OUTPUT_NAME) -> None:
    """Export with a named dynamic batch axis; the graph is saved as one self-contained file.

    The TorchScript exporter is used first: on this 2-core machine it takes ~3 s where the dynamo
    exporter takes ~60 s, and both give the same plain Conv/MatMul graph. The dynamo
    exporter is the fallback for torch builds without the TorchScript one.
    """
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    names: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [output_name],
                             "opset_version": opset}
    axes = {INPUT_NAME: {0: BATCH_AXIS}, output_name: {0: BATCH_AXIS}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=False, dynamic_axes=axes, **names)
    except Exception as exc:  # any failure of the legacy path: use the dynamo exporter
        log.info("TorchScript ONNX exporter failed (%s); using the dynamo exporter", exc)
        torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim(BATCH_AXIS, min=1, max=4096)},), **names)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if proto.graph.input[0].name != INPUT_NAME or dims[0].dim_param != BATCH_AXIS:
        raise ExportError(f"{path}: expected input {INPUT_NAME!r} with dynamic axis {BATCH_AXIS!r}")


def ort_logits(path: Path, windows: np.ndarray, batch_size: int = 16,
               output_name: str = OUTPUT_NAME) -> np.ndarray:
    """Logits (or an embedding's vectors) from ONNX Runtime on CPU, in chunks (several batch sizes)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    out = [sess.run([output_name], {INPUT_NAME: windows[i : i + batch_size]})[0]
           for i in range(0, len(windows), batch_size)]
    return np.concatenate(out).astype(np.float32)


def compare(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    """Relative error = max |difference| / max |reference logit|."""
    diff = float(np.abs(reference.astype(np.float64) - candidate).max())
    scale = float(np.abs(reference).max()) or 1.0
    agree = float((reference.argmax(1) == candidate.argmax(1)).mean())
    return Parity(len(reference), diff, diff / scale, agree)


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights/activations with fp32 inputs and outputs (same interface as the fp32 model)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _toposort(proto.graph)  # the converter appends its input casts after their consumers
    onnx.save(proto, str(dst))
    onnx.checker.check_model(onnx.load(str(dst)), full_check=True)


def _toposort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs."""
    produced = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(not name or name in produced for name in node.input):
                ordered.append(node)
                produced.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ExportError("fp16 graph has a cycle or a dangling input")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def embedding_logit_scale(cfg: Any) -> float:
    """The served softmax(scale * cosine): the calibrated scale when the config has one, else the
    loss's own (the margin losses' scale, SupCon's 1 / temperature)."""
    e = cfg.embedding
    if e.logit_scale is not None:
        return float(e.logit_scale)
    return float(1.0 / e.temperature if e.loss == "supcon" else e.scale)


def _manifest_metrics(metrics: dict[str, Any], parity: Parity) -> dict[str, Any]:
    out = {k: metrics[k] for k in MANIFEST_METRIC_KEYS if k in metrics}
    out["onnx_parity"] = {"windows": parity.windows, "max_abs_error": parity.max_abs_error,
                          "rel_error": parity.rel_error, "top1_agreement": parity.top1_agreement}
    return out


def export_checkpoint(checkpoint: Path, out_dir: Path, data_root: Path, repo_root: Path, fp16: bool = False,
                      name: str | None = None, extra_metrics: dict[str, Any] | None = None,
                      parity_windows: int = 32, extra_plots: dict[str, Path] | None = None,
                      description: str | None = None) -> ModelManifest:
    """Export, verify and write one model directory; returns its manifest. ``extra_plots`` maps a
    prefix to a run directory whose PNGs are copied too (cross-validation folds)."""
    ck: LoadedCheckpoint = load_checkpoint(checkpoint)
    cfg = ck.config
    if (ck.ensemble is not None and cfg.embedding is None and cfg.open_set is not None
            and cfg.open_set.score != "max_softmax"):
        raise ExportError(f"an ensemble outputs log mean probabilities: open-set score "
                          f"{cfg.open_set.score!r} of raw logits has no meaning there (use max_softmax)")
    windows = real_windows(cfg, data_root, repo_root, parity_windows)
    v = get_layout(cfg.input.layout).num_joints
    expected = (cfg.input.channels, cfg.input.window.length, v)
    if windows.shape[1:] != expected:
        raise ExportError(f"real windows have shape {windows.shape[1:]}, model expects {expected}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "model.onnx.tmp"
    emb = cfg.embedding
    output_name = OUTPUT_NAME if emb is None else EMBEDDING_OUTPUT_NAME
    # the graph convolutions are rewritten for inference; parity is checked against the trained model
    export_onnx(fuse_for_inference(ck.model), torch.from_numpy(windows[:2]), tmp, output_name=output_name)
    with torch.no_grad():
        reference = ck.model(torch.from_numpy(windows)).numpy()
    parity = compare(reference, ort_logits(tmp, windows, output_name=output_name))
    log.info("ONNX vs PyTorch on %d real windows: max abs %.3g, rel %.3g", parity.windows,
             parity.max_abs_error, parity.rel_error)
    if not parity.rel_error <= MAX_REL_ERROR:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX Runtime differs from PyTorch: relative error {parity.rel_error:.3g} "
                          f"> {MAX_REL_ERROR} on {parity.windows} real windows")
    if tmp.stat().st_size > MAX_ONNX_BYTES:
        log.warning("%s is %.1f MB (> 10 MB budget for shipped models)", tmp, tmp.stat().st_size / 2**20)
    onnx_path = out_dir / "model.onnx"
    tmp.replace(onnx_path)
    fp16_file, fp16_err = None, None
    if fp16:
        fp16_path = out_dir / "model_fp16.onnx"
        convert_fp16(onnx_path, fp16_path)
        fp16_parity = compare(reference, ort_logits(fp16_path, windows, output_name=output_name))
        fp16_file, fp16_err = fp16_path.name, fp16_parity.max_abs_error
        log.info("fp16: max abs error %.3g (rel %.3g), top-1 agreement %.3f", fp16_parity.max_abs_error,
                 fp16_parity.rel_error, fp16_parity.top1_agreement)
    else:
        (out_dir / "model_fp16.onnx").unlink(missing_ok=True)
    metrics = dict(ck.metrics)
    if extra_metrics:
        metrics.update(extra_metrics)
    fall_group = ClipRuleSpec().fall_group
    rule = cfg.clip_rule
    outputs = int(reference.shape[1])  # labels, or the embedding's width (its head's or its backbone's)
    manifest = ModelManifest(
        name=name or cfg.name,
        kind="classifier" if emb is None else "embedding",
        version=cfg.version,
        architecture=cfg.model.arch,
        description=cfg.description if description is None else description,
        labels=ck.labels if emb is None else [],
        label_groups=ck.label_groups,
        input=cfg.input,
        onnx=OnnxSpec(
            file=onnx_path.name, sha256=sha256_file(onnx_path), opset=OPSET, input_name=INPUT_NAME,
            input_shape=[BATCH_AXIS, *expected], output_name=output_name,
            output_shape=[BATCH_AXIS, outputs], fp16_file=fp16_file, fp16_max_abs_error=fp16_err,
        ),
        embedding=None if emb is None else EmbeddingSpec(dim=outputs, logit_scale=embedding_logit_scale(cfg),
                                                         trained_on=ck.labels),
        open_set=cfg.open_set,
        clip_rule=ClipRuleSpec(fall_group=fall_group, fall_threshold=rule.fall_threshold,
                               min_fall_windows=rule.min_fall_windows),
        fall_rule=cfg.fall_rule,
        ensemble=ck.ensemble,
        metrics=_manifest_metrics(metrics, parity),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    (out_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=1))
    full = {**metrics, "onnx_parity": manifest.metrics["onnx_parity"]}
    if fp16_err is not None:
        full["onnx_fp16_max_abs_error"] = fp16_err
    (out_dir / "metrics.json").write_text(json.dumps(full, indent=1))
    for png in sorted(checkpoint.parent.glob("*.png")):
        shutil.copy2(png, out_dir / png.name)
    # The PyTorch weights travel with the model (the benchmark's eager baseline in a fresh clone),
    # unless they are too big for the repository; the service never loads them.
    if checkpoint.stat().st_size <= CHECKPOINT_SHIP_BYTES:
        shutil.copy2(checkpoint, out_dir / "checkpoint.pt")
    for prefix, run_dir in (extra_plots or {}).items():
        for png in sorted(run_dir.glob("*.png")):
            shutil.copy2(png, out_dir / f"{prefix}-{png.name}")
    return manifest


def apply_open_set(model_dir: Path, spec: OpenSetSpec) -> ModelManifest:
    """Write an "unknown" rule into an exported model's manifest (the additive ``open_set`` field);
    nothing else changes (ONNX graph, sha256, checkpoint), so after a re-export the same command
    writes it again."""
    return _update_manifest(model_dir, open_set=spec)


def apply_fall_rule(model_dir: Path, spec: FallRuleSpec) -> ModelManifest:
    """Write a fall rule (``training.falls cv``'s choice) into an exported model's manifest; like
    `apply_open_set`, nothing else changes, and after a re-export the same command writes it again."""
    if not load_manifest(model_dir).label_groups.get(spec.fall_group):
        raise ExportError(f"{model_dir.name} has no '{spec.fall_group}' label group: no fall classes")
    return _update_manifest(model_dir, fall_rule=spec)


def _update_manifest(model_dir: Path, **fields: object) -> ModelManifest:
    """The manifest with ``fields`` replaced, checked against the ONNX file's sha256 first."""
    manifest = load_manifest(model_dir).model_copy(update=fields)
    (model_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=1))
    return manifest
