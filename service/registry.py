"""Models found under ``models_dir``: manifest + ONNX session + micro-batcher, warmed up at start.

Each sub-folder with a ``manifest.json`` (written by ``python -m export``) is one model. A model
that fails to load is reported in /health/ready and GET /models instead of stopping the service.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.batching import MicroBatcher, WindowBatcher
from service.classifier import OnnxClassifier
from service.core.config import Settings
from service.core.errors import ServiceError, not_ready, unknown_model
from service.metrics import Metrics
from service.model_checks import check_graph, describe_load_error
from service.schemas import ModelInfo, WindowInfo
from skeleton.layouts import get_layout
from skeleton.manifest import MANIFEST_FILE, InputSpec, ModelManifest, WindowSpec, load_manifest

log = logging.getLogger(__name__)
EMBEDDINGS_DIR = "embeddings"


def output_width(manifest: ModelManifest) -> int:
    """Outputs per window: one per label, or an embedding's length."""
    return manifest.embedding.dim if manifest.embedding is not None else manifest.num_classes


@dataclass
class LoadedModel:
    name: str
    path: Path
    manifest: ModelManifest
    runtime: OnnxClassifier
    batcher: WindowBatcher
    window: WindowSpec  # the manifest's, with SKELACT_STRIDE
    warmup_ms: float = 0.0
    # a window cut for each of these and stacked on the channel axis (a set next to a base model,
    # `service.combined`); empty: the manifest's input alone
    inputs: tuple[InputSpec, ...] = ()

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def specs(self) -> tuple[InputSpec, ...]:
        """The inputs one window holds, in channel order; the first sets the window clock."""
        return self.inputs or (self.manifest.input,)

    @property
    def coordinates(self) -> tuple[str, ...]:
        """The landmarks (``image`` / ``world``) this model's windows are made of."""
        return tuple(dict.fromkeys(s.coordinates for s in self.specs))

    def window_info(self, stride: int | None = None) -> WindowInfo:
        w = self.window.with_stride(stride)
        return WindowInfo(length=w.length, fps=w.fps, stride=w.stride, seconds=round(w.seconds, 4))

    def input_shape(self, n: int) -> tuple[int, int, int, int]:
        spec = self.manifest.input
        return (n, spec.channels, spec.window.length, get_layout(spec.layout).num_joints)

    def info(self, default: bool) -> ModelInfo:
        m = self.manifest
        return ModelInfo(
            name=self.name,
            version=m.version,
            architecture=m.architecture,
            description=m.description,
            labels=m.labels,
            label_groups=m.label_groups,
            layout=m.input.layout,
            coordinates=m.input.coordinates,
            window=self.window_info(),
            provider=self.runtime.provider,
            providers=self.runtime.providers,
            default=default,
            metrics=m.metrics,
            kind=m.kind,
        )


@dataclass
class ModelRegistry:
    settings: Settings
    metrics: Metrics
    models: dict[str, LoadedModel] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def discover(self) -> list[Path]:
        root = self.settings.models_dir
        if not root.is_dir():
            return []
        dirs = sorted(p for p in root.iterdir() if (p / MANIFEST_FILE).is_file())
        nested = root / EMBEDDINGS_DIR  # embedding models may sit one level down (model_zoo/embeddings/)
        if nested.is_dir():
            dirs += sorted(p for p in nested.iterdir() if (p / MANIFEST_FILE).is_file())
        wanted = self.settings.models
        if wanted is not None:
            missing = set(wanted) - {p.name for p in dirs}
            for name in missing:
                self.failed[name] = f"no {root / name / MANIFEST_FILE}"
            dirs = [p for p in dirs if p.name in wanted]
        return dirs

    def load_all(self) -> None:
        """Load and warm up every model (blocking: run it off the event loop)."""
        for path in self.discover():
            try:
                self.models[path.name] = self._load(path)
            except Exception as exc:
                log.exception("model %s failed to load", path.name)
                self.failed[path.name] = describe_load_error(path, exc)

    def _load(self, path: Path) -> LoadedModel:
        s = self.settings
        manifest = load_manifest(path, verify_sha=s.verify_sha)
        runtime = OnnxClassifier(
            path,
            manifest,
            list(s.providers),
            threads=s.ort_threads,
            trt_cache_dir=s.trt_cache_dir,
            trt_fp16=s.trt_fp16,
            max_batch_hint=s.batch_max_size,
        )
        check_graph(path.name, manifest, runtime)  # the manifest must describe this graph
        batcher = MicroBatcher(
            runtime,
            s.batch_max_size,
            s.batch_deadline_ms / 1e3,
            observer=self.metrics.batch_observer(path.name),
            name=path.name,
            max_queue=s.batch_queue_size,
        )
        model = LoadedModel(
            path.name, path, manifest, runtime, batcher, manifest.input.window.with_stride(s.stride)
        )
        if s.warmup:
            t0 = time.perf_counter()
            for n in sorted({1, min(8, s.batch_max_size), s.batch_max_size}):
                probs = runtime.predict(np.zeros(model.input_shape(n), np.float32))
                if probs.shape != (n, output_width(manifest)):
                    raise ValueError(
                        f"model output {probs.shape} does not match the manifest's "
                        f"{output_width(manifest)} outputs: re-export the model"
                    )
            model.warmup_ms = (time.perf_counter() - t0) * 1e3
        log.info("model %s ready on %s (warm-up %.0f ms)", path.name, runtime.provider, model.warmup_ms)
        return model

    @property
    def default_name(self) -> str | None:
        wanted = self.settings.default_model
        if wanted is not None:
            return wanted if wanted in self.models else None
        labelled = (n for n, m in sorted(self.models.items()) if m.manifest.kind != "embedding")
        return next(labelled, None)  # an embedding has no labels of its own: never the default

    def get(self, name: str | None) -> LoadedModel:
        key = name or self.default_name
        if key is None:
            if self.settings.default_model:
                raise not_ready(
                    f"default model {self.settings.default_model!r} is not loaded "
                    f"({self.failed.get(self.settings.default_model, 'not found')})"
                )
            raise ServiceError(
                503,
                "no_models",
                f"no models loaded from {self.settings.models_dir}",
                "export one with `python -m export` or set SKELACT_MODELS_DIR",
            )
        if key not in self.models:
            if key in self.failed:
                raise ServiceError(
                    503,
                    "model_failed",
                    f"model {key!r} failed to load: {self.failed[key]}",
                    "fix the model folder and restart the service",
                )
            raise unknown_model(key, sorted(self.models))
        return self.models[key]

    async def close(self) -> None:
        for m in self.models.values():
            await m.batcher.close()
