// Upload view: POST a clip to /recognize as a job (?mode=async), follow its progress on GET /jobs/{id}
// with a progress bar, and draw each person's timeline as coloured segments.
import { apiKey, authHeaders, errorText } from "./api.js";
import { labelColor, pct } from "./colors.js";
import { $, el, setStatus } from "./dom.js";

const POLL_MS = 500; // how often the job's progress is read

export class UploadView {
  constructor(getModel) {
    this.getModel = getModel;
    this.progress = $("upload-progress");
    $("upload-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
    });
  }

  async submit() {
    const file = $("file").files[0];
    if (!file) {
      setStatus("Choose a video clip first.", "warn");
      $("file").focus();
      return;
    }
    const params = new URLSearchParams({ top_k: $("top-k").value || "3", mode: "async" });
    if (this.getModel()) params.set("model", this.getModel());
    if ($("overlay-video").checked) params.set("overlay", "true");
    const body = new FormData();
    body.append("file", file);
    $("upload-btn").disabled = true;
    $("result").replaceChildren();
    $("result").setAttribute("aria-busy", "true");
    const t0 = performance.now();
    this.showProgress(0, 1, "upload");
    try {
      const answer = await post(`/recognize?${params}`, body, (sent) => {
        const mb = (file.size / 1e6).toFixed(1);
        this.showProgress(sent, 1, "upload");
        setStatus(sent < 1 ? `Uploading ${file.name} (${mb} MB): ${pct(sent)}…` : "Waiting for the server…");
      });
      // 202: a job to follow; a server without jobs answers 200 with the result itself.
      const result = answer.job_id ? await this.follow(answer) : answer;
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      const n = (result.tracks || []).length;
      setStatus(`Done in ${secs} s: ${n} ${n === 1 ? "person" : "people"} found in ${file.name}.`, "ok");
      renderResult($("result"), result);
    } catch (err) {
      setStatus(`Recognition failed: ${err.message}`, "error");
    } finally {
      $("upload-btn").disabled = false;
      $("result").removeAttribute("aria-busy");
      this.progress.hidden = true;
    }
  }

  /** Poll GET /jobs/{id} until the job is done (its RecognizeResponse) or failed (throws). */
  async follow(job) {
    const url = `/jobs/${encodeURIComponent(job.job_id)}`;
    for (;;) {
      if (job.state === "done") return job.result;
      if (job.state === "failed") throw new Error(job.error ? errorText(0, { error: job.error }) : "the job failed");
      const { frames_done: done, frames_total: total } = job.progress || {};
      if (job.state === "queued") setStatus("Waiting for a free place on the server…");
      else setStatus(`Analysing the clip: frame ${done} of ${total ?? "?"}${total ? ` (${pct(done / total)})` : ""}…`);
      this.showProgress(done || 0, total || 0, "analyse");
      await new Promise((r) => setTimeout(r, POLL_MS));
      const res = await fetch(url, { headers: authHeaders() });
      const body = await res.json().catch(() => null);
      if (!res.ok) throw new Error(errorText(res.status, body));
      job = body;
    }
  }

  /** The progress bar: the upload (0..1), then frames analysed of the clip's total. */
  showProgress(value, max, phase) {
    const bar = this.progress;
    bar.hidden = false;
    bar.dataset.phase = phase;
    if (max > 0) {
      bar.max = max;
      bar.value = Math.min(value, max);
    } else bar.removeAttribute("value"); // unknown total: an indeterminate bar
    bar.setAttribute("aria-label", phase === "upload" ? "Upload progress" : "Analysis progress");
  }
}

/** XHR rather than fetch, for upload progress on slow networks. Resolves with the JSON body. */
function post(url, body, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.responseType = "json";
    if (apiKey()) xhr.setRequestHeader("X-API-Key", apiKey());
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.upload.onload = () => onProgress(1);
    xhr.onload = () =>
      xhr.status >= 200 && xhr.status < 300
        ? resolve(xhr.response || {})
        : reject(new Error(errorText(xhr.status, xhr.response)));
    xhr.onerror = () => reject(new Error("network error: is the server running?"));
    xhr.ontimeout = () => reject(new Error("the server took too long to answer"));
    xhr.timeout = 10 * 60 * 1000;
    onProgress(0);
    xhr.send(body);
  });
}

const fmt = (s) => `${Number(s).toFixed(1)} s`;

function clipDuration(result) {
  let d = Number(result.video?.duration_s || 0);
  for (const t of result.tracks || []) d = Math.max(d, t.last_seen || 0, ...(t.segments || []).map((s) => s.end));
  return d || 1;
}

