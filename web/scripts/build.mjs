// Build the dashboard: copy the hand-written sources in ui/ and the vendored
// cytoscape (with its licence) into dist/, which is committed and embedded
// into the controller binary. The output depends only on the inputs, so
// `make verify-web` can rebuild and compare.
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
const cytoscape = join(root, "node_modules", "cytoscape");

rmSync(dist, { recursive: true, force: true });
cpSync(join(root, "ui"), dist, { recursive: true });
mkdirSync(join(dist, "vendor"), { recursive: true });
cpSync(join(cytoscape, "dist", "cytoscape.min.js"), join(dist, "vendor", "cytoscape.min.js"));
cpSync(join(cytoscape, "LICENSE"), join(dist, "vendor", "cytoscape.LICENSE.txt"));
console.log("built", dist);
