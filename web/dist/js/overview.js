// The overview's summary cards and recent-events list.

import { h, relTime } from "./util.js";

function stat(key, n, label, cls) {
  return h("div", { class: `stat ${cls}${n ? "" : " zero"}` },
    h("span", { class: "n", "data-count": key }, String(n)),
    h("span", { class: "label" }, label));
}

export function renderSummary(container, state) {
  const s = state.summary || {};
  const sites = (state.sites || []).length;
  const hubs = (state.sites || []).filter((x) => x.role === "hub").length;
  const tunnels = (state.tunnels || []).length;
  container.replaceChildren(
    h("section", { class: "card summary", "aria-labelledby": "sum-sites" },
      h("h2", { id: "sum-sites" }, `Sites `, h("span", { class: "muted" }, `${sites} · ${hubs} hub${hubs === 1 ? "" : "s"}`)),
      h("div", { class: "stats" },
        stat("sites_up", s.sites_up || 0, "up", "up"),
        stat("sites_down", s.sites_down || 0, "down", "down"),
        stat("sites_never_seen", s.sites_never_seen || 0, "never seen", "unknown"),
        stat("sites_unmanaged", s.sites_unmanaged || 0, "unmanaged", "unmanaged"))),
    h("section", { class: "card summary", "aria-labelledby": "sum-tunnels" },
      h("h2", { id: "sum-tunnels" }, `Tunnels `, h("span", { class: "muted" }, String(tunnels))),
      h("div", { class: "stats" },
        stat("tunnels_up", s.tunnels_up || 0, "up", "up"),
        stat("tunnels_degraded", s.tunnels_degraded || 0, "degraded", "degraded"),
        stat("tunnels_down", s.tunnels_down || 0, "down", "down"),
        stat("tunnels_unknown", s.tunnels_unknown || 0, "not reported", "unknown"))),
    h("section", { class: "card summary", "aria-labelledby": "sum-identity" },
      h("h2", { id: "sum-identity" }, "Onboarding & certificates"),
      h("div", { class: "stats" },
        h("a", { href: "#/onboard" }, stat("devices_pending", s.devices_pending || 0, "devices pending approval", "degraded")),
        h("a", { href: "#/sites" }, stat("certs_expiring_soon", s.certs_expiring_soon || 0, "certificates expiring / revoked", "down")))));
}

export function renderEvents(list, events) {
  const recent = (events || []).slice(-25).reverse();
  list.replaceChildren(...(recent.length
    ? recent.map((e) => h("li", { class: `event ${e.level}` },
      h("span", { class: "dot", "aria-hidden": "true" }),
      h("span", { class: "what" }, e.what),
      h("span", { class: "when" }, relTime(e.time))))
    : [h("li", { class: "muted" }, "No events yet.")]));
}
