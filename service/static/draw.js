// Draws each tracked person's MediaPipe-33 skeleton, box and current action over the video.
import { pct, trackColor } from "./colors.js";

export const EDGES = [
  [0, 1], [1, 2], [2, 3], [3, 7], [0, 4], [4, 5], [5, 6], [6, 8], [9, 10], [11, 12], [11, 13],
  [13, 15], [15, 17], [15, 19], [15, 21], [17, 19], [12, 14], [14, 16], [16, 18], [16, 20],
  [16, 22], [18, 20], [11, 23], [12, 24], [23, 24], [23, 25], [24, 26], [25, 27], [26, 28],
  [27, 29], [28, 30], [29, 31], [30, 32], [27, 31], [28, 32],
];
const MIN_VISIBILITY = 0.5;

/** Match the canvas backing store to its on-screen size; returns the 2D context. */
function fitCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.round(canvas.clientWidth * dpr);
  const h = Math.round(canvas.clientHeight * dpr);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, dpr };
}

export function clearOverlay(canvas) {
  fitCanvas(canvas);
}

/** msg: a "frame" message; coordinates are pixels of the frame that was sent (msg.width x msg.height).
 * The frame is shown like the video (object-fit: contain): scaled to fit and centred. */
export function drawFrame(canvas, msg) {
  const { ctx, dpr } = fitCanvas(canvas);
  if (!msg.width || !msg.height) return;
  const s = Math.min(canvas.width / msg.width, canvas.height / msg.height);
  const ox = (canvas.width - msg.width * s) / 2;
  const oy = (canvas.height - msg.height * s) / 2;
  const map = (x, y) => [ox + x * s, oy + y * s];
  const line = Math.max(2, 2.5 * dpr);
  for (const t of msg.tracks || []) {
    const color = trackColor(t.track_id);
    const pts = (t.landmarks || []).map(([x, y, v = 1]) => [...map(x, y), v]);
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = line;
    ctx.lineCap = "round";
    ctx.beginPath();
    for (const [a, b] of EDGES) {
      const p = pts[a];
      const q = pts[b];
      if (!p || !q || p[2] < MIN_VISIBILITY || q[2] < MIN_VISIBILITY) continue;
      ctx.moveTo(p[0], p[1]);
      ctx.lineTo(q[0], q[1]);
    }
    ctx.stroke();
    for (const [x, y, v] of pts) {
      if (v < MIN_VISIBILITY) continue;
      ctx.beginPath();
      ctx.arc(x, y, line * 1.2, 0, 2 * Math.PI);
      ctx.fill();
    }
    if (t.box) drawBox(ctx, t, color, map(t.box[0], t.box[1]), map(t.box[2], t.box[3]), dpr);
  }
}

/** "walking 87%" when confident, "walking? 34%" for an unsure guess, "… 40%" while the window fills. */
export function actionText(t) {
  if (t.label) return `${t.label} ${pct(t.confidence)}`;
  if (t.window_fill < 1 || !t.top?.length) return `… ${pct(t.window_fill)}`;
  return `${t.top[0].label}? ${pct(t.top[0].score)}`;
}

function drawBox(ctx, t, color, [x0, y0], [x1, y1], dpr) {
  ctx.setLineDash([6 * dpr, 4 * dpr]);
  ctx.lineWidth = 1.5 * dpr;
  ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
  ctx.setLineDash([]);
  const text = `#${t.track_id} ${actionText(t)}`;
  ctx.font = `600 ${Math.round(14 * dpr)}px system-ui, sans-serif`;
  const pad = 5 * dpr;
  const w = ctx.measureText(text).width + 2 * pad;
  const h = 21 * dpr;
  const x = Math.min(Math.max(0, x0), ctx.canvas.width - w);
  const y = Math.max(0, y0 - h);
  ctx.fillStyle = "rgba(10, 12, 16, 0.85)";
  ctx.fillRect(x, y, w, h);
  ctx.fillStyle = color;
  ctx.fillRect(x, y + h - 2 * dpr, w, 2 * dpr);
  ctx.fillStyle = t.label ? "#fff" : "#c9d1da";
  ctx.textBaseline = "middle";
  ctx.fillText(text, x + pad, y + h / 2 - dpr);
}
