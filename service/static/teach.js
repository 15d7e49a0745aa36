// Teach a new action: record the last 3 s of the live camera as an example of a label in an action
// set (WS message "enrol"), list the set's examples, and watch the set recognise them live.
import { authHeaders, errorText } from "./api.js";
import { $, el, setStatus } from "./dom.js";

const RECORD_S = 3;
// errors that answer an "enrol" message (others, e.g. rate_limited, leave the request waiting)
const ENROL_ERRORS = new Set([
  "nobody_found", "several_people", "example_too_short", "stream_model_mismatch", "not_found",
  "invalid_label", "invalid_message", "conflict", "no_embedding_model",
]);
const SET_PREFIX = "set:";

async function call(method, path, body) {
  const headers = { ...authHeaders(), ...(body ? { "Content-Type": "application/json" } : {}) };
  const res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  return { ok: res.ok, status: res.status, data };
}

export class TeachView {
  /** live: the LiveView (its stream records the example); selectModel(name): switch the model;
   * baseModel(): the server's default model, which the set can run next to. */
  constructor(live, selectModel, baseModel) {
    this.live = live;
    this.selectModel = selectModel;
    this.baseModel = baseModel;
    this.waiting = null; // resolves with the server's "enrolled" (or error) reply
    live.onEnrolled = (msg) => this.settle(msg);
    live.onEnrolError = (msg) => ENROL_ERRORS.has(msg.code) && this.settle(msg);
    $("teach-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.record();
    });
    $("teach-set").addEventListener("change", () => this.refresh());
    $("teach-base").addEventListener("change", () => {
      if (this.live.hello?.model?.startsWith(SET_PREFIX + this.setName())) this.selectModel(this.modelName());
    });
  }

  setName() {
    return $("teach-set").value.trim() || "my-actions";
  }

  /** The set as the stream's model: alone, or next to the server's model (set:NAME,MODEL). */
  modelName() {
    const base = $("teach-base").checked ? this.baseModel() : "";
    return SET_PREFIX + this.setName() + (base ? `,${base}` : "");
  }

  settle(msg) {
    const done = this.waiting;
    this.waiting = null;
    done?.(msg);
  }

  /** The set exists (created on first use) and the live stream runs it. */
  async useSet() {
    const name = this.setName();
    const all = await call("GET", "/action-sets");
    if (!all.ok) throw new Error(errorText(all.status, all.data));
    if (!all.data.sets.some((x) => x.name === name)) {
      const r = await call("POST", "/action-sets", { name });
      if (!r.ok && r.status !== 409) throw new Error(errorText(r.status, r.data));
    }
    const model = this.modelName();
    await this.selectModel(model);
    const until = performance.now() + 30000;
    while (this.live.hello?.model !== model || !this.live.ready) {
      if (performance.now() > until) throw new Error("the stream did not switch to the set");
      await new Promise((ok) => setTimeout(ok, 100));
    }
  }

  async record() {
    const label = $("teach-label").value.trim();
    if (!label) return setStatus("Name the action first.", "warn");
    if (!this.live.running) return setStatus("Press Start first: examples come from the live camera.", "warn");
    const button = $("teach-record");
    button.disabled = true;
    try {
      await this.useSet();
      for (let s = RECORD_S; s > 0; s--) {
        setStatus(`Recording "${label}": act now…`, "info", ` ${s}`);
        $("teach-countdown").textContent = String(s);
        await new Promise((ok) => setTimeout(ok, 1000));
      }
      $("teach-countdown").textContent = "";
      const reply = new Promise((ok) => (this.waiting = ok));
      this.live.send({ type: "enrol", action_set: this.setName(), label, seconds: RECORD_S });
      const msg = await Promise.race([reply, new Promise((ok) => setTimeout(() => ok(null), 60000))]);
      if (!msg) throw new Error("no answer from the server");
      if (msg.type === "error") throw new Error(msg.message);
      setStatus(`Added an example of "${label}" (${msg.example.seconds.toFixed(1)} s). Act it to see it recognised.`, "ok");
      await this.refresh();
    } catch (err) {
      setStatus(`Could not add the example: ${err.message}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  /** Show the set's labels and examples (each with a delete button). */
  async refresh() {
    const name = this.setName();
    const list = $("teach-examples");
    // the list, not GET /action-sets/{name}: a set not made yet is no error (and no console noise)
    const r = await call("GET", "/action-sets");
    if (!r.ok) {
      list.replaceChildren(el("li", { className: "muted small" }, errorText(r.status, r.data)));
      return;
    }
    const set = r.data.sets.find((x) => x.name === name);
    const checks = set?.labels.length ? await this.check(name) : new Map();
    const items = (set?.labels || []).map((label) =>
      el(
        "li",
        { "data-label": label.name },
        el("strong", {}, label.name),
        ` · ${label.examples.length} example${label.examples.length === 1 ? "" : "s"} `,
        ...label.examples.map((ex, i) =>
          el("button", {
            type: "button",
            className: "small",
            title: `delete example ${i + 1} (${ex.seconds.toFixed(1)} s, ${ex.source.kind})`,
            onclick: () => this.remove(name, label.name, ex.id),
          }, `× ${i + 1}`),
        ),
        ...label.examples.flatMap((ex, i) => warning(checks.get(ex.id), i + 1, label.examples.length)),
      ),
    );
    list.replaceChildren(...(items.length ? items : [el("li", { className: "muted small" }, "No examples yet.")]));
  }

  /** GET /action-sets/{name}/check: example id -> how the set's other examples judge it. */
  async check(name) {
    const r = await call("GET", `/action-sets/${encodeURIComponent(name)}/check`);
    return new Map(r.ok ? r.data.examples.map((c) => [c.id, c]) : []);
  }

  async remove(name, label, id) {
    const path = `/action-sets/${encodeURIComponent(name)}/labels/${encodeURIComponent(label)}/examples/${id}`;
    const r = await call("DELETE", path);
    if (!r.ok) setStatus(`Could not delete: ${errorText(r.status, r.data)}`, "error");
    else if (this.live.hello?.model === this.modelName()) await this.selectModel(this.modelName(), true);
    await this.refresh();
  }
}

/** A note for an example the rest of its set would miss or mistake (nothing when all is well). */
function warning(check, n, count) {
  const which = count === 1 ? "its example" : `example ${n}`;
  const text = {
    confused: `${which} looks like “${check?.nearest}”`,
    unknown: `${which} is unlike the others`,
    overlaps: `may be taken for “${check?.nearest}”`,
  }[check?.outcome];
  return text ? [el("span", { className: "check-warning small", "data-outcome": check.outcome }, ` ⚠ ${text}`)] : [];
}
