// Live view: camera -> capped JPEG frames over WS /stream -> skeletons, actions and stats.
import { streamUrl } from "./api.js";
import { pct, trackColor } from "./colors.js";
import { $, el, setStatus } from "./dom.js";
import { clearOverlay, drawFrame } from "./draw.js";
import { InFlight, paintFrame } from "./synced.js";

const MAX_IN_FLIGHT = 2; // frames sent but not yet answered (or reported dropped) by the server
const STALL_MS = 5000; // no answer for this long: give up on the frames in flight
const SLOW_RTT_MS = 800; // round trip above this: warn about a slow network / busy server
const MAX_BACKOFF_MS = 8000;
const GOING_AWAY = 1001; // the server is shutting down (restart, scale-down): another one takes over
const MAX_FPS = 15;
const MAX_SIDE = 640;

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, Number.isFinite(x) ? x : hi));

export class LiveView {
  constructor(getModel) {
    this.getModel = getModel;
    this.video = $("video");
    this.overlay = $("overlay");
    this.frame = $("frame"); // the synced view: the frame the skeleton on the overlay came from
    this.stage = $("stage");
    this.pending = new InFlight((kept) => (this.stage.dataset.framesKept = String(kept)));
    this.canvas = document.createElement("canvas"); // off-screen, for JPEG encoding
    this.stream = null; // MediaStream
    this.ws = null;
    this.running = false;
    this.attempt = 0;
    this.timers = {};
    $("start").addEventListener("click", () => this.start());
    $("stop").addEventListener("click", () => this.stop("Stopped. Press Start to stream again."));
    window.addEventListener("online", () => this.running && !this.ws && this.connect());
    window.addEventListener("resize", () => this.last && drawFrame(this.overlay, this.last));
    $("set-synced").addEventListener("change", () => this.synced || this.showLive());
  }

  /** Synced view (default): each skeleton on the frame it came from, the video delayed by the
   * latency. Unticked: the live video, each skeleton drawn a round trip late. */
  get synced() {
    return $("set-synced").checked;
  }

  /** The live <video> instead of the last synced frame (also until a reply paints one). */
  showLive() {
    this.stage.dataset.view = "live";
  }

  settings() {
    return {
      fps: clamp(Number($("set-fps").value), 1, MAX_FPS),
      side: clamp(Number($("set-size").value), 160, MAX_SIDE),
      quality: clamp(Number($("set-quality").value), 0.3, 0.95),
    };
  }

