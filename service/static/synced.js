// Synced view: each skeleton is painted on the very frame it was computed from.
// A reply comes a round trip after its frame was captured; drawn over the live <video> its skeleton
// trails the person by that much. Instead the page keeps each frame in flight (the ImageBitmap it
// encoded), finds it again by the reply's `timestamp` (the capture time the page sent, docs/api.md)
// and paints frame and skeleton together: the video shown is delayed by the latency, as in every
// analysed-video display, and never disagrees with its skeleton.

const SAME_TIME_S = 1e-4; // the server echoes capture times rounded to 0.1 ms; frames are >= 66 ms apart

/** Frames sent and not yet answered, oldest first: {captured (s), sentAt (ms), bitmap or null}.
 * Holds at most the frames in flight; each bitmap is released when its frame is answered, passed
 * over by a later reply (dropped by the server), given up or the connection is reset. */
export class InFlight {
  constructor(onChange = () => {}) {
    this.frames = [];
    this.onChange = onChange; // called with the number of bitmaps held
  }

  get length() {
    return this.frames.length;
  }

  /** When the oldest unanswered frame was sent (performance.now() ms), or undefined. */
  get oldestSentAt() {
    return this.frames[0]?.sentAt;
  }

  add(captured, sentAt, bitmap = null) {
    this.frames.push({ captured, sentAt, bitmap });
    this.changed();
  }

  /** The frame a reply answers (its capture time is the reply's timestamp), removed, its bitmap now
   * the caller's to paint and close; null when it was given up. Older frames were dropped on the
   * way (the server keeps only the newest): released. */
  take(timestamp) {
    let found = null;
    while (this.frames.length && this.frames[0].captured <= timestamp + SAME_TIME_S) {
      const f = this.frames.shift();
      if (Math.abs(f.captured - timestamp) <= SAME_TIME_S) found = f;
      else f.bitmap?.close();
    }
    this.changed();
    return found;
  }

  /** Forget every frame (stall, reconnect, stop); returns how many there were. */
  clear() {
    const n = this.frames.length;
    for (const f of this.frames) f.bitmap?.close();
    this.frames = [];
    this.changed();
    return n;
  }

  changed() {
    this.onChange(this.frames.filter((f) => f.bitmap).length);
  }
}

/** Paint `bitmap` into `canvas` at the bitmap's own size (CSS scales it like the video:
 * object-fit: contain), then release it: the canvas keeps the pixels. */
export function paintFrame(canvas, bitmap) {
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close();
}
