// The tunnels table: sortable by any column (buttons in the headers, with
// aria-sort), filterable by text and state; a click on a row selects it.

import { h, badge, severity, transportOf, fmtMs, fmtPct, relTime, siteLink } from "./util.js";

const columns = [
  { key: "pair", label: "Sites", value: (t) => `${t.a.site} ${t.b.site}` },
  { key: "transport", label: "Transport", value: (t) => transportOf(t) },
  { key: "prefix", label: "/30", value: (t) => prefixKey(t.prefix) },
  { key: "state", label: "State", value: (t) => severity(t.state) },
  { key: "sa", label: "IKE / child SA", value: (t) => `${t.ike_state || ""} ${t.child_state || ""}` },
  { key: "rtt", label: "RTT", value: (t) => t.rtt_ms ?? -1, numeric: true },
  { key: "jitter", label: "Jitter", value: (t) => t.jitter_ms ?? -1, numeric: true },
  { key: "loss", label: "Loss", value: (t) => t.loss_pct ?? -1, numeric: true },
  { key: "changed", label: "Last change", value: (t) => (t.last_change ? Date.parse(t.last_change) : 0), numeric: true },
];

function prefixKey(p) {
  const [addr] = (p || "").split("/");
  return addr.split(".").map((o) => o.padStart(3, "0")).join(".");
}

/** matches reports whether a tunnel matches a free-text filter. */
export function matches(t, text) {
  if (!text) return true;
  const hay = [t.id, t.a.site, t.b.site, t.a.transport, t.b.transport, t.prefix, t.state,
    t.ike_state, t.child_state, t.a.underlay, t.b.underlay].join(" ").toLowerCase();
  return text.toLowerCase().split(/\s+/).filter(Boolean).every((w) => hay.includes(w));
}

export class TunnelTable {
  /**
   * @param {HTMLElement} container
   * @param {{caption: string, onSelect?: function(string)}} opts
   */
  constructor(container, opts) {
    this.container = container;
    this.opts = opts;
    this.sortKey = "state";
    this.sortDesc = true;
    this.selected = "";
  }

  render(tunnels, filter = {}) {
    const rows = tunnels.filter((t) => (!filter.state || t.state === filter.state) && matches(t, filter.text));
    const col = columns.find((c) => c.key === this.sortKey) || columns[0];
    rows.sort((a, b) => {
      const va = col.value(a);
      const vb = col.value(b);
      let c = col.numeric || typeof va === "number" ? va - vb : String(va).localeCompare(String(vb));
      if (this.sortDesc) c = -c;
      return c || a.id.localeCompare(b.id);
    });
    const table = h("table", { class: "data tunnels" },
      h("caption", { class: "visually-hidden" }, this.opts.caption),
      h("thead", {}, h("tr", {}, columns.map((c) => this.header(c)))),
      h("tbody", {}, rows.length
        ? rows.map((t) => this.row(t))
        : h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, tunnels.length ? "No tunnel matches the filter." : "No tunnels."))));
    this.container.replaceChildren(table);
    return rows.length;
  }

  header(c) {
    const active = c.key === this.sortKey;
    const sort = active ? (this.sortDesc ? "descending" : "ascending") : "none";
    return h("th", { scope: "col", "aria-sort": sort, "data-col": c.key },
      h("button", {
        type: "button", class: "sort",
        onclick: () => {
          if (this.sortKey === c.key) this.sortDesc = !this.sortDesc;
          else { this.sortKey = c.key; this.sortDesc = c.key === "state" || c.key === "changed"; }
          this.opts.onSort?.();
        },
      }, c.label, h("span", { class: "arrow", "aria-hidden": "true" }, active ? (this.sortDesc ? " ▾" : " ▴") : "")));
  }

  row(t) {
    const select = () => this.opts.onSelect?.(t.id);
    return h("tr", {
      class: `state-${t.state}${t.id === this.selected ? " selected" : ""}`,
      "data-tunnel-id": t.id, tabindex: this.opts.onSelect ? 0 : null,
      "aria-selected": this.opts.onSelect ? String(t.id === this.selected) : null,
      onclick: (ev) => { if (!ev.target.closest("a")) select(); },
      onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(); } },
    },
    h("th", { scope: "row" }, siteLink(t.a.site), h("span", { class: "arrow-pair", "aria-label": "to" }, " ↔ "), siteLink(t.b.site)),
    h("td", {}, transportOf(t)),
    h("td", { class: "mono prefix" }, t.prefix),
    h("td", { class: "state", title: t.detail || null }, badge(t.state)),
    h("td", { class: "mono small" }, t.ike_state || t.child_state ? `${t.ike_state || "—"} / ${t.child_state || "—"}` : "—"),
    h("td", { class: "num" }, fmtMs(t.rtt_ms)),
    h("td", { class: "num" }, fmtMs(t.jitter_ms)),
    h("td", { class: "num" }, fmtPct(t.loss_pct)),
    h("td", {}, relTime(t.last_change)));
  }
}
