// Onboarding: create an enrollment token for a site and show the exact
// meshwan-edge command to run on its edge.

import { h, stateLabels } from "./util.js";
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

  /** render keeps the site list current, never-seen sites first. */
  render(state) {
    const select = $("token-site");
    const keep = select.value;
    const order = { never_seen: 0, down: 1, up: 2 };
    const sites = [...(state.sites || [])].sort((a, b) => (order[a.state] - order[b.state]) || a.name.localeCompare(b.name));
    select.replaceChildren(...sites.map((s) => h("option", { value: s.name }, `${s.name} (${stateLabels[s.state] || s.state})`)));
    if (sites.some((s) => s.name === keep)) select.value = keep;
    $("token-create").disabled = sites.length === 0;
    if (!sites.length) $("token-error").textContent = "Declare a site first: there is none to enroll.";
    else if ($("token-error").textContent.startsWith("Declare")) $("token-error").textContent = "";
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