/** result: the RecognizeResponse of POST /recognize (service/schemas.py). */
export function renderResult(root, result) {
  const tracks = [...(result.tracks || [])].sort((a, b) => b.primary - a.primary || a.track_id - b.track_id);
  const duration = clipDuration(result);
  // Colours by order of appearance in this result: distinct for up to 12 labels.
  const labels = [...new Set(tracks.flatMap((t) => (t.segments || []).map((s) => s.label)))];
  const parts = [
    verdict(result),
    result.overlay_url ? annotatedVideo(result.overlay_url) : null,
    (result.warnings || []).length
      ? el("ul", { className: "warnings" }, result.warnings.map((w) => el("li", {}, w)))
      : null,
    el("h2", { className: "h3" }, "Timeline per person"),
    tracks.length ? null : el("p", { className: "muted" }, "No person was detected in this clip."),
    el(
      "ul",
      { className: "legend", "aria-label": "Colour legend" },
      labels.map((l) =>
        el("li", {}, el("span", { className: "swatch", style: { "--c": labelColor(l, labels) } }), l),
      ),
      labels.length ? el("li", {}, el("span", { className: "swatch none" }), "no confident action") : null,
    ),
    tracks.length
      ? el("div", { className: "timeline" }, tracks.map((t) => trackRow(t, duration, labels)), axis(duration))
      : null,
    stats(result),
  ];
  root.replaceChildren(...parts.filter(Boolean));
}

/** The annotated video of ?overlay=true: played inline, and a download link. With an API key the
 * file is fetched with the key (a <video> cannot send headers) and played from memory. */
function annotatedVideo(url) {
  const video = el("video", { controls: true, preload: "metadata", playsInline: true, muted: true });
  const link = el("a", { href: url, download: "annotated.webm" }, "Download the annotated video");
  if (apiKey()) {
    fetch(url, { headers: authHeaders() })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(`HTTP ${r.status}`))))
      .then((blob) => {
        video.src = link.href = URL.createObjectURL(blob);
      })
      .catch((err) => link.replaceWith(el("span", { className: "muted" }, `Annotated video unavailable: ${err.message}`)));
  } else {
    video.src = url;
  }
  return el("figure", { className: "annotated" }, video, el("figcaption", { className: "small" }, link));
}

function verdict(result) {
  const c = result.clip;
  if (!c) return null;
  const others = (c.top || []).filter((x) => x.label !== c.label).slice(0, 2);
  return el(
    "p",
    { className: "verdict" },
    "Whole clip: ",
    el("strong", {}, c.label),
    ` ${pct(c.confidence)} (person #${c.track_id})`,
    others.length ? el("span", { className: "muted" }, ` · then ${others.map((x) => `${x.label} ${pct(x.score)}`).join(", ")}`) : null,
  );
}

function trackRow(track, duration, labels) {
  const id = track.track_id;
  const name = `Person #${id}${track.primary ? " (main)" : ""}`;
  return el(
    "div",
    { className: "track-row", "data-track": id },
    el("span", { className: "track-name", title: `${track.frames} frames, ${track.windows} windows` }, name),
    el(
      "ol",
      { className: "segments", "aria-label": `${name}: actions over time` },
      (track.segments || []).map((s) =>
        el(
          "li",
          {
            className: "segment",
            tabIndex: 0,
            title: `${s.label} ${pct(s.confidence)} · ${fmt(s.start)}–${fmt(s.end)}`,
            style: {
              left: `${(100 * s.start) / duration}%`,
              width: `${Math.max(0.4, (100 * (s.end - s.start)) / duration)}%`,
              "--c": labelColor(s.label, labels),
            },
          },
          el("span", { "aria-hidden": "true" }, s.label),
          el("span", { className: "sr-only" }, `${s.label} ${pct(s.confidence)}, ${fmt(s.start)} to ${fmt(s.end)}`),
        ),
      ),
    ),
  );
}

function axis(duration) {
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  return el(
    "div",
    { className: "axis", "aria-hidden": "true" },
    el("span"),
    el("div", {}, ticks.map((f) => el("span", { style: { left: `${f * 100}%` } }, fmt(f * duration)))),
  );
}

function stats(result) {
  const v = result.video;
  const st = result.stats || {};
  const rows = [
    ["Model", `${result.model} (${String(result.provider).replace("ExecutionProvider", "")})`],
    v && ["Clip", `${v.width}×${v.height}, ${v.fps.toFixed(0)} fps, ${fmt(v.duration_s)}`],
    ["Frames processed", `${st.frames_processed} of ${st.frames_decoded}`],
    ["Model windows", st.windows],
    ["Processing time", st.wall_s !== undefined ? fmt(st.wall_s) : null],
    ["Speed", st.fps_processed !== undefined ? `${st.fps_processed.toFixed(1)} fps` : null],
  ].filter((r) => r && r[1] !== null && r[1] !== undefined);
  return el(
    "dl",
    { className: "stats summary", "aria-label": "Processing statistics" },
    rows.map(([k, val]) => el("div", {}, el("dt", {}, k), el("dd", {}, String(val)))),
  );
}
