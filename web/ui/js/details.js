// Detail blocks for one tunnel or one site, shown beside the map and under
// the tunnels table.

import { h, badge, transportOf, fmtBytes, fmtMs, fmtPct, relTime, siteLink } from "./util.js";
import { historyChart } from "./chart.js";
import * as api from "./api.js";

/** tunnelDetail renders a tunnel's ends, per-end reports and its history chart. */
export function tunnelDetail(t) {
  const chart = chartSlot(t);
  const ends = [t.a, t.b].map((e) => {
    const rep = (t.reports || []).find((r) => r.site === e.site);
    return h("section", { class: "end", "aria-label": `End at ${e.site}` },
      h("p", { class: "end-head" }, siteLink(e.site), h("span", { class: "muted" }, ` · ${e.transport} · AS ${e.asn || "—"}`)),
      h("dl", { class: "facts small" },
        h("dt", {}, "Underlay"), h("dd", { class: "mono" }, e.underlay || "—"),
        h("dt", {}, "Inner"), h("dd", { class: "mono" }, e.inner),
        h("dt", {}, "Reports"), h("dd", {}, rep ? badge(rep.state || "unknown") : h("span", { class: "muted" }, "nothing")),
        rep ? [
          h("dt", {}, "IKE / child SA"), h("dd", { class: "mono" }, `${rep.ike_state || "—"} / ${rep.child_state || "—"}`),
          h("dt", {}, "GRE link"), h("dd", {}, rep.link_up ? "up" : "down"),
          h("dt", {}, "In / out"), h("dd", {}, `${fmtBytes(rep.bytes_in)} / ${fmtBytes(rep.bytes_out)}`),
        ] : null));
  });
  return h("div", { class: "tunnel-detail" },
    h("p", { class: "detail-head" }, badge(t.state), " ", h("strong", {}, `${t.a.site} ↔ ${t.b.site}`),
      h("span", { class: "muted" }, ` over ${transportOf(t)} · ${t.prefix}`)),
    t.detail ? h("p", { class: `detail-reason ${t.state}` }, t.detail) : null,
    h("dl", { class: "facts" },
      h("dt", {}, "Tunnel id"), h("dd", { class: "mono small" }, t.id),
      h("dt", {}, "RTT / jitter / loss"), h("dd", {}, `${fmtMs(t.rtt_ms)} / ${fmtMs(t.jitter_ms)} / ${fmtPct(t.loss_pct)}`),
      h("dt", {}, "Last change"), h("dd", {}, relTime(t.last_change))),
    h("div", { class: "ends" }, ends),
    chart);
}

// History charts, per tunnel id: the last figure drawn, when it was
// fetched and the tunnel's state then. The state arrives live (up to once a
// second); the history is fetched again only when the tunnel's state
// changed (the server records a change at once) or the figure is older
// than the server's sampling period, not on every update, and never twice
// at a time. Until a fresh figure arrives, the last one is shown, so live
// updates do not flicker.
const charts = new Map();
const chartRefreshMs = 5000; // web.Config.HistoryPeriod's default

function chartSlot(t) {
  let c = charts.get(t.id);
  const slot = h("div", { class: "chart-slot", "data-tunnel-id": t.id },
    c?.fig ? c.fig.cloneNode(true) : h("p", { class: "muted" }, "Loading history…"));
  if (!c) {
    c = { fig: null, at: 0, state: "", latest: "", loading: false };
    charts.set(t.id, c);
  }
  c.latest = t.state;
  if (!c.loading && (c.state !== t.state || Date.now() - c.at >= chartRefreshMs)) loadChart(t.id, t.state, c);
  return slot;
}

async function loadChart(id, state, c) {
  c.loading = true;
  c.state = state;
  c.at = Date.now();
  try {
    const hist = await api.history(id);
    c.fig = historyChart(hist.samples || [], hist.window_seconds);
  } catch (err) {
    // 401: signed out, or the session ended, which the app handles.
    if (err.status === 401) return;
    c.fig = h("p", { class: "muted" }, `No history: ${err.message}`);
  } finally {
    c.loading = false;
  }
  if (charts.get(id) !== c) return; // forgotten meanwhile (signed out)
  for (const slot of document.querySelectorAll(".chart-slot")) {
    if (slot.dataset.tunnelId === id) slot.replaceChildren(c.fig.cloneNode(true));
  }
  // The state changed while this one loaded: its change is in the history now.
  if (c.latest !== c.state) loadChart(id, c.latest, c);
}

/** forgetCharts drops the drawn charts (on sign-out). */
export function forgetCharts() { charts.clear(); }

/** siteSummary is the short site block beside the map. */
export function siteSummary(site, tunnels) {
  const mine = tunnels.filter((t) => t.a.site === site.name || t.b.site === site.name);
  const count = (s) => mine.filter((t) => t.state === s).length;
  return h("div", { class: "site-detail" },
    h("p", { class: "detail-head" }, badge(site.state), " ", h("strong", {}, site.name), h("span", { class: "muted" }, ` · ${site.role} · AS ${site.asn}`)),
    h("dl", { class: "facts" },
      h("dt", {}, "Transports"), h("dd", {}, (site.transports || []).map((tr) => `${tr.name} ${tr.observed || tr.address}`).join(", ") || "—"),
      h("dt", {}, "LAN"), h("dd", { class: "mono small" }, (site.lan_prefixes || []).join(", ") || "—"),
      h("dt", {}, "Tunnels"), h("dd", {}, `${mine.length} (${count("up")} up, ${count("degraded")} degraded, ${count("down")} down)`),
      h("dt", {}, "Agent"), h("dd", {}, site.agent_version || "—"),
      h("dt", {}, "Last seen"), h("dd", {}, site.state === "up" ? "connected" : relTime(site.last_seen))),
    h("p", {}, h("a", { href: `#/sites/${encodeURIComponent(site.name)}` }, "Open the site page →")));
}
