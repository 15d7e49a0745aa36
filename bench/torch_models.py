"""Rebuild the PyTorch model behind a shipped ONNX model, for the ONNX Runtime vs PyTorch comparison.

Where the weights come from, in order:

1. ``--checkpoint NAME=PATH`` on the command line;
2. ``<model dir>/checkpoint.pt`` (if the model zoo ships one);
3. a training run ``runs/**/checkpoint.pt`` (``python -m training.train``) with the manifest's labels
   and input spec;

each accepted only when PyTorch reproduces ONNX Runtime's probabilities on real windows (the
same check ``python -m export`` makes), so the two columns time the same model. Failing that,
4. the training config ``configs/*.yaml`` whose ``name`` is the model's: the same architecture with
   random weights -- speed does not depend on the weight values, and the report says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skeleton.manifest import ModelManifest
from skeleton.paths import REPO_ROOT

log = logging.getLogger(__name__)

# ONNX Runtime and PyTorch agree to ~1e-6 on these models; anything above this is another model.
PARITY_MAX_ABS = 1e-3


@dataclass
class Rebuilt:
    module: Any | None  # torch.nn.Module in eval mode, or None when nothing could be rebuilt
    weights: str  # "checkpoint", "random" or "none"
    source: str  # where the architecture and weights came from (for the report)
    parity_max_abs: float | None = None  # max |p_torch - p_ort| on real windows
    params: int | None = None


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _candidates(model_dir: Path, explicit: Path | None) -> list[Path]:
    out: list[Path] = []
    if explicit is not None:
        out.append(explicit)
    out.append(model_dir / "checkpoint.pt")
    runs = REPO_ROOT / "runs"
    if runs.is_dir():
        out += sorted(runs.glob("*/checkpoint.pt")) + sorted(runs.glob("*/*/checkpoint.pt"))
    seen: set[Path] = set()
    unique = []
    for p in out:
        rp = p.resolve()
        if rp not in seen and p.is_file():
            seen.add(rp)
            unique.append(p)
    return unique


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def torch_probs(module: Any, windows: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return softmax(module(torch.from_numpy(np.ascontiguousarray(windows, np.float32))).numpy())


def rebuild_torch_model(
    model_dir: Path,
    manifest: ModelManifest,
    ort_predict: Callable[[np.ndarray], np.ndarray],
    probe: np.ndarray,
    explicit: Path | None = None,
) -> Rebuilt:
    """The eval-mode PyTorch model of ``manifest`` (see the module docstring for the search order)."""
    from training.checkpoint import load_checkpoint

    reference = ort_predict(probe)
    rejected: list[str] = []
    for path in _candidates(model_dir, explicit):
        try:
            ck = load_checkpoint(path)
        except Exception as exc:  # not a training checkpoint, or another torch version's pickle
            rejected.append(f"{_rel(path)} ({type(exc).__name__})")
            continue
        if ck.labels != manifest.labels or ck.config.input != manifest.input:
            continue
        diff = float(np.abs(torch_probs(ck.model, probe) - reference).max())
        if diff <= PARITY_MAX_ABS:
            return Rebuilt(ck.model, "checkpoint", _rel(path), diff, _count(ck.model))
        rejected.append(f"{_rel(path)} (same labels, other weights: max |dp| {diff:.2g})")
    model = _from_config(manifest, model_dir.name)
    if model is not None:
        module, cfg_path = model
        note = f"{_rel(cfg_path)}, random weights (no checkpoint reproduces model.onnx"
        note += f"; tried {', '.join(rejected)})" if rejected else ")"
        return Rebuilt(module, "random", note, None, _count(module))
    why = "no training checkpoint reproduces model.onnx and no configs/*.yaml names this model"
    if rejected:
        why += f" (tried {', '.join(rejected)})"
    return Rebuilt(None, "none", why)


def _from_config(manifest: ModelManifest, folder: str) -> tuple[Any, Path] | None:
    import yaml

    from models import build_model

    for path in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(data, dict) or data.get("name") not in (manifest.name, folder):
            continue
        model_cfg = data.get("model") or {}
        module = build_model(
            model_cfg.get("arch", manifest.architecture),
            manifest.num_classes,
            manifest.input.layout,
            **(model_cfg.get("kwargs") or {}),
        )
        module.eval()
        return module, path
    return None


def _count(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))
