// A small SVG chart of one tunnel's last hour: RTT and jitter (lines, left
// axis, ms), loss (line, right axis, %) and the state over time (coloured
// strip underneath). The server samples a tunnel at every state change and
// otherwise about every 5 s.

import { svg, h } from "./util.js";

const W = 560;
const H = 150;
const PAD = { left: 44, right: 40, top: 10, bottom: 34 };
const STRIP = 10;
const stateColors = { up: "#1a7f37", degraded: "#b35900", down: "#cf222e", unknown: "#8c959f" };

/**
 * historyChart returns a figure for samples
 * [{t, state, rtt_ms?, jitter_ms?, loss_pct?}] over the window ending now.
 */
export function historyChart(samples, windowSeconds = 3600) {
  const now = Date.now();
  const from = now - windowSeconds * 1000;
  const x = (ms) => PAD.left + ((ms - from) / (now - from)) * (W - PAD.left - PAD.right);
  const plotBottom = H - PAD.bottom - STRIP - 6;
  const pts = samples.map((s) => ({ ...s, ms: new Date(s.t).getTime() }));
  const has = (k) => (p) => p[k] !== undefined && p[k] !== null;
  const rtts = pts.filter(has("rtt_ms"));
  const jitters = pts.filter(has("jitter_ms"));
  const losses = pts.filter(has("loss_pct"));
  const maxRTT = Math.max(10, ...rtts.map((p) => p.rtt_ms), ...jitters.map((p) => p.jitter_ms)) * 1.15;
  const yRTT = (v) => plotBottom - (v / maxRTT) * (plotBottom - PAD.top);
  const yLoss = (v) => plotBottom - (Math.min(v, 100) / 100) * (plotBottom - PAD.top);

  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "aria-label": describe(pts, rtts, jitters, losses),
  });
  // Frame and axes.
  root.append(svg("rect", { x: PAD.left, y: PAD.top, width: W - PAD.left - PAD.right, height: plotBottom - PAD.top, class: "chart-frame" }));
  for (const frac of [0, 0.5, 1]) {
    const y = plotBottom - frac * (plotBottom - PAD.top);
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "chart-grid" }));
    if (rtts.length || jitters.length) root.append(svg("text", { x: PAD.left - 4, y: y + 4, class: "chart-axis", "text-anchor": "end" }, `${Math.round(frac * maxRTT)}`));
    if (losses.length) root.append(svg("text", { x: W - PAD.right + 4, y: y + 4, class: "chart-axis" }, `${Math.round(frac * 100)}%`));
  }
  if (rtts.length || jitters.length) root.append(svg("text", { x: 4, y: PAD.top + 8, class: "chart-axis" }, "ms"));
  for (const minAgo of [60, 45, 30, 15, 0]) {
    const xx = x(now - minAgo * 60000);
    root.append(svg("text", { x: xx, y: H - 4, class: "chart-axis", "text-anchor": "middle" }, minAgo ? `-${minAgo} min` : "now"));
  }
  // State strip: each sample's state lasts until the next sample.
  const stripY = H - PAD.bottom - STRIP + 2;
  pts.forEach((p, i) => {
    const x0 = Math.max(x(p.ms), PAD.left);
    const x1 = i + 1 < pts.length ? x(pts[i + 1].ms) : x(now);
    if (x1 <= x0) return;
    root.append(svg("rect", {
      x: x0, y: stripY, width: x1 - x0, height: STRIP,
      fill: stateColors[p.state] || stateColors.unknown, class: `strip ${p.state}`,
    }));
  });
  if (rtts.length) root.append(line(rtts.map((p) => [x(p.ms), yRTT(p.rtt_ms)]), "chart-rtt"));
  if (jitters.length) root.append(line(jitters.map((p) => [x(p.ms), yRTT(p.jitter_ms)]), "chart-jitter"));
  if (losses.length) root.append(line(losses.map((p) => [x(p.ms), yLoss(p.loss_pct)]), "chart-loss"));
  if (!rtts.length && !losses.length) {
    root.append(svg("text", { x: (W + PAD.left - PAD.right) / 2, y: (PAD.top + plotBottom) / 2, class: "chart-empty", "text-anchor": "middle" },
      "No RTT or loss samples: edges do not report probe results yet"));
  }
  return h("figure", { class: "chart-figure" },
    root,
    h("figcaption", {},
      h("span", { class: "key rtt" }, "RTT"), " ",
      jitters.length ? [h("span", { class: "key jitter" }, "jitter"), " "] : null,
      h("span", { class: "key loss" }, "loss"), " ",
      h("span", { class: "muted" }, "· strip: tunnel state · last hour, as seen by this controller")));
}

function line(points, cls) {
  const d = points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
  return svg("path", { d, class: cls, fill: "none" });
}

function describe(pts, rtts, jitters, losses) {
  const parts = [`Last hour of the tunnel: ${pts.length} samples`];
  if (pts.length) parts.push(`now ${pts[pts.length - 1].state}`);
  const downs = pts.filter((p) => p.state === "down").length;
  if (downs) parts.push(`${downs} samples down`);
  if (rtts.length) parts.push(`latest RTT ${rtts[rtts.length - 1].rtt_ms} ms`);
  if (jitters.length) parts.push(`latest jitter ${jitters[jitters.length - 1].jitter_ms} ms`);
  if (losses.length) parts.push(`latest loss ${losses[losses.length - 1].loss_pct} %`);
  return parts.join(", ");
}