  async start() {
    if (this.running) return;
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      setStatus("The camera needs a secure page: open this site over HTTPS (or http://localhost).", "error");
      return;
    }
    $("start").disabled = true;
    setStatus("Asking for camera permission…");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: false,
        video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" },
      });
    } catch (err) {
      $("start").disabled = false;
      setStatus(cameraErrorText(err), "error");
      return;
    }
    this.video.srcObject = this.stream;
    // Unplugged, or permission revoked while streaming.
    this.stream.getVideoTracks()[0]?.addEventListener("ended", () =>
      this.stop("The camera stopped (unplugged or permission withdrawn). Press Start to try again."),
    );
    await this.video.play().catch(() => {});
    await waitFor(() => this.video.videoWidth > 0, 5000);
    $("stage").style.aspectRatio = `${this.video.videoWidth} / ${this.video.videoHeight}`;
    $("placeholder").hidden = true;
    $("stop").disabled = false;
    this.running = true;
    this.attempt = 0;
    this.droppedLocal = 0;
    this.serverDroppedTotal = 0;
    this.noticeUntil = 0;
    this.connect();
    this.tick();
  }

  stop(message) {
    this.running = false;
    for (const t of Object.values(this.timers)) clearTimeout(t);
    this.timers = {};
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
      this.ws = null;
    }
    for (const track of this.stream?.getTracks() || []) track.stop();
    this.stream = null;
    this.video.srcObject = null;
    this.last = null;
    this.pending.clear();
    this.showLive();
    clearOverlay(this.overlay);
    $("placeholder").hidden = false;
    $("start").disabled = false;
    $("stop").disabled = true;
    renderPeople([]);
    if (message) setStatus(message);
  }

  /** The model selector changed: ask the open stream to switch (the server answers with a new hello). */
  restart() {
    if (!this.running) return;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ready = false; // pause sending until the new hello
      this.switching = true;
      setStatus(`Switching to model ${this.getModel()}…`);
      this.ws.send(JSON.stringify({ type: "config", model: this.getModel() }));
    }
    // Otherwise the next (re)connect uses the selected model anyway.
  }

  connect() {
    clearTimeout(this.timers.reconnect);
    clearTimeout(this.timers.countdown);
    const model = this.getModel();
    const ws = new WebSocket(streamUrl(model));
    this.ws = ws;
    this.ready = false;
    this.switching = false;
    this.lastError = null;
    this.resetCounters();
    setStatus(this.attempt ? `Reconnecting to the server (attempt ${this.attempt})…` : "Connecting…");
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg.type === "hello") this.onHello(msg);
      else if (msg.type === "frame") this.onFrame(msg);
      else if (msg.type === "error") this.onError(msg);
      else if (msg.type === "enrolled") this.onEnrolled?.(msg);
    };
    ws.onclose = (ev) => this.onClose(ev);
  }

  resetCounters() {
    this.pending.clear(); // frames not yet answered (a new connection answers none of them)
    this.serverDropped = 0;
    this.serverDroppedBase = this.serverDroppedTotal || 0;
    this.rtt = null;
    this.lag = null;
    this.replies = [];
  }

  onHello(msg) {
    this.ready = true;
    this.switching = false;
    this.attempt = 0;
    this.hello = msg;
    this.provider = msg.provider ? ` on ${msg.provider.replace("ExecutionProvider", "")}` : "";
    setStatus(this.streamingText([]), "ok");
  }

  /** Send a JSON message on the open stream (e.g. an "enrol" request of the teach panel). */
  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new Error("the stream is not connected");
    this.ws.send(JSON.stringify(message));
  }

  onError(msg) {
    if (msg.code === "frame_expired") {
      // The server dropped a frame that waited too long (it is busy); the next reply counts it.
      setStatus("The server is busy: frames are dropped to stay live.", "warn");
      this.noticeUntil = performance.now() + 5000;
      return;
    }
    this.onEnrolError?.(msg);
    const text = `Server error${msg.code ? ` (${msg.code})` : ""}: ${msg.message || "unknown error"}`;
    this.lastError = text; // shown again if the server then closes with "policy violation"
    if (this.switching) {
      this.switching = false; // the switch failed: keep streaming with the old model
      this.ready = true;
    }
    setStatus(text, "error");
    this.noticeUntil = performance.now() + 5000; // keep it readable before "streaming" returns
  }

  onClose(ev) {
    this.ws = null;
    this.ready = false;
    if (!this.running) return;
    this.last = null; // the next server starts new tracks: do not keep drawing the old ones
    this.pending.clear(); // never answered now
    this.showLive();
    clearOverlay(this.overlay);
    renderPeople([]);
    // 1008: refused for good (unknown model, bad request): retrying would fail the same way.
    // 1001: this server is going away; reconnect at once (0-1 s, spread): the next connection lands
    // on another replica or the restarted server. Anything else (1013 "try again later" while
    // warming up or full, a lost connection): back off exponentially with jitter and retry.
    if (ev.code === 1008) {
      this.stop();
      setStatus(this.lastError || `The server refused the stream: ${ev.reason || "policy violation"}.`, "error");
      return;
    }
    const goingAway = ev.code === GOING_AWAY;
    this.attempt = goingAway ? 0 : this.attempt + 1;
    const delay = goingAway
      ? Math.random() * 1000
      : Math.min(MAX_BACKOFF_MS, 500 * 2 ** (this.attempt - 1)) * (0.8 + 0.4 * Math.random());
    const due = performance.now() + delay;
    const why = goingAway
      ? "The server is going away (restart or scale-down)."
      : ev.code === 1013 && this.lastError
        ? `The server cannot take the stream yet (${this.lastError.replace(/^Server error /, "")}).`
        : "Connection to the server lost.";
    const countdown = () => {
      const s = Math.max(0, Math.ceil((due - performance.now()) / 1000));
      const attempt = this.attempt ? ` (attempt ${this.attempt})` : "";
      setStatus(`${why} Reconnecting${attempt}…`, "warn", ` in ${s} s`);
      if (performance.now() < due) this.timers.countdown = setTimeout(countdown, 1000);
    };
    countdown();
    this.timers.reconnect = setTimeout(() => this.connect(), delay);
  }

  /** Capture loop: at most `fps` frames per second, never more than MAX_IN_FLIGHT unanswered. */
  tick() {
    if (!this.running) return;
    const { fps } = this.settings();
    this.timers.tick = setTimeout(() => this.tick(), 1000 / fps);
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.ready || document.hidden) return;
    this.checkStall();
    // Busy (answers outstanding) or a slow uplink (socket buffer not drained): drop this frame.
    if (this.pending.length >= MAX_IN_FLIGHT || ws.bufferedAmount > 0 || this.encoding) {
      this.droppedLocal += 1;
      return;
    }
    this.sendFrame(ws);
  }

  async sendFrame(ws) {
    const { side, quality } = this.settings();
    const vw = this.video.videoWidth;
    const vh = this.video.videoHeight;
    if (!vw || !vh) return;
    const scale = Math.min(1, side / Math.max(vw, vh));
    this.canvas.width = Math.round(vw * scale);
    this.canvas.height = Math.round(vh * scale);
    this.encoding = true;
    let frame = null;
    try {
      const captured = performance.now() / 1000; // the window clock runs on it, not on arrival
      // One read of the video: the frame sent is the frame later painted under its skeleton.
      frame = await createImageBitmap(this.video).catch(() => null); // null: no picture yet
      if (!frame) return;
      this.canvas.getContext("2d").drawImage(frame, 0, 0, this.canvas.width, this.canvas.height);
      const blob = await new Promise((resolve) => this.canvas.toBlob(resolve, "image/jpeg", quality));
      // ArrayBuffer: sent as is, visible to devtools
      const bytes = blob && (await new Blob([capturePrefix(captured), blob]).arrayBuffer());
      if (!bytes || ws !== this.ws || ws.readyState !== WebSocket.OPEN) return;
      this.pending.add(captured, performance.now(), frame); // kept until its reply (either view)
      frame = null;
      ws.send(bytes);
    } finally {
      frame?.close();
      this.encoding = false;
    }
  }

  /** Frames unanswered for too long are given up, so a lost reply cannot stall the stream. */
  checkStall() {
    if (!this.pending.length || performance.now() - this.pending.oldestSentAt < STALL_MS) return;
    this.droppedLocal += this.pending.clear();
    setStatus("The server has not answered for 5 s: slow network or busy server. Still trying…", "warn");
    this.noticeUntil = performance.now() + 5000;
  }

  onFrame(msg) {
    const now = performance.now();
    this.serverDropped = msg.dropped || 0;
    this.serverDroppedTotal = this.serverDroppedBase + this.serverDropped;
    // The frame answered now (by its capture time); frames sent before it were skipped by the server.
    const sent = this.pending.take(msg.timestamp);
    if (sent) this.rtt = smooth(this.rtt, now - sent.sentAt);
    this.replies.push(now);
    while (this.replies.length && now - this.replies[0] > 2000) this.replies.shift();
    // How far behind the camera what is drawn now is: timestamps are this page's capture times.
    if (this.draw(msg, sent?.bitmap)) this.lag = smooth(this.lag, now - msg.timestamp * 1000);
    renderPeople(msg.tracks || []);
    this.renderEvents(msg.events || []);
    this.renderStats(msg);
  }

  /** Draw a reply's skeletons; in the synced view on their own frame (false if it was given up:
   * the last frame and its skeletons stay). */
  draw(msg, bitmap) {
    if (this.synced) {
      if (!bitmap) return false;
      paintFrame(this.frame, bitmap);
      this.stage.dataset.view = "synced";
    } else bitmap?.close();
    this.last = msg;
    drawFrame(this.overlay, msg);
    return true;
  }

  renderStats(msg) {
    const span = this.replies.length > 1 ? (this.replies.at(-1) - this.replies[0]) / 1000 : 0;
    const fps = span > 0 ? (this.replies.length - 1) / span : 0;
    const t = msg.timings_ms || {};
    $("stat-latency").textContent = this.rtt === null ? "–" : `${Math.round(this.rtt)} ms`;
    $("stat-fps").textContent = fps ? fps.toFixed(1) : "–";
    $("stat-dropped").replaceChildren(
      String(this.droppedLocal + this.serverDroppedTotal),
      el("small", {}, ` ${this.droppedLocal} here · ${this.serverDroppedTotal} server`),
    );
    $("stat-server").textContent = t.total !== undefined ? `${Math.round(t.total)} ms` : "–";
    $("stat-lag").textContent = this.lag === null ? "–" : `${Math.round(this.lag)} ms`;
    $("stat-lag").title = this.synced
      ? "The video shown and its skeletons are this far behind the camera"
      : "The skeletons are drawn this late over the live video";
    const slow = this.rtt !== null && this.rtt > SLOW_RTT_MS;
    if (slow) {
      setStatus(
        "Slow network or busy server: frames are dropped to stay live. " +
          "Lower the size or fps in Stream settings.",
        "warn",
        ` (round trip ${(this.rtt / 1000).toFixed(1)} s)`,
      );
    } else if (performance.now() > this.noticeUntil) {
      setStatus(this.streamingText(msg.tracks || []), "ok");
    }
  }

  /** The status line while streaming: who is tracked now (announced only when it changes). */
  streamingText(tracks) {
    const n = tracks.length;
    const who = n ? `${n} ${n === 1 ? "person" : "people"} tracked` : "move into view of the camera";
    return `Streaming to model ${this.hello?.model || ""}${this.provider || ""}: ${who}.`;
  }

  renderEvents(events) {
    const list = $("events");
    for (const e of events) {
      const verb = e.type === "start" ? "started" : "stopped";
      const time = new Date().toLocaleTimeString();
      list.prepend(el("li", {}, el("time", {}, time), ` Person #${e.track_id} ${verb} ${e.label}`));
    }
    while (list.children.length > 8) list.lastChild.remove();
  }
}

