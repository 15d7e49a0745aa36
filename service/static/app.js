// Entry point: model selector, tabs, and the two views (live camera, clip upload).
import { fetchModels } from "./api.js";
import { $, el, setStatus } from "./dom.js";
import { LiveView } from "./live.js";
import { TeachView } from "./teach.js";
import { UploadView } from "./upload.js";

let models = [];
let defaultModel = "";
const currentModel = () => $("model").value;

async function loadModels(retryIn = 2) {
  const select = $("model");
  try {
    const info = await fetchModels();
    models = info.models.filter((m) => m.kind !== "embedding"); // an embedding has no labels of its own
    defaultModel = info.default || models[0]?.name || "";
    const wanted = new URLSearchParams(location.search).get("model") || info.default;
    select.replaceChildren(
      ...models.map((m) => el("option", { value: m.name, selected: m.name === wanted }, m.name)),
    );
    if (!models.length) {
      select.append(el("option", { value: "" }, "server default"));
      setStatus("The server lists no models; the live stream will use its default.", "warn");
    } else {
      setStatus("Ready. Start the camera, or upload a clip.");
    }
  } catch (err) {
    // Warming up (503) or restarting: keep trying, the page works as soon as the server does.
    setStatus(`Waiting for the server (${err.message}); retrying in ${retryIn} s…`, "warn");
    setTimeout(() => loadModels(Math.min(retryIn * 2, 30)), retryIn * 1000);
    return;
  }
  describeModel();
}

function describeModel() {
  const m = models.find((x) => x.name === currentModel());
  const n = m?.labels?.length;
  $("model-info").textContent = m ? [m.description, n ? `${n} actions` : ""].filter(Boolean).join(" · ") : "";
}

/** WAI-ARIA tabs: click, or arrow keys / Home / End when a tab has focus. */
function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    tab.focus();
  };
  for (const tab of tabs) {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const i = tabs.indexOf(tab);
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (next === undefined) return;
      e.preventDefault();
      select(tabs[(next + tabs.length) % tabs.length]);
    });
  }
}

setupTabs();
$("settings").addEventListener("submit", (e) => e.preventDefault());
const live = new LiveView(currentModel);
new UploadView(currentModel);

/** Select a model (an action set: set:NAME, added to the list) and switch the live stream to it. */
async function selectModel(name, force = false) {
  const select = $("model");
  if (![...select.options].some((o) => o.value === name)) select.append(el("option", { value: name }, name));
  if (select.value === name && !force) return;
  select.value = name;
  describeModel();
  live.restart();
}
const teach = new TeachView(live, selectModel, () => defaultModel);
teach.refresh();
$("model").addEventListener("change", () => {
  describeModel();
  live.restart();
});
loadModels();
