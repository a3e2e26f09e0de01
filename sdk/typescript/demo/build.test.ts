/**
 * The demo bundle the gateway compiles in (crates/gateway/demo) must be what the sources in
 * demo/ build to: rebuild into a temporary directory with the same options and compare bytes.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { buildDemo, DEMO_FILES, DEMO_OUT } from "./build.mjs";

const out = mkdtempSync(join(tmpdir(), "herald-demo-build-"));

afterAll(() => rmSync(out, { recursive: true, force: true }));

describe("the committed demo bundle", () => {
  it("is what demo/ builds to", { timeout: 60_000 }, async () => {
    await buildDemo(out);
    const stale = DEMO_FILES.filter((file) => {
      const built = readFileSync(join(out, file));
      let committed: Buffer;
      try {
        committed = readFileSync(join(DEMO_OUT, file));
      } catch {
        return true;
      }
      return !built.equals(committed);
    });
    expect(
      stale,
      `crates/gateway/demo/{${stale.join(",")}} differ from a build of sdk/typescript/demo: ` +
        "run npm run build:demo and rebuild the gateway (cargo build -p herald-gateway --bin herald)",
    ).toEqual([]);
  });
});
