// Builds the demo chat into the gateway's crate (`npm run build:demo`): one minified ES module
// with React and the SDK inside (demo.js), its stylesheet (demo.css) and the page (index.html),
// which `herald serve --dev` compiles in with include_str!. The output holds no timestamps or
// paths, so the same sources always give the same bytes: build.test.ts rebuilds into a
// temporary directory and fails when the committed files differ.
import { build } from "esbuild";
import { copyFileSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

/** The SDK's root (sdk/typescript). */
export const SDK_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** Where the gateway takes the demo from. */
export const DEMO_OUT = resolve(SDK_ROOT, "../../crates/gateway/demo");
/** The files of a build. */
export const DEMO_FILES = ["index.html", "demo.js", "demo.css"];

/** The esbuild options of the demo, writing into `outdir`. */
export function demoBuildOptions(outdir) {
  return {
    absWorkingDir: SDK_ROOT,
    entryPoints: { demo: "demo/main.tsx" },
    outdir,
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2020",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"production"' },
    legalComments: "eof",
    sourcemap: false,
    banner: {
      js: "/* The demo chat bundle, built from sdk/typescript/demo (npm run build:demo). */",
      css: "/* The demo chat styles, built from sdk/typescript/demo (npm run build:demo). */",
    },
    logLevel: "warning",
  };
}

/** Builds the demo into `outdir`. */
export async function buildDemo(outdir) {
  await build(demoBuildOptions(outdir));
  copyFileSync(join(SDK_ROOT, "demo/index.html"), join(outdir, "index.html"));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await buildDemo(DEMO_OUT);
  for (const file of DEMO_FILES) {
    const bytes = readFileSync(join(DEMO_OUT, file));
    const kib = (n) => `${(n / 1024).toFixed(1)} KiB`.padStart(10);
    console.log(
      `crates/gateway/demo/${file.padEnd(10)} ${kib(bytes.length)}  ${kib(gzipSync(bytes, { level: 9 }).length)} gzip`,
    );
  }
  console.log("now rebuild the gateway: cargo build -p herald-gateway --bin herald");
}
