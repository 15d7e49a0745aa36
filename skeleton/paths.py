"""Where the repository, the shipped models and the real data are: one convention for every
package and the tests."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR_ENV = "SKELACT_DATA_DIR"
SHIPPED_ZOO = REPO_ROOT / "model_zoo"  # the shipped models: reproductions go to runs/ instead
RUNS_DIR = REPO_ROOT / "runs"


class MissingDataError(FileNotFoundError):
    """The real recordings (or what is extracted from them) are not where they are looked for; the
    message is one line that says where, and how to point there (``SKELACT_DATA_DIR``)."""


def missing_data(what: str, where: Path, fix: str = "") -> MissingDataError:
    return MissingDataError(
        f"{what} not found under {where}: the real data is read from ${DATA_DIR_ENV} (now {data_root()}, "
        f"default ../shared/data beside the repository); set {DATA_DIR_ENV} to the folder with upfall/, "
        f"utd_mhad/ and clips/" + (f", {fix}" if fix else "")
    )


def in_shipped_zoo(path: Path) -> bool:
    """``path`` is (inside) the shipped model zoo, which only ``--force`` may overwrite."""
    return path.resolve().is_relative_to(SHIPPED_ZOO.resolve())


def data_root() -> Path:
    """The real recordings (read-only, never committed): ``$SKELACT_DATA_DIR``, by default
    ``<repo>/../shared/data``, the folder the team's checkouts sit beside."""
    return Path(os.environ.get(DATA_DIR_ENV) or REPO_ROOT.parent / "shared" / "data").resolve()
