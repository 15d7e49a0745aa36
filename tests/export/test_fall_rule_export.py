"""``python -m export fall-rule``: the rule ``python -m training.falls cv`` chose goes into an exported
model's manifest and nothing else changes (docs/falls.md)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from skeleton.manifest import FallRuleSpec, load_manifest
from tests.conftest import REPO_ROOT

ZOO = REPO_ROOT / "model_zoo"


def _copy(name: str, tmp_path: Path) -> Path:
    model = tmp_path / name
    shutil.copytree(ZOO / name, model, ignore=shutil.ignore_patterns("*.png", "checkpoint.pt", "trt_cache"))
    return model


def test_fall_rule_command_writes_only_the_manifest_field(tmp_path: Path) -> None:
    from export.__main__ import main

    model = _copy("upfall-stgcnpp-lite", tmp_path)
    before = load_manifest(model)
    onnx_sha = hashlib.sha256((model / "model.onnx").read_bytes()).hexdigest()
    chosen = FallRuleSpec(down_angle=66.6, confirm_s=2.75, recover_s=2.75, expire_s=6.75)
    fold = FallRuleSpec(down_angle=55.5)
    cv = tmp_path / "cv.json"  # the shape `python -m training.falls cv --json` writes
    folds = {"shipped": chosen, "t1->t2": fold}
    cv.write_text(json.dumps({name: {"spec": spec.model_dump()} for name, spec in folds.items()}))
    assert main(["fall-rule", "--model-dir", str(model), "--cv-json", str(cv)]) == 0
    after = load_manifest(model)
    assert after.fall_rule == chosen != before.fall_rule
    assert after.model_dump(exclude={"fall_rule"}) == before.model_dump(exclude={"fall_rule"})
    assert hashlib.sha256((model / "model.onnx").read_bytes()).hexdigest() == onnx_sha
    assert main(["fall-rule", "--model-dir", str(model), "--cv-json", str(cv), "--fold", "t1->t2"]) == 0
    assert load_manifest(model).fall_rule == fold
    # a model without fall classes takes no fall rule
    utd = _copy("utd-mhad-stgcnpp-lite", tmp_path)
    assert main(["fall-rule", "--model-dir", str(utd), "--cv-json", str(cv)]) == 1
    assert load_manifest(utd) == load_manifest(ZOO / "utd-mhad-stgcnpp-lite")


def test_shipped_model_carries_the_cross_validated_ensemble_rule() -> None:
    """The shipped ensemble's rule is what `python -m training.falls cv` chose on both trials with the
    ensembles (docs/falls.md): 64.3 deg, 2.25 s."""
    rule = load_manifest(ZOO / "upfall-stgcnpp-lite").fall_rule
    assert (rule.down_angle, rule.down_drop, rule.confirm_s, rule.fall_threshold) == (64.3, 1.2, 2.25, 0.5)
