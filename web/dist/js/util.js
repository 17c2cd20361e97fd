// Small DOM and formatting helpers shared by the views.

/**
 * h builds an element: h("a", {href: "#/", class: "x"}, "text", child).
 * Attributes starting with "on" are event listeners; null/false are skipped.
 * Text is always set as text, never parsed as HTML.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** svg builds an SVG element with attributes. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

export const stateLabels = {
  up: "up", degraded: "degraded", down: "down", unknown: "not reported", never_seen: "never seen",
  unmanaged: "unmanaged",
};

/** badge renders a state as a coloured pill with a text label. */
export function badge(state) {
  return h("span", { class: `badge ${state}` }, stateLabels[state] || state);
}

/** severity orders tunnel states, worst first when sorting descending. */
export function severity(state) {
  return { down: 3, degraded: 2, unknown: 1, up: 0 }[state] ?? 1;
}

/** transportOf names the transport(s) a tunnel runs over. */
export function transportOf(t) {
  return t.a.transport === t.b.transport ? t.a.transport : `${t.a.transport}–${t.b.transport}`;
}

export function fmtMs(v) {
  return v === undefined || v === null ? "—" : `${v.toFixed(v < 10 ? 1 : 0)} ms`;
}

export function fmtPct(v) {
  return v === undefined || v === null ? "—" : `${v.toFixed(v < 10 ? 1 : 0)} %`;
}

export function fmtBytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** relTime renders a time as "5 s ago", "3 min ago", … with the ISO time as title. */
export function relTime(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const t = new Date(iso);
  const s = Math.max(0, Math.round((Date.now() - t.getTime()) / 1000));
  let text;
  if (s < 60) text = `${s} s ago`;
  else if (s < 3600) text = `${Math.floor(s / 60)} min ago`;
  else if (s < 86400) text = `${Math.floor(s / 3600)} h ago`;
  else text = t.toLocaleDateString();
  return h("time", { datetime: t.toISOString(), title: t.toLocaleString() }, text);
}

/** siteLink links to a site's page. */
export function siteLink(name) {
  return h("a", { href: `#/sites/${encodeURIComponent(name)}` }, name);
}
