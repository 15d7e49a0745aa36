"""``python -m bench.fewshot`` runs small on the shipped embedding and reports every cost it names
(the figures themselves come from the lead's quiet run, not from a test)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import require_data


def test_fewshot_bench_small(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from bench.fewshot import DEFAULT_MODEL, main

    require_data()
    out = tmp_path / "fewshot.json"
    assert main([str(DEFAULT_MODEL), "--labels", "3", "--examples", "1", "2", "--calls", "3",
                 "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["model"] == "utd-mhad-stgcnpp-lite-embedding" and r["embed_window_ms"] > 0
    assert r["embed_example_ms"] > 0 and r["example_windows"] == 5
    assert [(c["labels"], c["examples_per_label"]) for c in r["classify"]] == [(3, 1), (3, 2)]
    assert all(c["classify_ms"] > 0 and c["rebuild_prototypes_ms"] > 0 for c in r["classify"])
    assert "embed one window" in capsys.readouterr().out
