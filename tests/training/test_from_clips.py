"""``python -m training`` on real clips: CSV spans, the split, the content cache, the --force guard,
and the exported folder served by the real app with the new labels."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, require_data
from training.samples import Sample, SamplesError, read_csv, read_folder, split_samples

# Three labels, trial 1 trains and trial 2 is held out; short spans keep the pose pass ~400 frames.
CSV_ROWS = [
    ("Activity6/Trial1Cam1.mp4", "0", "4", "walking", "trial1"),
    ("Activity6/Trial2Cam1.mp4", "0", "4", "walking", "trial2"),
    ("Activity10/Trial1Cam1.mp4", "0", "4", "jumping", "trial1"),
    ("Activity10/Trial2Cam1.mp4", "0", "4", "jumping", "trial2"),
    ("Activity11/Trial1Cam1.mp4", "10", "14", "laying", "trial1"),
    ("Activity11/Trial2Cam1.mp4", "10", "14", "laying", "trial2"),
]
LABELS = ["jumping", "laying", "walking"]
TINY = (
    "model.kwargs={base_channels: 16, num_stages: 3, inflate_stages: [], down_stages: [2], "
    "features: [joint, bone, motion]}"
)


def write_csv(path: Path, rows: Sequence[tuple[str, ...]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clip", "start", "end", "label", "group"])
        w.writerows(rows)
    return path


def cli_args(csv_path: Path, root: Path, name: str = "own-test") -> list[str]:
    return [
        str(csv_path),
        "--videos",
        str(require_data("upfall")),
        "--name",
        name,
        "--out",
        str(root / "run"),
        "--models-dir",
        str(root / "zoo"),
        "--cache",
        str(root / "cache"),
        "--test-group",
        "trial2",
        "--epochs",
        "2",
        "--set",
        "optim.samples_per_epoch=96",
        "--set",
        "optim.warmup_epochs=0",
        "--set",
        TINY,
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One real run of the CLI (pose on 6 real clips, 2 epochs of a small model, ONNX export)."""
    from training.__main__ import main

    root = tmp_path_factory.mktemp("own")
    csv_path = write_csv(root / "clips.csv", CSV_ROWS)
    assert main(cli_args(csv_path, root)) == 0
    yield root, "own-test"


def test_run_writes_metrics_plots_and_a_model_folder(trained: tuple[Path, str]) -> None:
    from skeleton.manifest import load_manifest

    root, name = trained
    run = root / "run"
    for f in (
        "samples.csv",
        "checkpoint.pt",
        "metrics.json",
        "summary.json",
        "train.log",
        "curves.png",
        "confusion.png",
        "confusion_clip.png",
    ):
        assert (run / f).is_file(), f
    m = json.loads((run / "metrics.json").read_text())
    assert m["num_clips"] == 3 and m["clip_top1"] is not None and m["num_windows"] >= 3 * 6
    assert set(m["clip_report"]) == set(LABELS) == set(m["window_report"])
    assert all(r["support"] == 1 for r in m["clip_report"].values())
    assert {c["clip"] for c in m["clips"]} == {
        f"Activity{a}/Trial2Cam1.mp4@{span}" for a, span in ((6, "0-4"), (10, "0-4"), (11, "10-14"))
    }
    split = {(r["clip"].split("/")[-2], r["split"]) for r in csv.DictReader((run / "samples.csv").open())}
    assert split == {(f"Activity{a}", s) for a in (6, 10, 11) for s in ("train", "test")}
    manifest = load_manifest(root / "zoo" / name)  # verifies the ONNX file's sha256
    assert manifest.name == name and manifest.labels == LABELS and manifest.label_groups == {}
    assert manifest.metrics["onnx_parity"]["rel_error"] <= 1e-4
    assert manifest.metrics["clip_top1"] == m["clip_top1"]


