// Tiny DOM helpers: build elements without innerHTML (server strings are never parsed as HTML).

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "style" && typeof v === "object") {
      for (const [prop, val] of Object.entries(v)) node.style.setProperty(prop, val); // kebab-case keys
    }
    else if (k === "className") node.className = v;
    else if (k in node && !k.includes("-")) node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export const $ = (id) => document.getElementById(id);

/** The aria-live status line. level: info | ok | warn | error. `detail` (e.g. a countdown) is
 * shown but not announced, so screen readers hear a message once, not every second. */
export function setStatus(text, level = "info", detail = "") {
  const s = $("status");
  if (s.dataset.text !== text) {
    s.dataset.text = text;
    s.replaceChildren(text, el("span", { "aria-hidden": "true", className: "detail" }));
  }
  s.lastChild.textContent = detail;
  s.dataset.level = level;
}
