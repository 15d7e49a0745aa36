"""skeleton.paths: where the repository and the real data are."""

from __future__ import annotations

from pathlib import Path

import pytest

from skeleton.paths import REPO_ROOT, data_root


def test_data_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """$SKELACT_DATA_DIR, else shared/data beside the checkout; an empty variable counts as unset
    (not as the working directory)."""
    monkeypatch.setenv("SKELACT_DATA_DIR", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    default = (REPO_ROOT.parent / "shared" / "data").resolve()
    monkeypatch.setenv("SKELACT_DATA_DIR", "")
    assert data_root() == default
    monkeypatch.delenv("SKELACT_DATA_DIR")
    assert data_root() == default


def test_repo_root_is_the_checkout() -> None:
    assert (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "skeleton" / "paths.py").is_file()
