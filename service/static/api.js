// Small HTTP/WS helpers shared by the live and upload views.

/** Optional API key for a gateway in front of the service: ?api_key= in the page URL. */
export function apiKey() {
  return new URLSearchParams(location.search).get("api_key") || "";
}

export function authHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

/** ws(s)://host/stream?model=NAME[&api_key=KEY] */
export function streamUrl(model) {
  const url = new URL("/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (model) url.searchParams.set("model", model);
  const key = apiKey();
  if (key) url.searchParams.set("api_key", key);
  return url.href;
}

/** GET /models, normalised to {models: [{name, labels, description}], default}. */
export async function fetchModels() {
  const res = await fetch("/models", { headers: authHeaders() });
  if (!res.ok) {
    const body = await res.json().catch(() => null);
    throw new Error(`GET /models: ${errorText(res.status, body)}`);
  }
  const body = await res.json();
  const list = Array.isArray(body) ? body : body.models || [];
  const models = list.map((m) => (typeof m === "string" ? { name: m, labels: [] } : m));
  return { models, default: body.default || (models[0] && models[0].name) || "" };
}

/** Best human-readable message from an error response body. */
export function errorText(status, body) {
  if (body && typeof body === "object") {
    const d = body.detail ?? body.message ?? body.error;
    if (typeof d === "string") return d;
    if (d && typeof d === "object") return d.message ? d.message + (d.hint ? ` (${d.hint})` : "") : JSON.stringify(d);
  }
  return `HTTP ${status}`;
}
