// The dashboard's entry point: login, the live state feed (server-sent
// events from /api/stream), hash routing between the views, and rendering.

import * as api from "./api.js";
import { h, transportOf } from "./util.js";
import { TopologyMap } from "./map.js";
import { TunnelTable } from "./tunnels.js";
import { tunnelDetail, siteSummary } from "./details.js";
import { renderSummary, renderEvents } from "./overview.js";
import { renderSitesTable, renderSitePage } from "./sites.js";
import { Onboarding } from "./onboard.js";

const $ = (id) => document.getElementById(id);

const app = {
  state: null,
  stream: null,
  selection: null, // {kind: "site"|"tunnel", id}
  selectedTunnel: "", // in the tunnels view
  route: { view: "overview" },
};
// Exposed for the browser tests and for poking around in the console.
window.meshwan = app;

let map;
let table;
let onboarding;

// ---- login ----------------------------------------------------------------

async function boot() {
  let s;
  try {
    s = await api.session();
  } catch (err) {
    showLogin(`The controller did not answer: ${err.message}`);
    return;
  }
  if (s.authenticated) start(s);
  else showLogin("");
}

function showLogin(message) {
  stopStream();
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("login-token").focus();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = $("login-token").value.trim();
  if (!token) {
    $("login-error").textContent = "Enter the admin token.";
    return;
  }
  try {
    await api.login(token);
    $("login-token").value = "";
    start(await api.session());
  } catch (err) {
    $("login-error").textContent = err.status === 401 ? "That token is not the admin token." : `Sign-in failed: ${err.message}`;
    $("login-token").select();
  }
});

$("logout").addEventListener("click", async () => {
  try { await api.logout(); } catch { /* the cookie is cleared or gone */ }
  showLogin("Signed out.");
});

// ---- live state -------------------------------------------------------------

function start(session) {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = !session.auth_required;
  if (!map) {
    map = new TopologyMap($("map"), {
      onSite: (name) => select({ kind: "site", id: name }),
      onTunnel: (id) => select({ kind: "tunnel", id }),
      onNone: () => select(null),
    });
    table = new TunnelTable($("tunnels-table"), {
      caption: "Tunnels",
      onSelect: (id) => { app.selectedTunnel = app.selectedTunnel === id ? "" : id; renderTunnels(); },
      onSort: () => renderTunnels(),
    });
    onboarding = new Onboarding(() => app.state);
    app.map = map;
  }
  openStream();
  route();
}

function openStream() {
  stopStream();
  setLive("connecting…", "");
  const es = new EventSource("/api/stream");
  app.stream = es;
  es.addEventListener("state", (ev) => {
    app.state = JSON.parse(ev.data);
    app.updatedAt = Date.now();
    setLive("live", "ok");
    render();
  });
  es.addEventListener("error", async () => {
    if (es.readyState === EventSource.CONNECTING) {
      setLive("reconnecting…", "warn");
      return;
    }
    // Closed for good (e.g. 401 after the session expired): find out why.
    stopStream();
    try {
      const s = await api.session();
      if (!s.authenticated) { showLogin("Your session ended; sign in again."); return; }
    } catch { /* controller unreachable: retry below */ }
    setLive("reconnecting…", "warn");
    setTimeout(() => { if (!app.stream && !$("app").hidden) openStream(); }, 2000);
  });
}

function stopStream() {
  if (app.stream) app.stream.close();
  app.stream = null;
}

function setLive(text, cls) {
  const el = $("live");
  el.textContent = text;
  el.className = `live ${cls}`;
}

// ---- routing ----------------------------------------------------------------

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  switch (parts[0]) {
    case "tunnels": return { view: "tunnels" };
    case "sites": return parts[1] ? { view: "site", site: parts[1] } : { view: "sites" };
    case "onboard": return { view: "onboard" };
    default: return { view: "overview" };
  }
}

function route() {
  app.route = parseRoute();
  for (const v of ["overview", "tunnels", "sites", "site", "onboard"]) $(`view-${v}`).hidden = v !== app.route.view;
  for (const a of document.querySelectorAll("[data-nav]")) {
    const current = a.dataset.nav === app.route.view || (a.dataset.nav === "sites" && app.route.view === "site");
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  render();
  if (app.route.view === "overview" && map) map.resize();
}

window.addEventListener("hashchange", () => { route(); $("main").focus({ preventScroll: true }); });

// ---- rendering --------------------------------------------------------------

function render() {
  const state = app.state;
  if (!state) return;
  switch (app.route.view) {
    case "overview":
      renderSummary($("summary"), state);
      $("topology-mode").textContent = state.topology ? `· ${state.topology}` : "· no topology set";
      map.render(state);
      renderEvents($("events"), state.events);
      renderSelection();
      break;
    case "tunnels":
      renderTunnels();
      break;
    case "sites":
      renderSitesTable($("sites-table"), state);
      break;
    case "site":
      renderSitePage($("site-page"), state, app.route.site, (slot, tunnels) =>
        new TunnelTable(slot, { caption: `Tunnels of ${app.route.site}` }).render(tunnels));
      break;
    case "onboard":
      onboarding.render(state);
      break;
  }
}

function select(sel) {
  app.selection = sel;
  map.select(sel ? (sel.kind === "site" ? `site:${sel.id}` : sel.id) : null);
  renderSelection();
}

function renderSelection() {
  const box = $("details");
  const sel = app.selection;
  const state = app.state;
  if (sel?.kind === "site") {
    const site = state.sites.find((s) => s.name === sel.id);
    if (site) { box.replaceChildren(siteSummary(site, state.tunnels)); return; }
  } else if (sel?.kind === "tunnel") {
    const t = state.tunnels.find((x) => x.id === sel.id);
    if (t) { box.replaceChildren(tunnelDetail(t)); return; }
  }
  box.replaceChildren(h("p", { class: "muted" }, "Nothing selected. Click a site or a tunnel on the map."));
}

function renderTunnels() {
  const state = app.state;
  if (!state) return;
  const filter = { text: $("tunnel-filter").value.trim(), state: $("tunnel-state-filter").value };
  table.selected = app.selectedTunnel;
  const shown = table.render(state.tunnels, filter);
  $("tunnel-count").textContent = `${shown} of ${state.tunnels.length} tunnels`;
  const t = state.tunnels.find((x) => x.id === app.selectedTunnel);
  $("tunnel-detail").hidden = !t;
  if (t) {
    $("tunnel-detail-title").textContent = `History and details: ${t.a.site} ↔ ${t.b.site} (${transportOf(t)})`;
    $("tunnel-detail-body").replaceChildren(tunnelDetail(t));
  }
}

$("tunnel-filter").addEventListener("input", renderTunnels);
$("tunnel-state-filter").addEventListener("change", renderTunnels);
$("tunnel-filter").form.addEventListener("submit", (ev) => ev.preventDefault());

// Relative times ("2 min ago") age without new state.
setInterval(() => { if (app.state && app.route.view !== "onboard") render(); }, 30000);

boot();
