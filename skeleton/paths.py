"""Where the repository and the real data are: one convention for every package and the tests."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_ENV = "SKELACT_DATA_DIR"


def data_root() -> Path:
    """The real recordings (read-only, never committed): ``$SKELACT_DATA_DIR``, by default
    ``<repo>/../shared/data``, the folder the team's checkouts sit beside."""
    return Path(os.environ.get(DATA_DIR_ENV) or REPO_ROOT.parent / "shared" / "data").resolve()
