"""UP-Fall clip accuracy through the real HTTP endpoint vs offline, with per-clip agreement.

    python -m evaluation.upfall --via both [--model NAME] [--limit N] [--json out.json]

``--via http`` starts the real server (uvicorn on loopback, the app from ``create_app``) unless
``--url`` points at a running one, and POSTs every clip to /recognize. ``--via offline`` runs no
server: ``training.extract.extract_video`` (pose + tracking + primary person, as the training
cache was made), then every track's windows through ``skeleton.preprocess`` and ONNX Runtime,
then the decision ``/recognize`` makes (``OfflineEvaluator.decide``: confirmed falls of every
person, ``skeleton.clip.decide_confirmed`` on the primary person). ``both`` runs the two and
compares clip by clip. ``--via online`` is what a stream sees: every online track (no stitching,
no primary choice, no blip filter), each track's windows, and whether any window of any track
reaches the single-window rule's fall threshold (the fall alarm before confirmed falls; fall events
through the real stream: ``python -m evaluation.falls``). Clips run ``--jobs`` at a time (threads;
each takes seconds of CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.core.config import Settings
from skeleton.clip import ClipDecision, ClipRule, decide, decide_confirmed, window_ends
from skeleton.manifest import ModelManifest, load_manifest
from skeleton.paths import REPO_ROOT, data_root

if TYPE_CHECKING:
    from training.skeleton_cache import ClipSkeletons

_CLIP = re.compile(r"Activity(\d+)/Trial(\d+)Cam(\d+)\.mp4$")


@dataclass(frozen=True)
class ClipCase:
    activity: int
    trial: int
    camera: int
    path: Path
    truth: str

    @property
    def name(self) -> str:
        return f"Activity{self.activity}/Trial{self.trial}Cam{self.camera}"


@dataclass
class ClipOutcomeRow:
    clip: str
    truth: str
    http: str | None = None
    offline: str | None = None
    http_confidence: float | None = None
    offline_confidence: float | None = None
    http_s: float | None = None
    offline_s: float | None = None
    max_prob_diff: float | None = None
    online_tracks: int | None = None  # online tracks (stream view)
    online_fall_peak: float | None = None  # highest window fall probability over those tracks


def activity_labels(manifest: ModelManifest) -> dict[int, str]:
    """UP-Fall activity number -> model label (the manifest lists the 11 activities in order)."""
    mapping = manifest.metrics.get("activity_labels") if isinstance(manifest.metrics, dict) else None
    if isinstance(mapping, dict):
        return {int(k): str(v) for k, v in mapping.items()}
    if len(manifest.labels) != 11:
        raise SystemExit(
            f"model {manifest.name} has {len(manifest.labels)} labels; an UP-Fall model has the "
            "11 activities in order (or metrics.activity_labels)"
        )
    return {i + 1: label for i, label in enumerate(manifest.labels)}


def upfall_cases(root: Path, labels: dict[int, str]) -> list[ClipCase]:
    cases = []
    for path in sorted((root / "upfall").glob("Activity*/Trial*Cam*.mp4")):
        m = _CLIP.search(path.as_posix())
        if m:
            a, t, c = (int(g) for g in m.groups())
            cases.append(ClipCase(a, t, c, path, labels[a]))
    cases.sort(key=lambda k: (k.activity, k.trial, k.camera))
    return cases


# ----------------------------------------------------------------------------- offline


def track_window_ends(
    timestamps: np.ndarray, seen: np.ndarray, window_seconds: float, hop_s: float
) -> np.ndarray:
    """The clip windowing protocol (``skeleton.clip.window_ends``) over a track's sightings."""
    t = timestamps[seen]
    return window_ends(float(t[0]), float(t[-1]), window_seconds, hop_s)


