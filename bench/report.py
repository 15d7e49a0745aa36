"""Targets (PASS/FAIL), the markdown report and the PNG plots, from the merged results JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import describe

DOCS_START = "<!-- bench-results:start (written by python -m bench; edit outside these markers) -->"
DOCS_END = "<!-- bench-results:end -->"

OVERHEAD_MAX = 0.15
SINGLE_STREAM_P95_X = 1.5
ORT_SPEEDUP_MIN = 2.0
OVERLOAD_P95_X = 3.0
TREND_MAX = 1.5
TARGET_BATCH = 16


@dataclass
class Target:
    name: str
    measured: str
    threshold: str
    passed: bool | None  # None: not measured in this run
    note: str = ""

    @property
    def verdict(self) -> str:
        return "n/a" if self.passed is None else ("PASS" if self.passed else "FAIL")


def _f(x: float | None, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{nd}f}"


# ----------------------------------------------------------------------------- targets


def evaluate(sections: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    pipe = sections.get("pipeline")
    stream = sections.get("stream")
    clf = sections.get("classifier")
    if pipe:
        ov = pipe["overhead"]
        out.append(
            Target(
                "POST /recognize overhead over the bare decode+pose loop",
                f"{ov:+.1%} ({pipe['service']['wall_s']:.2f} s vs {pipe['bare']['wall_s']:.2f} s)",
                f"≤ {OVERHEAD_MAX:.0%}",
                ov <= OVERHEAD_MAX,
            )
        )
        measured = f"{pipe['speedup']:.2f}x with the default 1 lane (poses identical to offline extraction)"
        speedup = pipe["speedup"]
        lanes = pipe.get("lanes")
        if lanes:  # frames of the clip in pose on several estimators at once
            measured += f"; {lanes['speedup']:.2f}x with SKELACT_CLIP_POSE_LANES={lanes['lanes']}"
            speedup = max(speedup, lanes["speedup"])
        out.append(
            Target(
                "POST /recognize faster than the bare loop (decode, pose, classify overlap)",
                measured,
                "> 1.00x",
                speedup > 1.0,
            )
        )
    else:
        out.append(Target("POST /recognize overhead over the bare decode+pose loop", "–", "≤ 15%", None))
    singles = [s for s in (stream or {}).get("scenarios", []) if s["clients"] == 1]
    # The bare loop on the single client's own frames (JPEG decode + pose); older results only
    # have the pipeline clip's bare loop.
    bare = (stream or {}).get("bare") or (pipe or {}).get("bare")
    if bare and singles:
        base = bare["ms_per_frame"]
        lo = min(singles, key=lambda s: s["fps"])
        p95 = lo["latency_ms"]["p95"]
        notes = [f"{s['fps']:g} fps: {s['latency_ms']['p95']} ms" for s in singles if s is not lo]
        if p95 is not None and bare.get("p95_ms"):
            own = bare["p95_ms"]
            notes.insert(0, f"vs the bare loop's own p95 {own:.0f} ms: {p95 / own:.2f}x")
        solo = (stream or {}).get("bare_solo")
        if p95 is not None and solo:
            notes.insert(
                1,
                f"{lo['server'].get('solo_frames', 0)} of {lo['replies']} frames posed alone on "
                f"{solo['threads']} threads; the bare loop on {solo['threads']} threads: "
                f"{solo['ms_per_frame']:.0f} ms, p95 {solo['p95_ms']:.0f} ms ({p95 / solo['p95_ms']:.2f}x)",
            )
        out.append(
            Target(
                f"single-stream p95 latency ({lo['fps']:g} fps) vs bare decode + pose time per frame",
                f"{p95:.0f} ms = {p95 / base:.2f}x {base:.0f} ms" if p95 is not None else "no replies",
                f"≤ {SINGLE_STREAM_P95_X}x",
                None if p95 is None else p95 / base <= SINGLE_STREAM_P95_X,
                "; ".join(notes),
            )
        )
    else:
        out.append(
            Target(
                "single-stream p95 latency vs bare pose time per frame",
                "–",
                "≤ 1.5x",
                None,
                "needs the stream section",
            )
        )
    out += _classifier_targets(clf)
    out += _overload_targets(stream)
    return out


def _classifier_targets(clf: dict[str, Any] | None) -> list[Target]:
    if not clf or not clf.get("models"):
        return [
            Target(
                f"ONNX Runtime ≥ {ORT_SPEEDUP_MIN:g}x PyTorch eager at batch {TARGET_BATCH}",
                "–",
                f"≥ {ORT_SPEEDUP_MIN:g}x",
                None,
                "no classifier results (no shipped models?)",
            )
        ]
    out = []
    for m in clf["models"]:
        sp = speedups(m)
        cpu = {k: v for k, v in sp.items() if k[0] == "cpu" and k[2] == TARGET_BATCH}
        if not cpu:
            measured = sorted({k[2] for k in sp if k[0] == "cpu"})
            if measured:
                m.setdefault("notes", [])
                m = {**m, "notes": [*m["notes"], f"batch {TARGET_BATCH} not measured (batches {measured})"]}
            out.append(
                Target(
                    f"{m['model']}: ONNX Runtime ≥ {ORT_SPEEDUP_MIN:g}x PyTorch at batch {TARGET_BATCH}",
                    "–",
                    f"≥ {ORT_SPEEDUP_MIN:g}x",
                    None,
                    "; ".join(m.get("notes", [])),
                )
            )
            continue
        for (_, threads, _), x in sorted(cpu.items()):
            note = "PyTorch with random weights (same architecture)" if m["torch_weights"] == "random" else ""
            out.append(
                Target(
                    f"{m['model']}: ONNX Runtime vs PyTorch eager, CPU, {threads} thread(s), "
                    f"batch {TARGET_BATCH}",
                    f"{x:.2f}x",
                    f"≥ {ORT_SPEEDUP_MIN:g}x",
                    x >= ORT_SPEEDUP_MIN,
                    note,
                )
            )
    return out


def _overload_targets(stream: dict[str, Any] | None) -> list[Target]:
    scen = (stream or {}).get("scenarios", [])
    multi = [s for s in scen if s["clients"] >= 2]
    names = (
        f"overload p95 ≤ {OVERLOAD_P95_X:g}x single-stream p95",
        "overload: drops reported instead of growing queues",
        "both cores used: server CPU with ≥ 2 streams",
        "classifier batches windows across streams (mean windows per call)",
    )
    if not multi:
        why = "needs scenarios with ≥ 2 clients"
        return [
            Target(names[0], "–", f"≤ {OVERLOAD_P95_X:g}x", None, why),
            Target(names[1], "–", f"drops > 0, trend ≤ {TREND_MAX}x", None, why),
            Target(names[2], "–", "> 100%", None, why),
            Target(names[3], "–", "some calls with > 1 window", None, why),
        ]
    out = []
    top_fps = max(s["fps"] for s in multi)
    heavy = max((s for s in multi if s["fps"] == top_fps), key=lambda s: s["clients"])
    single = next((s for s in scen if s["fps"] == top_fps and s["clients"] == 1), None)
    where = f"{heavy['clients']} streams at {top_fps:g} fps"
    p95, p95_1 = heavy["latency_ms"]["p95"], (single or {}).get("latency_ms", {}).get("p95")
    if p95 and p95_1:
        x = p95 / p95_1
        out.append(
            Target(
                f"overload ({where}): p95 vs single-stream p95",
                f"{p95:.0f} ms = {x:.2f}x {p95_1:.0f} ms",
                f"≤ {OVERLOAD_P95_X:g}x",
                x <= OVERLOAD_P95_X,
            )
        )
    else:
        out.append(
            Target(names[0], "–", f"≤ {OVERLOAD_P95_X:g}x", None, f"needs 1 client at {top_fps:g} fps too")
        )
    trend = heavy.get("latency_trend")
    bounded = trend is None or trend <= TREND_MAX
    ok = heavy["dropped"] > 0 and bounded and heavy["unanswered"] <= 2 * heavy["clients"]
    out.append(
        Target(
            f"overload ({where}): drops reported instead of growing queues",
            f"{heavy['dropped']} of {heavy['sent']} dropped; latency last/middle third {_f(trend, 2)}x; "
            f"{heavy['unanswered']} unanswered",
            f"drops > 0, trend ≤ {TREND_MAX}x",
            ok,
        )
    )
    best = max(multi, key=lambda s: s["server"]["server_cpu_percent"])
    cores = (stream or {}).get("machine", {}).get("usable_cores") or 1
    out.append(
        Target(
            names[2] + " (max over scenarios)",
            f"{best['server']['server_cpu_percent']:.0f}% ({best['clients']} streams at {best['fps']:g} fps)"
            + _scaling(scen, best),
            "> 100%",
            best["server"]["server_cpu_percent"] > 100 if cores >= 2 else None,
            "" if cores >= 2 else "one usable core",
        )
    )
    batched = [s for s in multi if s["server"]["multi_window_batches"] > 0]
    means = ", ".join(f"{s['clients']}@{s['fps']:g} fps: {_f(s['server']['mean_batch'], 2)}" for s in multi)
    out.append(Target(names[3], means, "some calls with > 1 window", bool(batched)))
    return out


# ----------------------------------------------------------------------------- helpers


def _scaling(scen: list[dict[str, Any]], s: dict[str, Any]) -> str:
    """Aggregate processed fps of scenario ``s`` relative to one client at the same rate."""
    one = next((x for x in scen if x["fps"] == s["fps"] and x["clients"] == 1), None)
    if not one or not one["processed_fps"]:
        return ""
    return f"; processed fps {s['processed_fps'] / one['processed_fps']:.2f}x one stream's"


def speedups(model: dict[str, Any]) -> dict[tuple[str, int, int], float]:
    """(device, threads, batch) -> PyTorch median / ONNX Runtime median (CPU: same threads; GPU: cuda)."""
    rows = model["rows"]
    ort = {
        (r["device"], r["threads"], r["batch"]): r["median_ms"] for r in rows if r["runtime"] == "onnxruntime"
    }
    out = {}
    for r in rows:
        if r["runtime"] != "pytorch":
            continue
        key = (r["device"], r["threads"], r["batch"])
        if key in ort and ort[key] > 0:
            out[key] = r["median_ms"] / ort[key]
    return out


# ----------------------------------------------------------------------------- markdown


def render_markdown(results: dict[str, Any], img_prefix: str = "") -> str:
    sections = results.get("sections", {})
    lines: list[str] = []
    machine = results.get("machine", {})
    lines.append(f"Run: `{results.get('command', 'python -m bench')}` at {machine.get('measured_at', '?')}.")
    lines.append("")
    lines.append(f"Machine: {describe(machine)}.")
    load = machine.get("load_average") or [0.0]
    cores = machine.get("usable_cores") or 1
    if load and load[0] > 0.5 * cores:
        lines.append("")
        lines.append(
            f"**Measured under load**: the load average was {load[0]:.1f} on {cores} cores when the run "
            "started (other jobs were running), so absolute numbers are pessimistic and ratios noisy."
        )
    steal = results.get("cpu_steal_percent")
    if steal is not None:
        lines.append("")
        stretched = " -- enough to stretch the timings: compare ratios, not absolute numbers"
        lines.append(
            f"CPU steal during the run: {steal:.1f} % of the machine's CPU time went to other virtual "
            f"machines on the same host{stretched if steal >= 5 else ''}."
        )
    if results.get("quick"):
        lines.append("")
        lines.append("**Quick/smoke settings** (tiny batches, short clips, few clients): not a benchmark.")
    lines += ["", "### Targets", "", "| target | measured | threshold | result |", "|---|---|---|---|"]
    for t in evaluate(sections):
        note = f" ({t.note})" if t.note else ""
        lines.append(f"| {t.name}{note} | {t.measured} | {t.threshold} | **{t.verdict}** |")
    if "classifier" in sections:
        lines += ["", *_classifier_md(sections["classifier"], img_prefix)]
    if "pipeline" in sections:
        lines += ["", *_pipeline_md(sections["pipeline"], img_prefix)]
    if "stream" in sections:
        lines += ["", *_stream_md(sections["stream"], img_prefix)]
    if "tracking" in sections:
        from bench.tracking import tracking_md

        lines += ["", *tracking_md(sections["tracking"])]
    if "capacity" in sections:
        from bench.capacity import capacity_md

        lines += ["", *capacity_md(sections["capacity"])]
    return "\n".join(lines) + "\n"


def _classifier_md(sec: dict[str, Any], img: str) -> list[str]:
    out = ["### Classifier: ONNX Runtime vs PyTorch eager", ""]
    out.append(
        "Median time of one call (softmax included, host memory in and out) on real windows; "
        "PyTorch and ONNX Runtime with the same number of intra-op threads. "
        f"Speedup = PyTorch / ONNX Runtime. Section wall time {sec.get('wall_s', '?')} s."
    )
    for note in sec.get("notes", []):
        out += ["", f"- {note}"]
    for m in sec.get("models", []):
        parity = (
            f", max |Δp| vs ONNX Runtime {m['parity_max_abs']:.1e}"
            if m.get("parity_max_abs") is not None
            else ""
        )
        params = f"{m['params'] / 1e6:.2f} M params, " if m.get("params") else ""
        out += [
            "",
            f"**{m['model']}** ({m['architecture']}, input {'x'.join(map(str, m['input']))}, "
            f"{params}model.onnx {m['onnx_mib']} MiB; PyTorch: {m['torch_weights']} weights from "
            f"{m['torch_source']}{parity}; {m['distinct_windows']} distinct real windows)",
            "",
        ]
        for note in m.get("notes", []):
            out += [f"- {note}", ""]
        out += [
            "| device | threads | batch | ONNX Runtime ms | PyTorch ms | speedup | ORT windows/s "
            "| PyTorch windows/s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        keyed: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}
        for r in m["rows"]:
            keyed.setdefault((r["device"], r["threads"], r["batch"]), {})[r["runtime"]] = r
        sp = speedups(m)
        for key in sorted(keyed, key=lambda k: (k[0] != "cpu", k[0], k[1], k[2])):
            o, p = keyed[key].get("onnxruntime"), keyed[key].get("pytorch")
            x = sp.get(key)
            if x is None and key[0] in ("tensorrt",) and o is not None:
                torch_gpu = keyed.get(("cuda", 0, key[2]), {}).get("pytorch")
                x = torch_gpu["median_ms"] / o["median_ms"] if torch_gpu else None
            out.append(
                f"| {key[0]} | {key[1] or '–'} | {key[2]} | {_f(o['median_ms'], 2) if o else '–'} | "
                f"{_f(p['median_ms'], 2) if p else '–'} | {_f(x, 2) + 'x' if x else '–'} | "
                f"{_f(o['windows_per_s'], 0) if o else '–'} | {_f(p['windows_per_s'], 0) if p else '–'} |"
            )
    out += ["", f"![classifier]({img}classifier.png)"]
    return out


def _pipeline_md(sec: dict[str, Any], img: str) -> list[str]:
    clip = sec["clip"]
    b, s = sec["bare"], sec["service"]
    st = s["stage_ms_per_frame"]
    out = ["### Pipeline: bare decode + pose loop vs POST /recognize", ""]
    out.append(
        f"Clip `{clip['name']}` ({clip['frames']} frames, {clip['width']}x{clip['height']}, "
        f"{clip['fps']} fps, {clip['duration_s']} s); pose `{sec['server_pose']}`; best of "
        f"{sec['repeats']} alternating runs each (spread between runs: bare {sec['run_spread']['bare']:.0%}, "
        f"service {sec['run_spread']['service']:.0%}). "
        "The bare loop decodes with `perception.video.VideoReader` "
        "and runs a pose estimator built from the same `Settings` in one thread, nothing else; "
        "/recognize is timed by the client (upload, estimator creation, decode, pose, tracking, "
        "windows, classification, JSON). Service stage times are sums over the clip divided by frames "
        "(stages overlap in time, so they can add up to more than the wall time per frame)."
    )
    out += [
        "",
        "| path | wall s | fps | x real time | ms/frame | decode ms | pose ms | track ms | buffer ms | "
        "classify ms | windows / batches | CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    out.append(
        f"| bare loop | {b['wall_s']:.2f} | {b['fps']:.1f} | {b['x_realtime']:.2f} | "
        f"{b['ms_per_frame']:.1f} | "
        f"{b['decode_ms']:.1f} | {b['pose_ms']:.1f} | – | – | – | – | {b.get('cpu_percent', 0):.0f} |"
    )
    out.append(
        f"| POST /recognize | {s['wall_s']:.2f} (server {s['server_wall_s']:.2f}) | {s['fps']:.1f} | "
        f"{s['x_realtime']:.2f} | {1e3 * s['wall_s'] / max(s['frames'], 1):.1f} | "
        f"{st.get('decode', 0):.1f} | "
        f"{st.get('pose', 0):.1f} | {st.get('track', 0):.2f} | {st.get('buffer', 0):.2f} | "
        f"{st.get('classify', 0):.2f} | {s['windows']} / {s['batches']} | {s['server_cpu_percent']:.0f} |"
    )
    lanes = sec.get("lanes")
    if lanes:
        ls, lb = lanes["service"], lanes["bare"]
        lst = ls["stage_ms_per_frame"]
        out.append(
            f"| POST /recognize, {lanes['lanes']} pose lanes | {ls['wall_s']:.2f} (server "
            f"{ls['server_wall_s']:.2f}) | {ls['fps']:.1f} | "
            f"{clip['duration_s'] / ls['wall_s']:.2f} | {1e3 * ls['wall_s'] / max(ls['frames'], 1):.1f} | "
            f"{lst.get('decode', 0):.1f} | {lst.get('pose', 0):.1f} | {lst.get('track', 0):.2f} | "
            f"{lst.get('buffer', 0):.2f} | {lst.get('classify', 0):.2f} | "
            f"{ls['windows']} / {ls['batches']} | {ls['server_cpu_percent']:.0f} |"
        )
        out += [
            "",
            f"The last row is a second server with `SKELACT_CLIP_POSE_LANES={lanes['lanes']}` (frame i of "
            f"a clip on estimator i mod {lanes['lanes']}; the server reported {ls.get('pose_lanes', '?')} "
            "lanes), "
            f"alternated with its own bare runs (best {lb['wall_s']:.2f} s): {lanes['speedup']:.2f}x the "
            "bare loop. Its landmarks differ slightly from one estimator's, so the default stays 1 lane.",
        ]
    out += [
        "",
        f"Pose estimator creation (bare loop, not in its wall time): {b['estimator_create_s']:.2f} s; "
        f"people per frame {b['people_per_frame']}; model `{s['model']}` on `{s['provider']}`; "
        f"clip label `{s['clip_label']}`. Load average before/after: {sec['load_average']}.",
    ]
    out += ["", f"![pipeline]({img}pipeline.png)"]
    return out


def _stream_md(sec: dict[str, Any], img: str) -> list[str]:
    clip = sec["clip"]
    out = ["### Streaming: concurrent WebSocket clients", ""]
    out.append(
        f"Clients send JPEG frames of `{clip['name']}` ({clip['width']}x{clip['height']}, "
        f"{sec['jpeg_kib']} KiB each, encoded once up front) for {sec['seconds']:g} s at a fixed rate, "
        f"each with its own phase; latency = reply received - frame sent (loopback), pooled over clients. "
        f"Pose `{sec['server_pose']}`; models {sec['server_models']}. Server CPU = its CPU time / wall "
        "time (100% = one core); system CPU = the whole machine (includes these clients and other jobs). "
        "Trend = median latency of the last third of frames / the middle third (> 1: a queue is growing)."
    )
    bare = sec.get("bare")
    if bare:
        out += [
            "",
            f"Bare loop on the single client's {bare['frames']} frames (JPEG decode + pose in one thread, "
            f"nothing else, before the scenarios): {bare['ms_per_frame']:.1f} ms per frame (decode "
            f"{bare['decode_ms']:.1f}, pose {bare['pose_ms']:.1f}); p50 / p95 / max {bare['p50_ms']:.0f} / "
            f"{bare['p95_ms']:.0f} / {bare['max_ms']:.0f} ms.",
        ]
    solo = sec.get("bare_solo")
    if solo:
        out[-1] += (
            f" The same with the {solo['threads']} XNNPACK threads of a solo stream's estimator "
            f"(`SKELACT_SOLO_POSE_THREADS`): {solo['ms_per_frame']:.1f} ms per frame; p50 / p95 / max "
            f"{solo['p50_ms']:.0f} / {solo['p95_ms']:.0f} / {solo['max_ms']:.0f} ms. *Solo frames*: frames "
            "the server posed alone on every pose core (one stream, no clip, pose time < "
            "70% of the frame interval)."
        )
    out += [
        "",
        "| clients | fps each | sent | replies | dropped | processed fps (total / per client) | "
        "latency p50 / p95 / p99 ms | server-side p95 ms | trend | server pose ms | server CPU % | "
        "system CPU % | RSS peak MiB | mean batch (calls >1) | solo frames |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sec["scenarios"]:
        lat, srv = s["latency_ms"], s["server"]
        out.append(
            f"| {s['clients']} | {s['fps']:g} | {s['sent']} | {s['replies']} | {s['dropped']} "
            f"({s['drop_rate']:.0%}) | {s['processed_fps']:.1f} / {s['processed_fps_per_client']:.1f} | "
            f"{_f(lat['p50'], 0)} / {_f(lat['p95'], 0)} / {_f(lat['p99'], 0)} | "
            f"{_f(s['server_latency_ms']['p95'], 0)} | {_f(s['latency_trend'], 2)} | "
            f"{_f(srv['stage_ms_mean'].get('pose'), 0)} | {srv['server_cpu_percent']:.0f} | "
            f"{_f(srv['system_cpu_percent'], 0)} | {srv['server_rss_peak_mib']:.0f} | "
            f"{_f(srv['mean_batch'], 2)} ({srv['multi_window_batches']}) | {srv.get('solo_frames', '–')} |"
        )
    errors = [e for s in sec["scenarios"] for e in s.get("errors", [])]
    if errors:
        out += ["", "Errors from the server: " + "; ".join(sorted(set(errors))[:5])]
    out += ["", f"![streaming]({img}streaming.png)"]
    return out


# ----------------------------------------------------------------------------- plots


def write_plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    written = []
    sections = results.get("sections", {})
    if sections.get("classifier", {}).get("models"):
        written.append(_plot_classifier(sections["classifier"], out_dir / "classifier.png"))
    if "pipeline" in sections:
        written.append(_plot_pipeline(sections["pipeline"], out_dir / "pipeline.png"))
    if sections.get("stream", {}).get("scenarios"):
        written.append(_plot_stream(sections["stream"], out_dir / "streaming.png"))
    return written


def _plot_classifier(sec: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    models = sec["models"]
    fig, axes = plt.subplots(2, len(models), figsize=(5.5 * len(models), 8), squeeze=False)
    for j, m in enumerate(models):
        batches = sorted({r["batch"] for r in m["rows"]})
        series: dict[str, list[tuple[int, float, float]]] = {}
        for r in m["rows"]:
            label = f"{r['runtime']} {r['device']}" + (f" {r['threads']}t" if r["threads"] else "")
            series.setdefault(label, []).append((r["batch"], r["median_ms"], r["windows_per_s"]))
        for label, pts in sorted(series.items()):
            pts.sort()
            style = "-o" if label.startswith("onnxruntime") else "--s"
            axes[0][j].plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
            axes[1][j].plot([p[0] for p in pts], [p[2] for p in pts], style, label=label)
        for ax, ylabel in ((axes[0][j], "ms per call (median)"), (axes[1][j], "windows / s")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.set_xlabel("batch size")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][j].set_title(m["model"])
        axes[0][j].legend(fontsize=8)
    fig.suptitle("Classifier: ONNX Runtime vs PyTorch eager")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_pipeline(sec: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    b, s = sec["bare"], sec["service"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.bar(["bare loop", "POST /recognize"], [b["fps"], s["fps"]], color=["#888", "#2a7"])
    ax1.axhline(float(sec["clip"]["fps"]), color="r", ls="--", label=f"real time ({sec['clip']['fps']} fps)")
    ax1.set_ylabel("frames / s (whole clip)")
    ax1.legend()
    ax1.set_title("throughput")
    st = s["stage_ms_per_frame"]
    stages = ["decode", "pose", "track", "buffer", "classify"]
    bare_vals = [b["decode_ms"], b["pose_ms"], 0.0, 0.0, 0.0]
    svc_vals = [float(st.get(k, 0.0)) for k in stages]
    bottom = [0.0, 0.0]
    for k, bv, sv in zip(stages, bare_vals, svc_vals, strict=True):
        ax2.bar(["bare loop", "POST /recognize"], [bv, sv], bottom=bottom, label=k)
        bottom = [bottom[0] + bv, bottom[1] + sv]
    ax2.plot(
        ["bare loop", "POST /recognize"],
        [b["ms_per_frame"], 1e3 * s["wall_s"] / max(s["frames"], 1)],
        "k_",
        markersize=40,
        mew=2,
        label="wall time / frame",
    )
    ax2.set_ylabel("ms per frame")
    ax2.set_title("time per stage (service stages overlap)")
    ax2.legend(fontsize=8, markerscale=0.3)
    fig.suptitle(f"Pipeline on {sec['clip']['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_stream(sec: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    scen = sec["scenarios"]
    counts = sorted({s["clients"] for s in scen})
    rates = sorted({s["fps"] for s in scen})
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for fps in rates:
        pts = sorted((s for s in scen if s["fps"] == fps), key=lambda s: s["clients"])
        n = [s["clients"] for s in pts]
        for q, style in (("p50", ":o"), ("p95", "-o"), ("p99", "--o")):
            axes[0][0].plot(
                n, [s["latency_ms"][q] or float("nan") for s in pts], style, label=f"{fps:g} fps {q}"
            )
        axes[0][1].plot(n, [s["processed_fps"] for s in pts], "-o", label=f"{fps:g} fps processed")
        axes[0][1].plot(n, [s["offered_fps"] for s in pts], ":x", label=f"{fps:g} fps offered")
        axes[1][0].plot(n, [100 * s["drop_rate"] for s in pts], "-o", label=f"{fps:g} fps")
        axes[1][1].plot(n, [s["server"]["server_cpu_percent"] for s in pts], "-o", label=f"{fps:g} fps CPU %")
    ax_mem = axes[1][1].twinx()
    for fps in rates:
        pts = sorted((s for s in scen if s["fps"] == fps), key=lambda s: s["clients"])
        ax_mem.plot(
            [s["clients"] for s in pts],
            [s["server"]["server_rss_peak_mib"] for s in pts],
            "--x",
            color="gray",
            label=f"{fps:g} fps RSS",
        )
    ax_mem.set_ylabel("server RSS peak (MiB)")
    titles = (
        ("latency (ms, send -> reply)", "ms"),
        ("frames / s, all clients", "fps"),
        ("dropped frames (%)", "%"),
        ("server CPU (% of one core)", "%"),
    )
    for ax, (title, ylabel) in zip([a for row in axes for a in row], titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("WebSocket /stream under load")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- docs


def update_docs(doc: Path, markdown: str) -> bool:
    """Replace the text between the markers of ``doc`` (the file must already have them)."""
    if not doc.is_file():
        return False
    text = doc.read_text()
    if DOCS_START not in text or DOCS_END not in text:
        return False
    head, rest = text.split(DOCS_START, 1)
    _, tail = rest.split(DOCS_END, 1)
    doc.write_text(head + DOCS_START + "\n\n" + markdown.strip() + "\n\n" + DOCS_END + tail)
    return True
