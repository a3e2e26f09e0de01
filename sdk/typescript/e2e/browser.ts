/**
 * Headless Chromium for the browser tests (the demo's, and sdk/socketio-tests'), through
 * playwright-core (no browser download): the system's Chromium (`/usr/bin/chromium`, from
 * Debian's `chromium` package; `CHROMIUM` overrides the path). Playwright gives each launch
 * a fresh, temporary profile directory and removes it on close.
 */
import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";

export const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";

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