class OfflineEvaluator:
    """No server, no service pipeline: skeletons (from the training cache, or extracted with
    ``training.extract``) + shared preprocessing + ONNX Runtime + clip rule."""

    def __init__(
        self, model_dir: Path, settings: Settings, cache_dir: Path | None = None, lanes: int | None = None
    ) -> None:
        import onnxruntime as ort

        self.manifest = load_manifest(model_dir)
        self.settings = settings
        self.cache_dir = cache_dir
        self.lanes = lanes  # estimators alternating frames when extracted here (None: /recognize's default)
        self.session = ort.InferenceSession(
            str(model_dir / self.manifest.onnx.file), providers=["CPUExecutionProvider"]
        )

    def probs(
        self, seq_timestamps: np.ndarray, image: np.ndarray, world: np.ndarray, vis: np.ndarray, height: int
    ) -> tuple[np.ndarray, np.ndarray]:
        from skeleton.preprocess import prepare_window, sequence_to_layout
        from skeleton.types import SkeletonSequence

        spec = self.manifest.input
        seq = SkeletonSequence(seq_timestamps, image, world, vis)
        seen = np.isfinite(image[:, :, :2]).all(axis=(1, 2))
        # the service sees frames up to the track's end; frames after it do not exist for the track
        last = int(np.nonzero(seen)[0][-1]) + 1
        joints = sequence_to_layout(seq, spec, float(height))[:last]
        ts = seq_timestamps[:last]
        stride = self.settings.stride or spec.window.stride
        ends = track_window_ends(ts, seen[:last], spec.window.seconds, stride / spec.window.fps)
        first = int(np.nonzero(seen)[0][0])
        windows = np.stack([prepare_window(ts[first:], joints[first:], spec, e) for e in ends])
        logits = self.session.run(None, {self.session.get_inputs()[0].name: windows})[0]
        from service.classifier import softmax

        return softmax(np.asarray(logits, np.float32)), ends

    def extract(self, case: ClipCase, **options: Any) -> ClipSkeletons:
        """``training.extract.extract_video`` with the service's pose settings."""
        from training.extract import extract_video

        s = self.settings
        return extract_video(
            case.path,
            kind=s.pose_kind,
            max_people=s.max_people,
            max_side=s.pose_max_side,
            estimator_options=s.pose_spec().options,
            lanes=self.lanes,
            **options,
        )

    def run(self, case: ClipCase) -> tuple[str | None, float | None, np.ndarray | None]:
        from training.skeleton_cache import load_clip

        cached = self.cache_dir / f"{case.name}.npz" if self.cache_dir is not None else None
        # from the cache: the skeletons the model was trained and evaluated on
        clip = load_clip(cached) if cached is not None and cached.is_file() else self.extract(case)
        if clip.primary is None:
            return None, None, None
        d = self.decide(clip)
        return self.manifest.labels[d.label], d.confidence, d.probs

    def decide(self, clip: ClipSkeletons) -> ClipDecision:
        """The clip decision /recognize makes: with a fall rule, the confirmed falls of every person
        (``skeleton.falls.clip_events``) and ``skeleton.clip.decide_confirmed`` on the primary
        person; without, ``skeleton.clip.decide`` on the primary person's windows."""
        from skeleton.falls import FallRule, clip_events

        assert clip.primary is not None
        windows = {
            tid: self.probs(clip.timestamps, seq.image, seq.world, seq.visibility, clip.height)
            for tid, seq in zip(clip.track_ids, clip.tracks, strict=True)
        }
        primary = clip.track_ids[clip.primary]
        probs, ends = windows[primary]
        rule = FallRule.from_manifest(self.manifest)
        if not rule.fall_classes:
            return decide(probs, ends, ClipRule.from_manifest(self.manifest))
        tracks = zip(clip.track_ids, clip.tracks, strict=True)
        people = ((tid, seq, windows[tid][1], windows[tid][0]) for tid, seq in tracks)
        events = clip_events(rule, people, self.manifest.input.window.seconds, clip.width, clip.height)
        return decide_confirmed(probs, ends, ClipRule(rule.fall_classes), events, primary)

    def online(self, case: ClipCase) -> tuple[int, float]:
        """(online tracks, highest window fall probability over them): the stream's view of a clip."""
        from skeleton.clip import fall_probability

        clip = self.extract(case, min_track_frames=1, stitch=False)
        rule = ClipRule.from_manifest(self.manifest)
        peak = 0.0
        for seq in clip.tracks:
            probs, _ = self.probs(clip.timestamps, seq.image, seq.world, seq.visibility, clip.height)
            peak = max(peak, float(fall_probability(probs, rule).max()))
        return len(clip.tracks), peak


