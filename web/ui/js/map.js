// The topology map: sites as nodes (hubs drawn as dark rounded squares),
// tunnels as edges coloured by health. Several tunnels between the same two
// sites (one per transport) are drawn as separate curved edges, each
// labelled with its transport. Layout is cytoscape's: breadth-first from
// the hubs for hub-and-spoke, a circle otherwise. It only runs
// when the set of sites changes, so live updates never move anything.

import { transportOf } from "./util.js";

const colors = {
  up: "#1a7f37", degraded: "#b35900", down: "#cf222e", unknown: "#8c959f", never_seen: "#8c959f", unmanaged: "#0969da",
};

const style = [
  {
    selector: "node",
    style: {
      label: "data(label)",
      "font-family": "system-ui, sans-serif",
      "font-size": 13,
      color: "#1f2328",
      "text-valign": "bottom",
      "text-margin-y": 6,
      "text-background-color": "#ffffff",
      "text-background-opacity": 0.85,
      "text-background-padding": 2,
      width: 34,
      height: 34,
      shape: "ellipse",
      "background-color": "#ffffff",
      "border-width": 4,
      "border-color": (n) => colors[n.data("state")] || colors.unknown,
    },
  },
  {
    selector: "node.hub",
    style: {
      shape: "round-rectangle",
      width: 50,
      height: 50,
      "background-color": "#24292f",
      "font-weight": "bold",
    },
  },
  {
    selector: "edge",
    style: {
      "curve-style": "bezier",
      "control-point-step-size": 36,
      width: 3,
      "line-color": (e) => colors[e.data("state")] || colors.unknown,
      label: "data(label)",
      "font-size": 10,
      color: "#57606a",
      "text-rotation": "autorotate",
      "text-background-color": "#ffffff",
      "text-background-opacity": 0.9,
      "text-background-padding": 1,
    },
  },
  { selector: "edge.degraded", style: { "line-style": "dashed", width: 4 } },
  { selector: "edge.down", style: { width: 5 } },
  { selector: "edge.unknown", style: { "line-style": "dotted" } },
  // Selection: a blue halo behind the element, leaving its health colour intact.
  { selector: ":selected", style: { "underlay-color": "#0969da", "underlay-opacity": 0.25, "underlay-padding": 7 } },
];

export class TopologyMap {
  /**
   * @param {HTMLElement} container
   * @param {{onSite: function(string), onTunnel: function(string), onNone: function()}} handlers
   */
  constructor(container, handlers) {
    this.container = container;
    this.handlers = handlers;
    this.cy = null;
    this.nodeKey = "";
    this.mode = "";
  }

  /** render brings the map in line with the state. */
  render(state) {
    if (!window.cytoscape) return;
    if (!this.cy) this.init();
    const cy = this.cy;
    const sites = state.sites || [];
    const tunnels = state.tunnels || [];
    const wanted = new Set();
    cy.batch(() => {
      for (const s of sites) {
        const id = `site:${s.name}`;
        wanted.add(id);
        const data = { id, site: s.name, label: s.name, state: s.state, role: s.role };
        let n = cy.getElementById(id);
        if (n.empty()) n = cy.add({ group: "nodes", data });
        else n.data(data);
        n.classes([s.role === "hub" ? "hub" : "spoke", s.state]);
      }
      for (const t of tunnels) {
        wanted.add(t.id);
        const data = {
          id: t.id, tunnel: t.id, source: `site:${t.a.site}`, target: `site:${t.b.site}`,
          label: transportOf(t), state: t.state,
        };
        let e = cy.getElementById(t.id);
        if (e.empty()) e = cy.add({ group: "edges", data });
        else e.data(data);
        e.classes([t.state]);
      }
      cy.elements().filter((el) => !wanted.has(el.id())).remove();
    });
    const key = sites.map((s) => `${s.name}/${s.role}`).sort().join(",");
    if (key !== this.nodeKey || state.topology !== this.mode) {
      this.nodeKey = key;
      this.mode = state.topology;
      this.layout();
    }
  }

  init() {
    this.cy = window.cytoscape({
      container: this.container,
      style,
      minZoom: 0.3,
      maxZoom: 3,
      wheelSensitivity: 0.3,
      boxSelectionEnabled: false,
      autoungrabify: false,
    });
    this.cy.on("tap", "node", (ev) => this.handlers.onSite(ev.target.data("site")));
    this.cy.on("tap", "edge", (ev) => this.handlers.onTunnel(ev.target.data("tunnel")));
    this.cy.on("tap", (ev) => { if (ev.target === this.cy) this.handlers.onNone(); });
  }

  layout() {
    const cy = this.cy;
    if (cy.nodes().empty()) return;
    const hubs = cy.nodes(".hub").length;
    // Hub-and-spoke: hubs in a row on top, spokes below. Otherwise (full
    // mesh, or no hub) a circle, which shows every pair equally.
    const opts = this.mode === "hub-and-spoke" && hubs > 0
      ? { name: "breadthfirst", roots: cy.nodes(".hub"), directed: false, spacingFactor: 1.1, avoidOverlap: true }
      : { name: "circle" };
    cy.layout({ ...opts, animate: false, fit: true, padding: 40 }).run();
  }

  /** resize re-fits the map after its container became visible or changed size. */
  resize() {
    if (!this.cy) return;
    this.cy.resize();
    this.cy.fit(undefined, 40);
  }

  select(id) {
    if (!this.cy) return;
    this.cy.elements().unselect();
    if (id) this.cy.getElementById(id).select();
  }
}
