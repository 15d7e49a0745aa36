"""The embedding's centred readout (models.embedding, training.metric_learning.fit_centre): the
centre is the mean output over the training windows, a model buffer (so ONNX, the few-shot protocol
and the service's sets apply it alike), and an embedding saved before it loads as uncentred."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.conftest import require_data

SMALL = {"model.kwargs": {"features": ["joint", "bone", "motion"], "base_channels": 16, "num_stages": 3,
                          "inflate_stages": [2], "down_stages": [2]}}


def test_fit_centre_removes_the_common_direction_and_old_checkpoints_load_uncentred(tmp_path: Path) -> None:
    from training import fewshot
    from training.checkpoint import load_checkpoint
    from training.metric_learning import build_embedding_model, embedder_encoder, fit_centre, training_windows

    cfg = fewshot.split_config("r0", "embedding", overrides=SMALL)
    torch.manual_seed(0)
    model = build_embedding_model(cfg)
    windows = training_windows(cfg, require_data())[::8]
    encode = embedder_encoder(model)
    raw = encode(windows)
    assert not model.centre.any()  # zeros until fitted: the plain normalised readout
    fit_centre(model, windows)
    assert np.allclose(model.centre.numpy(), raw.mean(axis=0), atol=1e-5)
    centred = encode(windows)
    assert np.allclose(np.linalg.norm(centred, axis=1), 1.0, atol=1e-4)
    # the shared component is gone: the mean output shrinks, cosines between windows spread out
    assert np.linalg.norm(centred.mean(axis=0)) < 0.5 * np.linalg.norm(raw.mean(axis=0))
    assert (centred @ centred.T).mean() < (raw @ raw.T).mean() - 0.2

    state = {k: v for k, v in model.state_dict().items() if k != "centre"}  # saved before the centre
    torch.save({"kind": "embedding", "state_dict": state, "config": cfg.model_dump(mode="json"),
                "labels": [], "label_groups": {}, "metrics": {}}, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt").model
    assert not old.centre.any()
    assert np.allclose(embedder_encoder(old)(windows[:4]), raw[:4], atol=1e-5)
