/**
 * The socket.io-client browser bundle (`dist/socket.io.min.js` of the pinned package) in
 * headless Chromium: a page served here loads it, connects over the WebSocket transport with
 * `auth: { token }`, subscribes with an ack, receives a publication as an event, and gets the
 * backend's reply to an `emitWithAck`. Against the reference socket.io server (so the case is
 * known to test the protocol), then Herald (publishing over gRPC, the page's origin on
 * `HERALD_ALLOWED_ORIGINS`). Herald is skipped, with the reason, when there is no binary or it
 * has no Socket.IO endpoint; `HERALD_SOCKETIO_REQUIRED=1` makes that a failure.
 */
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHerald } from "../test/helpers/herald.js";
import { startReference } from "../test/helpers/reference.js";
import type { Target } from "../test/helpers/target.js";
import { mintToken } from "../test/helpers/token.js";
import { launchChromium } from "../../typescript/e2e/browser.js";

const BUNDLE = join(
  dirname(createRequire(import.meta.url).resolve("socket.io-client/package.json")),
  "dist/socket.io.min.js",
);
const APP = join(dirname(fileURLToPath(import.meta.url)), "app.html");

/** Serves the page app at `/` and the bundle it loads at `/socket.io.min.js`, on loopback. */
async function servePage(): Promise<{ origin: string; close: () => Promise<void> }> {
  const files: Record<string, [string, Buffer]> = {
    "/": ["text/html; charset=utf-8", readFileSync(APP)],
    "/socket.io.min.js": ["text/javascript; charset=utf-8", readFileSync(BUNDLE)],
  };
  const server = createServer((request, response) => {
    const file = files[request.url ?? ""];
    if (!file) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": file[0] }).end(file[1]);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** What `window.app` in app.html offers. */
interface PageApp {
  connect(url: string, token: string): Promise<{ id: string; transport: string }>;
  request(event: string, ...args: unknown[]): Promise<unknown>;
  event(name: string): Promise<unknown>;
  close(): void;
}

/** Calls `window.app[method](...args)` in `page`, resolving with what it resolves with. */
function inPage<M extends keyof PageApp>(
  page: Page,
  method: M,
  ...args: Parameters<PageApp[M]>
): Promise<Awaited<ReturnType<PageApp[M]>>> {
  return page.evaluate(
    ([name, values]) =>
      (globalThis as unknown as { app: Record<string, (...args: unknown[]) => unknown> }).app[
        name
      ]!(...values),
    [method, args] as const,
  ) as Promise<Awaited<ReturnType<PageApp[M]>>>;
}

const site = await servePage();
const herald = await startHerald({ HERALD_ALLOWED_ORIGINS: site.origin });
let browser: Browser | undefined;

beforeAll(async () => {
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await site.close();
});

function bundleSuite(start: () => Promise<Target>): void {
  let target: Target | undefined;
  beforeAll(async () => {
    target = await start();
  });
  afterAll(() => target?.stop());

  it("connects over WebSocket with auth.token, subscribes with an ack, receives a publication, gets emitWithAck's reply", async () => {
    if (!browser || !target) throw new Error("the browser or the target did not start");
    const user = "ada";
    const channel = "org:acme:ch:browser";
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(error.message));
      await page.goto(`${site.origin}/`);

      const token = mintToken(target.secret, { sub: user });
      const connected = await inPage(page, "connect", target.url, token);
      expect(connected).toEqual({ id: expect.any(String), transport: "websocket" });
      expect(connected.id).not.toBe("");
      expect(await inPage(page, "request", "herald:subscribe", channel)).toMatchObject({
        ok: true,
      });
      await target.publish(channel, "message:new", { text: "hi from the backend", n: 1 });
      expect(await inPage(page, "event", "message:new")).toEqual({
        text: "hi from the backend",
        n: 1,
      });
      expect(await inPage(page, "request", "echo", { n: 2, text: "hé" })).toEqual({
        user,
        data: { n: 2, text: "hé" },
      });
      await inPage(page, "close");
      expect(errors).toEqual([]);
    } finally {
      await context.close();
    }
  });
}

describe("reference socket.io server", () => bundleSuite(startReference));

if (!("unavailable" in herald)) {
  describe("Herald", () => bundleSuite(async () => herald));
} else if (process.env["HERALD_SOCKETIO_REQUIRED"] === "1") {
  it("has a herald binary with Socket.IO", () => {
    throw new Error(herald.unavailable);
  });
} else {
  console.warn(`the bundle against Herald skipped: ${herald.unavailable}`);
  describe.skip(`Herald skipped: ${herald.unavailable}`, () =>
    bundleSuite(() => Promise.reject(new Error(herald.unavailable))));
}
