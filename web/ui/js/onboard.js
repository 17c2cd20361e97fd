// Onboarding: create an enrollment token for a site and show the exact
// meshwan-edge command to run on its edge.

import { h, stateLabels, relTime } from "./util.js";
import * as api from "./api.js";

const $ = (id) => document.getElementById(id);

/**
 * edgeCommand is the command a new edge runs. HOST is the name the browser
 * reached the controller by; the port is the controller's gRPC port.
 */
export function edgeCommand(host, grpcPort, token) {
  return `meshwan-edge --controller ${host}:${grpcPort} --token ${token} --state-dir /var/lib/meshwan`;
}

export class Onboarding {
  constructor(getState) {
    this.getState = getState;
    $("token-form").addEventListener("submit", (ev) => { ev.preventDefault(); this.create(); });
    $("copy-command").addEventListener("click", () => this.copy());
  }

  /** render keeps the site list and the devices current. */
  render(state) {
    this.renderDevices(state);
    const select = $("token-site");
    const keep = select.value;
    const order = { never_seen: 0, down: 1, up: 2 };
    // An unmanaged site has no edge to enroll: configure its router from the export.
    const sites = [...(state.sites || [])].filter((s) => s.state !== "unmanaged").sort((a, b) => (order[a.state] - order[b.state]) || a.name.localeCompare(b.name));
    select.replaceChildren(...sites.map((s) => h("option", { value: s.name }, `${s.name} (${stateLabels[s.state] || s.state})`)));
    if (sites.some((s) => s.name === keep)) select.value = keep;
    $("token-create").disabled = sites.length === 0;
    if (!sites.length) $("token-error").textContent = "Declare a site first: there is none to enroll.";
    else if ($("token-error").textContent.startsWith("Declare")) $("token-error").textContent = "";
  }

  /**
   * renderDevices lists the claimed devices; a pending one gets a site
   * choice (sites without an edge first) and Approve / Reject buttons.
   */
  renderDevices(state) {
    const box = $("devices");
    if (box.contains(document.activeElement) && document.activeElement.tagName === "SELECT") return; // do not reset a choice in progress
    const devices = state.devices || [];
    const free = (state.sites || []).filter((s) => !s.cert || s.cert.revoked).map((s) => s.name);
    const rows = devices.map((d) => {
      let action = "—";
      if (d.state === "pending") {
        const select = h("select", { "aria-label": `Site for ${d.id}`, "data-device-site": d.id },
          ...free.map((n) => h("option", { value: n }, n)));
        const approve = h("button", { type: "button", class: "primary", "data-approve": d.id, disabled: free.length ? null : "" }, "Approve");
        const reject = h("button", { type: "button", "data-reject": d.id }, "Reject");
        approve.addEventListener("click", () => this.decide(d.id, select.value));
        reject.addEventListener("click", () => this.decide(d.id, null));
        action = h("span", { class: "device-actions" }, select, approve, reject);
      }
      return h("tr", { "data-device": d.id, class: `device-${d.state}` },
        h("th", { scope: "row", class: "mono" }, d.id),
        h("td", {}, d.state),
        h("td", {}, d.site || "—"),
        h("td", {}, d.hostname || "—"),
        h("td", { class: "mono small", title: d.key_sha256 || "" }, (d.key_sha256 || "—").slice(0, 16)),
        h("td", {}, d.last_seen ? relTime(d.last_seen) : "—"),
        h("td", {}, action));
    });
    box.replaceChildren(h("table", { class: "data compact" },
      h("caption", { class: "visually-hidden" }, "Claimed devices"),
      h("thead", {}, h("tr", {}, ["Device", "State", "Site", "Hostname", "Key (SHA-256)", "Last seen", ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No device has claimed yet.")))));
  }

  async decide(id, site) {
    $("device-error").textContent = "";
    try {
      if (site) await api.approveDevice(id, site);
      else await api.rejectDevice(id);
    } catch (err) {
      $("device-error").textContent = `Could not ${site ? "approve" : "reject"} ${id}: ${err.message}`;
    }
  }

  async create() {
    const site = $("token-site").value;
    const ttl = Number($("token-ttl").value);
    const button = $("token-create");
    $("token-error").textContent = "";
    button.disabled = true;
    try {
      const tok = await api.createEnrollmentToken(site, ttl);
      const state = this.getState();
      $("edge-command").textContent = edgeCommand(location.hostname, state.grpc_port, tok.secret);
      $("token-result-site").textContent = site;
      const exp = tok.expires_at ? new Date(tok.expires_at) : null;
      $("token-expires").textContent = exp ? exp.toLocaleString() : "later";
      $("token-ca").textContent = tok.ca_sha256 ? `Controller CA SHA-256: ${tok.ca_sha256}` : "";
      $("copy-status").textContent = "";
      $("token-result").hidden = false;
      const current = (state.sites || []).find((s) => s.name === site);
      if (current && current.state !== "never_seen") {
        $("copy-status").textContent = `Note: ${site} already has an enrolled edge; enrolling again replaces its certificate.`;
      }
    } catch (err) {
      $("token-error").textContent = `Could not create a token: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  }

  async copy() {
    const text = $("edge-command").textContent;
    const status = $("copy-status");
    try {
      if (!navigator.clipboard) throw new Error("no clipboard API");
      await navigator.clipboard.writeText(text);
      status.textContent = "Copied.";
    } catch {
      // Plain HTTP (not a secure context) has no clipboard API: select
      // the text so the user can copy it.
      const range = document.createRange();
      range.selectNodeContents($("edge-command"));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      status.textContent = "Selected: press Ctrl+C to copy.";
    }
  }
}
