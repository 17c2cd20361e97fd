// The sites list and the page of one site: transports, LAN prefixes,
// tunnels, BGP sessions, agent version and last seen.

import { h, badge, relTime, siteLink } from "./util.js";

export function renderSitesTable(container, state) {
  const tunnels = state.tunnels || [];
  const rows = (state.sites || []).map((s) => {
    const mine = tunnels.filter((t) => t.a.site === s.name || t.b.site === s.name);
    const bad = mine.filter((t) => t.state === "down" || t.state === "degraded").length;
    return h("tr", { class: `site-${s.state}`, "data-site": s.name },
      h("th", { scope: "row" }, siteLink(s.name)),
      h("td", {}, s.role === "hub" ? h("span", { class: "role-hub" }, "hub") : "spoke"),
      h("td", {}, badge(s.state)),
      h("td", {}, (s.transports || []).map((tr) => tr.name).join(", ")),
      h("td", { class: "mono small" }, (s.lan_prefixes || []).join(", ")),
      h("td", { class: "num" }, bad ? h("span", { class: "warn-text" }, `${mine.length} (${bad} not up)`) : String(mine.length)),
      h("td", {}, s.agent_version || "—"),
      h("td", {}, s.state === "up" ? "connected" : relTime(s.last_seen)),
      h("td", { "data-cert": s.name }, certText(s.cert)));
  });
  container.replaceChildren(h("table", { class: "data" },
    h("caption", { class: "visually-hidden" }, "Sites"),
    h("thead", {}, h("tr", {}, ["Site", "Role", "Edge", "Transports", "LAN prefixes", "Tunnels", "Agent", "Last seen", "Certificate"]
      .map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No sites yet.")))));
}

/**
 * renderSitePage fills the site page; renderTunnels(slot, tunnels) renders the site's
 * tunnels into the element it is given.
 */
export function renderSitePage(container, state, name, renderTunnels) {
  const site = (state.sites || []).find((s) => s.name === name);
  if (!site) {
    container.replaceChildren(h("h1", { id: "site-title" }, name),
      h("p", {}, "No such site. ", h("a", { href: "#/sites" }, "All sites")));
    return;
  }
  const tunnels = (state.tunnels || []).filter((t) => t.a.site === name || t.b.site === name);
  const tunnelsSlot = h("div", { class: "table-wrap" });
  renderTunnels(tunnelsSlot, tunnels);
  container.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "#/sites" }, "Sites"), " / ", name),
    h("h1", { id: "site-title" }, name, " ", badge(site.state),
      site.role === "hub" ? h("span", { class: "role-hub" }, "hub") : h("span", { class: "role-spoke" }, "spoke")),
    h("div", { class: "site-grid" },
      h("section", { class: "card", "aria-labelledby": "site-edge" },
        h("h2", { id: "site-edge" }, "Edge"),
        h("dl", { class: "facts" },
          h("dt", {}, "State"), h("dd", {}, badge(site.state)),
          h("dt", {}, "Agent version"), h("dd", { "data-field": "agent_version" }, site.agent_version || "—"),
          h("dt", {}, "Applied version"), h("dd", {}, site.applied_version ? String(site.applied_version) : "—"),
          h("dt", {}, "Last seen"), h("dd", {}, site.state === "up" ? "connected now" : relTime(site.last_seen)),
          h("dt", {}, "ASN"), h("dd", {}, String(site.asn)),
          h("dt", {}, "Certificate"), h("dd", { "data-field": "cert" }, certText(site.cert)),
          ...(site.cert && site.cert.device_id ? [h("dt", {}, "Device"), h("dd", { class: "mono" }, site.cert.device_id)] : []))),
      h("section", { class: "card", "aria-labelledby": "site-transports" },
        h("h2", { id: "site-transports" }, "Transports"),
        h("table", { class: "data compact" },
          h("caption", { class: "visually-hidden" }, `Transports of ${name}`),
          h("thead", {}, h("tr", {}, ["Name", "Address", "Observed"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, (site.transports || []).map((tr) => h("tr", {},
            h("th", { scope: "row" }, tr.name),
            h("td", { class: "mono" }, tr.address),
            h("td", { class: "mono" }, tr.observed || "—")))))),
      h("section", { class: "card", "aria-labelledby": "site-lan" },
        h("h2", { id: "site-lan" }, "LAN prefixes"),
        h("ul", { class: "plain mono" }, (site.lan_prefixes || []).map((p) => h("li", {}, p))))),
    h("section", { class: "card", "aria-labelledby": "site-tunnels" },
      h("h2", { id: "site-tunnels" }, `Tunnels (${tunnels.length})`), tunnelsSlot),
    h("section", { class: "card", "aria-labelledby": "site-bgp" },
      h("h2", { id: "site-bgp" }, "BGP sessions"),
      h("p", { class: "hint" }, state.routing === "bgp"
        ? "One eBGP session per tunnel, between the tunnel's inner addresses, as the edge reports it."
        : "Routing is static: the edges install static routes and run no BGP. Set the topology's routing to BGP to run a session per tunnel."),
      bgpTable(site, tunnels, state)));
}

function bgpTable(site, tunnels, state) {
  const rows = tunnels.map((t) => {
    const [local, peer] = t.a.site === site.name ? [t.a, t.b] : [t.b, t.a];
    const peerSite = (state.sites || []).find((s) => s.name === peer.site);
    const ps = (site.bgp_peers || []).find((p) => p.tunnel_id === t.id);
    return h("tr", {},
      h("th", { scope: "row" }, siteLink(peer.site)),
      h("td", {}, String(peer.asn || peerSite?.asn || "—")),
      h("td", { class: "mono" }, local.inner),
      h("td", { class: "mono" }, (peer.inner || "").split("/")[0]),
      h("td", {}, `${local.transport}${local.transport === peer.transport ? "" : "–" + peer.transport}`),
      h("td", {}, badge(t.state)),
      h("td", {}, ps ? ps.state : "—"),
      h("td", { class: "mono" }, ps ? `${ps.received} / ${ps.advertised}` : "—"));
  });
  return h("table", { class: "data compact" },
    h("caption", { class: "visually-hidden" }, `BGP sessions of ${site.name}`),
    h("thead", {}, h("tr", {}, ["Neighbor", "Remote AS", "Local address", "Neighbor address", "Transport", "Tunnel", "BGP session", "Prefixes in / out"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No tunnels, so no sessions."))));
}

/**
 * certText says when a site's edge certificate expires, flagged when it
 * expires soon (the edge renews at 2/3 of the lifetime, so a quarter left
 * means it has not), has expired or was revoked.
 */
export function certText(c) {
  if (!c) return "not enrolled";
  if (c.revoked) return h("span", { class: "warn-text" }, "revoked");
  const at = new Date(c.not_after);
  const label = at.toLocaleString();
  if (c.expired) return h("span", { class: "warn-text", title: label }, "EXPIRED");
  const days = Math.floor((at - Date.now()) / 86400000);
  const text = days >= 2 ? `expires in ${days} days` : `expires ${label}`;
  return c.expires_soon ? h("span", { class: "warn-text", title: label }, `${text} (not renewed)`) : h("span", { title: label }, text);
}