def test_csv_start_and_end_are_honoured(trained: tuple[Path, str]) -> None:
    """Only each row's span is posed, and only it feeds the model."""
    from training.config import load_config
    from training.folder import load_segments
    from training.samples import read_csv as read_run
    from training.skeleton_cache import load_clip

    root, _ = trained
    samples = read_run(root / "run" / "samples.csv")
    for s in samples:
        assert s.skeletons is not None and s.end is not None
        sidecar = json.loads(s.skeletons.with_suffix(".json").read_text())
        assert (sidecar["since_s"], sidecar["until_s"]) == (s.start, s.end)
        t = load_clip(s.skeletons).timestamps
        assert s.start <= t[0] < s.start + 0.1 and s.end - 0.1 < t[-1] <= s.end, (s.name, t[0], t[-1])
    cfg = load_config(root / "run" / "config.yaml")
    for seg, s in zip(load_segments(samples, cfg, LABELS), samples, strict=True):
        assert s.end is not None and s.start <= seg.timestamps[0] and seg.timestamps[-1] <= s.end
        assert seg.seen.mean() > 0.5, seg.name  # the actor is found in the span (walks in: 67 %)


def test_second_run_extracts_nothing(trained: tuple[Path, str], tmp_path: Path) -> None:
    """The cache is keyed by content: a re-run, and a renamed copy of a video, pose nothing; a longer
    span poses that video again (the union of both spans)."""
    from training.clip_cache import extract_samples

    root, _ = trained
    samples = read_csv(root / "run" / "samples.csv")
    options = {"max_people": 4}
    again, report = extract_samples(samples, root / "cache", options, progress=False)
    assert report.extracted == [] and len(report.reused) == 6 and not report.failed
    assert [s.skeletons for s in again] == [s.skeletons for s in samples]
    copy = tmp_path / "renamed.mp4"
    shutil.copy(samples[0].video, copy)
    _, report = extract_samples([Sample(copy, "walking", 0, 4)], root / "cache", options, progress=False)
    assert report.extracted == [] and report.reused == [copy]
    cache = shutil.copytree(root / "cache", tmp_path / "cache")  # the module's cache stays as the run left it
    longer = Sample(samples[0].video, "walking", 0, 4.5)
    (widened,), report = extract_samples([longer], cache, options, progress=False)
    assert report.extracted == [longer.video] and widened.skeletons is not None
    sidecar = json.loads(widened.skeletons.with_suffix(".json").read_text())
    assert (sidecar["since_s"], sidecar["until_s"]) == (0.0, 4.5)


