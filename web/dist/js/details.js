// Detail blocks for one tunnel or one site, shown beside the map and under
// the tunnels table.

import { h, badge, transportOf, fmtBytes, fmtMs, fmtPct, relTime, siteLink } from "./util.js";
import { historyChart } from "./chart.js";
import * as api from "./api.js";

/** tunnelDetail renders a tunnel's ends, per-end reports and its history chart. */
export function tunnelDetail(t) {
  // Show the last chart drawn for this tunnel until the fresh one arrives,
  // so live updates do not flicker.
  const prev = lastChart.get(t.id);
  const chart = h("div", { class: "chart-slot", "data-tunnel-id": t.id },
    prev ? prev.cloneNode(true) : h("p", { class: "muted" }, "Loading history…"));
  loadChart(chart, t.id);
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

const lastChart = new Map();

async function loadChart(slot, id) {
  try {
    const hist = await api.history(id);
    const fig = historyChart(hist.samples || [], hist.window_seconds);
    lastChart.set(id, fig);
    slot.replaceChildren(fig);
  } catch (err) {
    slot.replaceChildren(h("p", { class: "muted" }, `No history: ${err.message}`));
  }
}

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