def cache_pose_settings(cache_dir: Path) -> dict[str, object]:
    """Pose settings recorded in the skeleton cache, as ``Settings`` fields (HTTP must match them)."""
    from training.skeleton_cache import iter_cache, load_clip

    files = iter_cache(cache_dir)
    if not files:
        return {}
    est = load_clip(files[0]).estimator
    out: dict[str, object] = {"max_people": int(est.get("max_people", 4))}
    if "legacy" in str(est.get("name", "")):
        out["pose_kind"] = "legacy"
    if "min_detection_confidence" in est:
        out["pose_min_detection_confidence"] = float(est["min_detection_confidence"])
    out["pose_tiles"] = bool(est.get("tiles"))
    out["pose_upscale_min_side"] = int(est.get("upscale_min_side", 0) or 0)
    out["pose_spare_slot"] = bool(est.get("spare_slot", True))  # caches older than the option had one
    out["pose_association"] = str(est.get("association", "mediapipe"))  # as the spare slot
    return out


# ----------------------------------------------------------------------------- http


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_server(settings: Settings) -> Iterator[str]:
    """The real app under uvicorn on a loopback port, in this process (single worker)."""
    import httpx
    import uvicorn

    from service.app import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health/ready", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the service did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def http_recognize(
    url: str, case: ClipCase, model: str, labels: list[str]
) -> tuple[str | None, float | None, np.ndarray | None]:
    import httpx

    with case.path.open("rb") as f:
        r = httpx.post(
            f"{url}/recognize",
            params={"model": model, "top_k": 100, "unknown_threshold": "-inf"},  # the closed-set label
            files={"file": (case.path.name, f, "video/mp4")},
            timeout=1800,
        )
    r.raise_for_status()
    body = r.json()
    clip = body["clip"]
    if clip is None:
        return None, None, None
    scores = {s["label"]: s["score"] for s in clip["top"]}
    return clip["label"], clip["confidence"], np.array([scores.get(label, 0.0) for label in labels])


# ----------------------------------------------------------------------------- main


def _accuracy(rows: list[ClipOutcomeRow], key: str) -> float:
    """Share of clips whose label equals the truth (a clip with nobody detected counts as wrong)."""
    return float(np.mean([getattr(r, key) == r.truth for r in rows])) if rows else 0.0


@dataclass
class EvaluationReport:
    model: str
    via: str
    rows: list[ClipOutcomeRow]
    http_accuracy: float | None = None
    offline_accuracy: float | None = None
    agreement: float | None = None
    max_prob_diff: float | None = None
    fall_threshold: float | None = None
    online_alarms_on_falls: str | None = None  # "alarmed / fall clips"
    online_alarms_on_others: str | None = None  # "alarmed / other clips"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def print(self) -> None:
        if self.via == "online":
            print(f"\n{'clip':28s} {'truth':28s} tracks fall peak")
            for r in self.rows:
                print(f"{r.clip:28s} {r.truth:28s} {r.online_tracks!s:6s} {r.online_fall_peak}")
            print(
                f"fall alarms (a window >= {self.fall_threshold}): fall clips "
                f"{self.online_alarms_on_falls}, other clips {self.online_alarms_on_others}"
            )
            return
        print(f"\n{'clip':28s} {'truth':28s} {'http':28s} {'offline':28s} agree")
        for r in self.rows:
            agree = "" if r.http is None or r.offline is None else ("yes" if r.http == r.offline else "NO")
            print(f"{r.clip:28s} {r.truth:28s} {r.http or '-':28s} {r.offline or '-':28s} {agree}")
        if self.http_accuracy is not None:
            print(f"HTTP accuracy:    {self.http_accuracy:.4f}")
        if self.offline_accuracy is not None:
            print(f"offline accuracy: {self.offline_accuracy:.4f}")
        if self.agreement is not None:
            n = round(self.agreement * len(self.rows))
            print(
                f"per-clip agreement: {n}/{len(self.rows)}; largest clip-score difference "
                f"{self.max_prob_diff}"
            )


