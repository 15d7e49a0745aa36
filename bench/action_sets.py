"""Enrolment cost through the real service: add one example, classify windows of a set of N labels x M
examples (``python -m service serve`` in a subprocess, loopback HTTP).

    python -m bench.action_sets [--labels 5 20] [--examples 1 5] [--calls 5] [--out FILE]

For every (N, M) a fresh set gets N x M examples (from a real clip's skeletons, ``--seconds`` long, sent as
JSON so pose is not timed: that is the clip pipeline's cost, ``python -m bench``); then:

* ``add_example_ms``: ``POST /action-sets/{set}/labels/{label}/examples`` of one more example (tracking,
  windows, embedding, pooling, the set's new version written), median of ``--calls``;
* ``add_example_video_ms``: the same from the clip's video (pose included), once;
* ``classify_ms_per_window``: ``POST /recognize?model=set:...`` of the same skeletons, the server's own
  ``stats.stage_ms.classify`` over its windows (embedding + cosine to N prototypes + unknown), median;
* ``first_use_ms``: the first ``/recognize`` after a change (the set's prototypes rebuilt) minus a later one;
* ``check_ms``: ``GET /action-sets/{set}/check`` (every example judged by the others), median.

Offline costs of the embedding and the prototype arithmetic alone: ``python -m bench.fewshot``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.clips import resolve_clip, trim_clip
from bench.machine import machine_info
from bench.server import launch_server
from skeleton.paths import REPO_ROOT

DEFAULT_CLIP = "upfall/Activity10/Trial1Cam1.mp4"


def clip_skeletons(video: Path, max_people: int = 1) -> dict[str, Any]:
    """The clip as skeleton JSON (``SkeletonSequenceIn``), posed by the service's estimator."""
    import numpy as np

    from perception.pose.estimator import create_pose_estimator
    from perception.video import VideoReader

    reader = VideoReader(video)
    est = create_pose_estimator("tasks", max_people=max_people)
    frames = []
    try:
        for f in reader:
            people = [
                {
                    "image": p.image.tolist(),
                    "world": np.nan_to_num(p.world).tolist(),
                    "visibility": p.visibility.tolist(),
                }
                for p in est.estimate(f.rgb, f.timestamp_s)
            ]
            frames.append({"timestamp": f.timestamp_s, "people": people})
    finally:
        est.close()
        reader.close()
    return {"width": reader.info.width, "height": reader.info.height, "frames": frames}


def _timed(client: httpx.Client, method: str, url: str, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = client.request(method, url, **kwargs)
    ms = (time.perf_counter() - t0) * 1e3
    if r.status_code >= 300:
        raise RuntimeError(f"{method} {url}: {r.status_code} {r.text[:300]}")
    return ms, r.json() if r.content else None


def measure(
    url: str, body: dict[str, Any], video: Path, labels: int, examples: int, calls: int
) -> dict[str, Any]:
    name = f"bench-{labels}x{examples}"
    with httpx.Client(timeout=600) as c:
        c.delete(f"{url}/action-sets/{name}")
        c.post(f"{url}/action-sets", json={"name": name}).raise_for_status()
        for i in range(labels):
            for _ in range(examples):
                _timed(c, "POST", f"{url}/action-sets/{name}/labels/l{i}/examples", json=body)
        adds = []
        for _ in range(calls):
            ms, added = _timed(c, "POST", f"{url}/action-sets/{name}/labels/extra/examples", json=body)
            adds.append(ms)
            c.delete(f"{url}/action-sets/{name}/labels/extra/examples/{added['example']['id']}")
        with video.open("rb") as f:
            files = {"file": (video.name, f, "video/mp4")}
            video_ms, _ = _timed(c, "POST", f"{url}/action-sets/{name}/labels/extra/examples", files=files)
        c.delete(f"{url}/action-sets/{name}/labels/extra")
        walls, per_window = [], []
        for _ in range(calls + 1):
            ms, res = _timed(c, "POST", f"{url}/recognize", params={"model": f"set:{name}"}, json=body)
            walls.append(ms)
            per_window.append(res["stats"]["stage_ms"]["classify"] / max(res["stats"]["windows"], 1))
        checks = [_timed(c, "GET", f"{url}/action-sets/{name}/check")[0] for _ in range(calls)]
        c.delete(f"{url}/action-sets/{name}")
    return {
        "labels": labels,
        "examples_per_label": examples,
        "windows_per_example": added["example"]["windows"],
        "add_example_ms": round(statistics.median(adds), 1),
        "add_example_video_ms": round(video_ms, 1),
        "classify_ms_per_window": round(statistics.median(per_window[1:]), 3),
        "first_use_ms": round(walls[0] - statistics.median(walls[1:]), 1),
        "recognize_json_ms": round(statistics.median(walls[1:]), 1),
        "check_ms": round(statistics.median(checks), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.action_sets", description=__doc__.split("\n")[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--examples", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--clip", default=DEFAULT_CLIP, help="a clip under the data folder, or a path")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each example")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    src = resolve_clip(args.clip)
    work = REPO_ROOT / "runs" / "bench-action-sets"
    work.mkdir(parents=True, exist_ok=True)
    video = trim_clip(src, work / "example.mp4", args.seconds)
    body = clip_skeletons(video)
    env = {"SKELACT_ACTION_SETS_DIR": str(work / "sets")}
    rows = []
    with launch_server(env=env, log_path=work / "server.log") as server:
        for n in args.labels:
            for m in args.examples:
                rows.append(measure(server.url, body, video, n, m, args.calls))
                print(json.dumps(rows[-1]), file=sys.stderr)
    result = {"machine": machine_info(), "load_average": os.getloadavg(), "clip": str(src), "rows": rows}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
