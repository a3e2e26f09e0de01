/**
 * Headless Chromium through playwright-core (no browser download), launched as
 * sdk/typescript/e2e/browser.ts does: the system's Chromium (`/usr/bin/chromium`, from
 * Debian's `chromium` package; `CHROMIUM` overrides the path), a fresh temporary profile per
 * launch. Kept here, not imported from there, so this package installs on its own.
 */
import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";

const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM)`);
  }
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 30_000 });
}
