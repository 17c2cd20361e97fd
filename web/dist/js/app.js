// The dashboard's entry point: login, the live state feed (server-sent
// events from /api/stream), hash routing between the views, and rendering.
//
// Signed in, the page holds the stream and a timer; signed out (after
// sign-out here or in another tab, or when a request finds the session
// gone) it holds neither and sends nothing but /api/session and /api/login:
// stop() ends them all, and api.js refuses the data requests. The other
// tabs of the browser share the cookie, so signing out tells them over a
// BroadcastChannel, before the cookie goes; the server also ends the
// streams opened with the cookie. A stream that ends is not reopened
// blindly by the browser (a 401 would be logged as an error): the page
// asks /api/session first, which answers 200 either way.

import * as api from "./api.js";
import { h, transportOf } from "./util.js";
import { TopologyMap } from "./map.js";
import { TunnelTable } from "./tunnels.js";
import { tunnelDetail, siteSummary, forgetCharts } from "./details.js";
import { renderSummary, renderEvents } from "./overview.js";
import { renderSitesTable, renderSitePage } from "./sites.js";
import { Onboarding } from "./onboard.js";

const $ = (id) => document.getElementById(id);

const app = {
  signedIn: false,
  state: null,
  stream: null,
  ageTimer: 0, // re-renders relative times
  reconnectTimer: 0,
  selection: null, // {kind: "site"|"tunnel", id}
  selectedTunnel: "", // in the tunnels view
  route: { view: "overview" },
};
// Exposed for the browser tests and for poking around in the console.
window.meshwan = app;

let map;
let table;
let onboarding;

// The other tabs of this browser: "signed-out" and "signed-in".
const tabs = "BroadcastChannel" in window ? new BroadcastChannel("meshwan-session") : null;
tabs?.addEventListener("message", (ev) => {
  if (ev.data === "signed-out" && app.signedIn) showLogin("Signed out in another tab.");
  else if (ev.data === "signed-in" && !app.signedIn) boot();
});

api.onSessionEnded(() => { if (app.signedIn) showLogin("Your session ended; sign in again."); });

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
  stop();
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
    tabs?.postMessage("signed-in");
  } catch (err) {
    $("login-error").textContent = err.status === 401 ? "That token is not the admin token." : `Sign-in failed: ${err.message}`;
    $("login-token").select();
  }
});

$("logout").addEventListener("click", async () => {
  // Nothing may ask for data once the cookie is gone: stop here and in the
  // other tabs first.
  stop();
  tabs?.postMessage("signed-out");
  try { await api.logout(); } catch { /* the cookie is cleared or gone */ }
  showLogin("Signed out.");
});

// ---- live state -------------------------------------------------------------

function start(session) {
  if (!session.authenticated) { showLogin(""); return; }
  if (app.signedIn) return; // already started (e.g. signed in here and in another tab)
  app.signedIn = true;
  api.setSignedIn(true);
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = !session.auth_required;
  // A read-only session can look, not change (the API refuses it anyway):
  // no "Add a site".
  $("role").textContent = session.role ? session.role.replace("_", "-") : "";
  document.querySelector('[data-nav="onboard"]').hidden = session.role === "read_only";
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
  // Relative times ("2 min ago") age without new state.
  app.ageTimer = setInterval(() => { if (app.state && app.route.view !== "onboard") render(); }, 30000);
  route();
}

// stop ends everything that talks to the controller: the stream, the
// timers and (in api.js) the data requests; and forgets the network.
function stop() {
  app.signedIn = false;
  api.setSignedIn(false);
  stopStream();
  clearInterval(app.ageTimer);
  clearTimeout(app.reconnectTimer);
  app.ageTimer = app.reconnectTimer = 0;
  app.state = null;
  forgetCharts();
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
    // The stream ended (the controller shut down, the session signed out)
    // or could not open. Rather than let the browser reconnect on its own,
    // which would log a 401 if the session is gone, find out why.
    if (app.stream !== es) return;
    stopStream();
    setLive("reconnecting…", "warn");
    let s = null;
    try { s = await api.session(); } catch { /* controller unreachable: retry below */ }
    if (!app.signedIn) return; // signed out meanwhile
    if (s && !s.authenticated) { showLogin("Your session ended; sign in again."); return; }
    app.reconnectTimer = setTimeout(() => {
      app.reconnectTimer = 0;
      if (app.signedIn && !app.stream) openStream();
    }, 2000);
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
  if (!state || !app.signedIn) return;
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
  if (!state) return;
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
  if (!state || !app.signedIn) return;
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

boot();
