// Colour palettes: one per tracked person (overlay) and one per action label (timeline).
// All colours keep >= 4.5:1 contrast against the dark background used for text labels.
const PALETTE = [
  "#4fc3f7", "#ffb74d", "#81c784", "#f06292", "#ba68c8", "#fff176",
  "#4db6ac", "#e57373", "#9fa8da", "#aed581", "#ff8a65", "#90a4ae",
];

export function trackColor(trackId) {
  return PALETTE[Math.abs(trackId) % PALETTE.length];
}

/** Colour per label: by index in `labels` (pass the labels in use, so that up to 12 differ), else a hash. */
export function labelColor(label, labels = []) {
  let i = labels.indexOf(label);
  if (i < 0) {
    i = 0;
    for (const ch of String(label)) i = (i * 31 + ch.charCodeAt(0)) >>> 0;
  }
  return PALETTE[i % PALETTE.length];
}

export const pct = (x) => `${Math.round((x || 0) * 100)}%`;
