// `npm run size`: bundles the built package (dist/) with esbuild, minified, and prints the
// raw and gzip sizes of the core entry and of the React entry (react itself external). Code
// splitting is on, as in an application's bundler: the protobuf codec, imported only for
// `protocol: "protobuf"`, is a chunk of its own, printed apart.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";

const entries = [
  ["herald-client", "dist/index.js"],
  ["herald-client/react (hooks only)", "dist/react/index.js"],
];

function line(name, code) {
  const gzip = gzipSync(code, { level: 9 });
  console.log(
    `${name.padEnd(32)} ${(code.length / 1024).toFixed(1).padStart(6)} KiB minified   ${(gzip.length / 1024).toFixed(1).padStart(5)} KiB gzip`,
  );
}

for (const [name, entry] of entries) {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2020",
    external: ["react"],
    splitting: true,
    outdir: "out",
    write: false,
    logLevel: "warning",
  });
  const [main, ...chunks] = result.outputFiles;
  line(name, main.contents);
  if (chunks.length > 0) {
    const lazy = Buffer.concat(chunks.map((chunk) => chunk.contents));
    line("  + protobuf codec, on demand", lazy);
  }
}