def evaluate(
    settings: Settings,
    model_name: str,
    cases: list[ClipCase],
    via: str = "both",
    url: str | None = None,
    jobs: int = 1,
    cache_dir: Path | None = None,
    progress: Path | None = None,
    lanes: int | None = None,
) -> EvaluationReport:
    """Run the clips through the chosen paths and compare them (``progress``: JSON rewritten per clip;
    ``lanes``: estimators alternating frames where skeletons are extracted here)."""
    model_dir = settings.models_dir / model_name
    manifest = load_manifest(model_dir)
    rows = [ClipOutcomeRow(c.name, c.truth) for c in cases]
    offline_probs: dict[str, np.ndarray | None] = {}
    print(f"model {model_name}: {len(cases)} clips, via {via}", file=sys.stderr)
    if via == "online":
        off = OfflineEvaluator(model_dir, settings, lanes=lanes)
        return _evaluate_online(off, model_name, cases, rows, jobs, progress)
    if via in ("offline", "both"):
        off = OfflineEvaluator(model_dir, settings, cache_dir, lanes)

        def run_offline(pair: tuple[ClipCase, ClipOutcomeRow]) -> None:
            case, row = pair
            t0 = time.perf_counter()
            row.offline, row.offline_confidence, offline_probs[case.name] = off.run(case)
            row.offline_s = round(time.perf_counter() - t0, 2)
            print(f"offline {case.name}: {row.offline} (truth {row.truth})", file=sys.stderr, flush=True)
            _save_progress(progress, model_name, via, rows)

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            list(pool.map(run_offline, zip(cases, rows, strict=True)))
    if via in ("http", "both"):
        server = contextlib.nullcontext(url) if url else local_server(settings)
        with server as base:

            def run_http(pair: tuple[ClipCase, ClipOutcomeRow]) -> None:
                case, row = pair
                t0 = time.perf_counter()
                row.http, row.http_confidence, probs = http_recognize(base, case, model_name, manifest.labels)
                row.http_s = round(time.perf_counter() - t0, 2)
                ref = offline_probs.get(case.name)
                if probs is not None and ref is not None:
                    row.max_prob_diff = round(float(np.abs(probs - ref).max()), 6)
                print(f"http    {case.name}: {row.http} (truth {row.truth})", file=sys.stderr, flush=True)
                _save_progress(progress, model_name, via, rows)

            with ThreadPoolExecutor(max(1, jobs)) as pool:
                list(pool.map(run_http, zip(cases, rows, strict=True)))
    report = EvaluationReport(model_name, via, rows)
    if via in ("http", "both"):
        report.http_accuracy = _accuracy(rows, "http")
    if via in ("offline", "both"):
        report.offline_accuracy = _accuracy(rows, "offline")
    if via == "both":
        report.agreement = sum(r.http == r.offline for r in rows) / len(rows)
        diffs = [r.max_prob_diff for r in rows if r.max_prob_diff is not None]
        report.max_prob_diff = max(diffs) if diffs else None
    return report