def test_service_loads_the_model_and_answers_with_its_labels(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.core.config import Settings
    from tests.service_helpers import trim_video, wait_ready

    root, name = trained
    clip = trim_video(
        require_data("upfall", "Activity10", "Trial2Cam1.mp4"), tmp_path / "jump.mp4", frames=72
    )
    with TestClient(create_app(Settings(models_dir=root / "zoo", providers=["cpu"]))) as c:
        wait_ready(c)
        models = {m["name"]: m for m in c.get("/models").json()["models"]}
        assert models[name]["labels"] == LABELS
        with clip.open("rb") as f:
            r = c.post(f"/recognize?model={name}", files={"file": (clip.name, f, "video/mp4")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == name and body["clip"]["label"] in LABELS
    primary = next(t for t in body["tracks"] if t["primary"])
    assert {p["label"] for p in primary["top"]} <= set(LABELS)


def test_shipped_models_are_not_overwritten_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.__main__ import main
    from training.from_clips import ShippedModelError, check_targets

    zoo = REPO_ROOT / "model_zoo"
    shipped = sorted(p.name for p in zoo.glob("*/manifest.json"))
    before = {p: p.stat().st_mtime_ns for p in zoo.rglob("*") if p.is_file()}
    csv_path = write_csv(tmp_path / "clips.csv", CSV_ROWS)
    args = [
        str(csv_path),
        "--videos",
        str(require_data("upfall")),
        "--name",
        "upfall-stgcnpp-lite",
        "--models-dir",
        str(zoo),
        "--out",
        str(tmp_path / "run"),
        "--cache",
        str(tmp_path / "cache"),
    ]
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # refused before any work
    assert {p: p.stat().st_mtime_ns for p in zoo.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in zoo.glob("*/manifest.json")) == shipped
    with pytest.raises(ShippedModelError):
        check_targets("x", zoo / "run", tmp_path / "zoo" / "x", force=False)  # the run folder too
    check_targets("upfall-stgcnpp-lite", tmp_path / "run", zoo / "upfall-stgcnpp-lite", force=True)


def _samples(groups: dict[str, list[str]]) -> list[Sample]:
    """One sample per (group, label)."""
    return [Sample(Path(f"/v/{g}-{lab}.mp4"), lab, group=g) for g, labels in groups.items() for lab in labels]


def test_split_is_by_group_stratified_and_seeded() -> None:
    groups = {f"s{i}": ["a", "b"] for i in range(8)} | {"solo": ["c"], "c2": ["c"]}
    out = split_samples(_samples(groups), test_size=0.25, seed=3)
    test = {s.group for s in out if s.split == "test"}
    assert all(s.split == ("test" if s.group in test else "train") for s in out)  # whole groups
    assert len(test & set(groups) - {"solo", "c2"}) == 2 and len(test & {"solo", "c2"}) == 1
    assert split_samples(_samples(groups), test_size=0.25, seed=3) == out
    assert any(split_samples(_samples(groups), test_size=0.25, seed=k) != out for k in range(4, 9))
    # A label in one group only keeps it for training: no held-out example, never no training one.
    lonely = split_samples(_samples({"g1": ["a", "b"], "g2": ["a"]}), test_size=0.5, seed=0)
    assert {s.label for s in lonely if s.split == "train"} == {"a", "b"}
    assert [s.group for s in lonely if s.split == "test"] == ["g2"]


def test_explicit_test_groups_and_their_errors() -> None:
    out = split_samples(_samples({"t1": ["a", "b"], "t2": ["a", "b"]}), test_groups=["t2"])
    assert [(s.group, s.split) for s in out] == [("t1", "train")] * 2 + [("t2", "test")] * 2
    with pytest.raises(SamplesError, match="not found"):
        split_samples(_samples({"t1": ["a"]}), test_groups=["t3"])
    with pytest.raises(SamplesError, match=r"\['b'\] would have no training"):
        split_samples(_samples({"t1": ["a"], "t2": ["a", "b"]}), test_groups=["t2"])


def test_csv_and_folder_readers_say_what_is_wrong(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    ok = tmp_path / "ok.csv"
    ok.write_text("clip,start,end,label,group\nv.mp4,1.5,,wave,alice\nv.mp4,,3,clap,\n")
    assert read_csv(ok) == [
        Sample(video.absolute(), "wave", 1.5, None, "alice"),
        Sample(video.absolute(), "clap", 0.0, 3.0, ""),
    ]
    for body, message in (
        ("clip,label\nmissing.mp4,wave\n", r"bad.csv:2: no video"),
        ("clip,start,end,label\nv.mp4,3,2,wave\n", r"bad.csv:2: end 2 s is not after start 3 s"),
        ("clip,start,label\nv.mp4,soon,wave\n", r"start 'soon' is not a number"),
        ("video,label\nv.mp4,wave\n", r"missing column\(s\) \['clip'\]"),
    ):
        (tmp_path / "bad.csv").write_text(body)
        with pytest.raises(SamplesError, match=message):
            read_csv(tmp_path / "bad.csv")
    (tmp_path / "clips" / "wave").mkdir(parents=True)
    (tmp_path / "clips" / "clap" / "day2").mkdir(parents=True)
    for p in ("wave/a.mp4", "clap/day2/b.MOV", "clap/notes.txt"):
        (tmp_path / "clips" / p).write_bytes(b"x")
    found = read_folder(tmp_path / "clips")
    assert [(s.label, s.video.name) for s in found] == [("clap", "b.MOV"), ("wave", "a.mp4")]
    with pytest.raises(SamplesError, match="no videos"):
        read_folder(tmp_path / "clips" / "wave")


def test_per_class_report_from_the_confusion_matrix() -> None:
    """The per-class report follows from the confusion matrix (precision by column, recall by row)."""
    from training.metrics import per_class_report

    report = per_class_report([[3, 1], [0, 0]], ["a", "b"])
    assert report["a"] == {"precision": 1.0, "recall": 0.75, "f1": round(2 * 0.75 / 1.75, 4), "support": 4}
    assert report["b"] == {"precision": 0.0, "recall": None, "f1": None, "support": 0}
