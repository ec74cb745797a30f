// Build the console: src/ bundled by esbuild into the Python package's static folder
// (controlplane/api/console/static/, committed: adr/0018-console.md). `--outdir DIR` builds
// elsewhere (the test that checks the committed bundle is this build's output).
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const flag = process.argv.indexOf("--outdir");
const outdir = flag > 0 ? resolve(process.argv[flag + 1])
  : join(here, "..", "controlplane", "api", "console", "static");

mkdirSync(outdir, { recursive: true });
await esbuild.build({
  entryPoints: { app: join(here, "src", "main.js") },
  bundle: true,
  format: "esm",
  target: ["chrome110", "firefox110", "safari16"],
  minify: true,
  legalComments: "eof",
  outdir,
  logLevel: "warning",
});
await esbuild.build({
  entryPoints: { app: join(here, "src", "app.css") },
  bundle: true,
  minify: true,
  outdir,
  logLevel: "warning",
});
for (const file of ["index.html", "favicon.svg"]) {
  copyFileSync(join(here, "src", file), join(outdir, file));
}
console.log(`console built into ${outdir}`);