function renderPeople(tracks) {
  $("people-empty").hidden = tracks.length > 0;
  $("people").replaceChildren(
    ...tracks.map((t) => {
      const guess = !t.label && t.window_fill >= 1 && t.top?.length ? t.top[0] : null;
      let what;
      if (t.label) what = el("span", { className: "action" }, t.label);
      else if (guess) what = el("span", { className: "muted", title: "not confident yet" }, `${guess.label}?`);
      else what = el("span", { className: "muted" }, `watching… ${pct(t.window_fill)}`);
      const score = t.label ? t.confidence : guess ? guess.score : t.window_fill;
      return el(
        "li",
        { className: "person", "data-track": t.track_id, style: { "--c": trackColor(t.track_id) } },
        el("span", { className: "swatch", "aria-hidden": "true" }),
        el("span", { className: "who" }, `#${t.track_id}`),
        what,
        el("span", { className: "conf" }, t.label || guess ? pct(score) : ""),
        el("span", { className: "bar", "aria-hidden": "true" }, el("span", { style: { width: pct(score) } })),
      );
    }),
  );
}

/** Exponential smoothing of a readout (null: nothing yet). */
const smooth = (prev, x) => (prev === null ? x : 0.8 * prev + 0.2 * x);

/** The 12 bytes before a frame's JPEG: "SKTS" and its capture time (s, float64 LE); docs/api.md. */
function capturePrefix(seconds) {
  const head = new DataView(new ArrayBuffer(12));
  [..."SKTS"].forEach((c, i) => head.setUint8(i, c.charCodeAt(0)));
  head.setFloat64(4, seconds, true);
  return head.buffer;
}

function cameraErrorText(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
    case "PermissionDeniedError":
      return (
        "Camera access was denied. Allow the camera for this site (the camera icon in the address " +
        "bar, or the browser's site settings), then press Start again."
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera was found. Connect a camera, or use Upload a clip instead.";
    case "NotReadableError":
      return "The camera is busy in another application. Close it there and press Start again.";
    default:
      return `Could not open the camera: ${(err && err.message) || err}.`;
  }
}

function waitFor(cond, ms) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const poll = () => (cond() || performance.now() - t0 > ms ? resolve() : setTimeout(poll, 50));
    poll();
  });
}