def _evaluate_online(
    off: OfflineEvaluator,
    model_name: str,
    cases: list[ClipCase],
    rows: list[ClipOutcomeRow],
    jobs: int,
    progress: Path | None,
) -> EvaluationReport:
    def run(pair: tuple[ClipCase, ClipOutcomeRow]) -> None:
        case, row = pair
        row.online_tracks, peak = off.online(case)
        row.online_fall_peak = round(peak, 4)
        print(f"online  {case.name}: {row.online_tracks} tracks, fall peak {peak:.3f}", file=sys.stderr)
        _save_progress(progress, model_name, "online", rows)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(run, zip(cases, rows, strict=True)))
    rule = ClipRule.from_manifest(off.manifest)
    falls = {off.manifest.labels[k] for k in rule.fall_classes}
    alarmed = [r.online_fall_peak is not None and r.online_fall_peak >= rule.fall_threshold for r in rows]
    on_falls = [a for a, r in zip(alarmed, rows, strict=True) if r.truth in falls]
    on_others = [a for a, r in zip(alarmed, rows, strict=True) if r.truth not in falls]
    report = EvaluationReport(model_name, "online", rows, fall_threshold=rule.fall_threshold)
    report.online_alarms_on_falls = f"{sum(on_falls)}/{len(on_falls)}"
    report.online_alarms_on_others = f"{sum(on_others)}/{len(on_others)}"
    return report


def _save_progress(path: Path | None, model: str, via: str, rows: list[ClipOutcomeRow]) -> None:
    if path is not None:
        path.write_text(EvaluationReport(model, via, rows).to_json())


def select_cases(
    settings: Settings,
    model_name: str,
    clips: str | None = None,
    limit: int | None = None,
) -> list[ClipCase]:
    cases = upfall_cases(data_root(), activity_labels(load_manifest(settings.models_dir / model_name)))
    if clips:
        wanted = {c.strip() for c in clips.split(",")}
        cases = [c for c in cases if c.name in wanted]
    return cases[:limit] if limit else cases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.upfall", description=__doc__.split("\n")[0])
    parser.add_argument("--via", choices=("http", "offline", "both", "online"), default="both")
    parser.add_argument("--model", default=None, help="model folder name under SKELACT_MODELS_DIR")
    parser.add_argument("--url", default=None, help="a running service (default: start one on loopback)")
    parser.add_argument("--clips", default=None, help="comma-separated, e.g. Activity1/Trial1Cam1,...")
    parser.add_argument("--limit", type=int, default=None, help="first N clips only")
    parser.add_argument("--json", type=Path, default=None, help="write per-clip rows and accuracies here")
    parser.add_argument("--jobs", type=int, default=1, help="clips in flight at once (threads; default 1)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=REPO_ROOT / "cache" / "skeletons" / "upfall",
        help="offline: skeleton cache of training.extract (clips missing there are extracted)",
    )
    parser.add_argument("--no-cache", action="store_true", help="offline: always re-extract skeletons")
    parser.add_argument(
        "--lanes",
        type=int,
        default=None,
        help="offline (extracting) and online: estimators alternating frames, as /recognize with "
        "SKELACT_CLIP_POSE_LANES and a stream's pose lanes (default: /recognize's, one per core)",
    )
    args = parser.parse_args(argv)
    cache_dir = None if args.no_cache or not args.cache.is_dir() else args.cache
    settings = Settings()
    if cache_dir is not None:
        # HTTP must see what the offline skeletons saw: take the cache's pose settings
        aligned = cache_pose_settings(cache_dir)
        settings = settings.model_copy(update=aligned)
        print(f"offline skeletons from {cache_dir}; pose settings for HTTP: {aligned}", file=sys.stderr)
    model_name = args.model or settings.default_model
    if model_name is None:
        names = sorted(p.name for p in settings.models_dir.iterdir() if (p / "manifest.json").is_file())
        upfall = [n for n in names if "upfall" in n.lower()]
        if not upfall:
            parser.error(f"no UP-Fall model under {settings.models_dir}; pass --model")
        model_name = upfall[0]
    cases = select_cases(settings, model_name, args.clips, args.limit)
    if not cases:
        parser.error("no clips selected")
    report = evaluate(
        settings, model_name, cases, args.via, args.url, args.jobs, cache_dir, args.json, lanes=args.lanes
    )
    report.print()
    if args.json:
        args.json.write_text(report.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
