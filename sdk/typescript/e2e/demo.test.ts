/**
 * The demo chat in headless Chromium against `herald serve --dev`: two users in two browser
 * contexts (separate storage, separate network), signing in through the page as a person
 * would. The scenarios run in order on the same conversation, which ends as the screenshot
 * in `e2e/artifacts/demo.png`. Every wait is on a selector, bounded by the context's default
 * timeout (10 s; longer where the event itself takes longer), and no latency is asserted, so a
 * slow machine is not a failure (latencies are the load generator's to measure). How soon the
 * client reconnects after each close code is the unit tests' (test/unit/close-codes.test.ts,
 * on a fake clock).
 * Messages go through `rpc("message:send")` to the dev backend built into `serve --dev`, which
 * publishes them over gRPC (the page shows only that backend's `message` events): every
 * message here, queued ones included, takes that path.
 */
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEMO_OUT } from "../demo/build.mjs";
import { connectApi, type Api } from "../test/helpers/grpc.js";
import { launchChromium } from "./browser.js";
import { startDevGateway, type DevGateway } from "./gateway.js";
import { proxyNetwork, type Network } from "./network.js";

const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), "artifacts");

interface User {
  name: string;
  context: BrowserContext;
  page: Page;
  /** Uncaught exceptions in the page. */
  errors: string[];
}

let gateway: DevGateway;
let browser: Browser;
let api: Api;
let ada: User;
let bob: User;
/** Bob's network: the only way from his browser context to the gateway. */
let bobNetwork: Network;

async function signIn(name: string, url = gateway.url): Promise<User> {
  const context = await browser.newContext({
    viewport: { width: 1200, height: 720 },
    locale: "en-US",
    timezoneId: "Europe/London",
  });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await page.goto(url);
  await page.getByTestId("signin-name").fill(name);
  if (name === "ada") await page.screenshot({ path: join(ARTIFACTS, "signin.png") });
  await page.getByTestId("signin-submit").click();
  await page.locator('[data-testid=connection][data-state="connected"]').waitFor();
  await page.locator('[data-testid=messages][data-loaded="true"]').waitFor();
  return { name, context, page, errors };
}

/** The message with `text` (confirmed by the gateway) in `user`'s open room. */
function message(user: User, text: string) {
  return user.page.locator('[data-testid=message][data-status="sent"]', {
    has: user.page.getByTestId("message-text").getByText(text, { exact: true }),
  });
}

/** Types `text` into the composer and sends it with Enter. */
async function send(user: User, text: string): Promise<void> {
  const composer = user.page.getByTestId("composer");
  await composer.fill(text);
  await composer.press("Enter");
}

/** The texts of the messages in `user`'s open room, in order. */
function texts(user: User): Promise<string[]> {
  return user.page.getByTestId("message-text").allTextContents();
}

function member(user: User, name: string, status?: string) {
  const selector = `[data-testid=member][data-user="${name}"]`;
  return user.page.locator(status ? `${selector}[data-status="${status}"]` : selector);
}

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  gateway = await startDevGateway(join(ARTIFACTS, "gateway.log"));
  // The binary compiles the demo in: one built before the last `npm run build:demo` serves
  // an older page than the one these tests are about.
  const served = Buffer.from(await (await fetch(`${gateway.url}/demo.js`)).arrayBuffer());
  if (!served.equals(readFileSync(join(DEMO_OUT, "demo.js")))) {
    throw new Error(
      "target/debug/herald serves another demo.js than crates/gateway/demo/demo.js: " +
        "rebuild the gateway (cargo build -p herald-gateway --bin herald)",
    );
  }
  api = connectApi(gateway.grpcAddr, gateway.apiKey);
  bobNetwork = await proxyNetwork(new URL(gateway.url).host);
  browser = await launchChromium();
  ada = await signIn("ada");
  bob = await signIn("bob", bobNetwork.url);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await bobNetwork?.close();
  api?.close();
  await gateway?.stop();
});

describe("the demo chat between two browsers", () => {
  it("delivers a message and a reaction to the other user", async () => {
    const hello = "Morning! The new gateway build is green 🎉";
    await send(ada, hello);
    await message(bob, hello).waitFor();
    const id = await message(ada, hello).getAttribute("data-id");
    expect(id).toBeTruthy();
    await expect(message(bob, hello).getAttribute("data-id")).resolves.toBe(id);
    await expect(message(bob, hello).getByTestId("message-author").textContent()).resolves.toBe(
      "ada",
    );

    // Bob reacts; Ada sees it, adds hers (2), takes it back (1).
    const chip = (user: User, emoji: string, count: number) =>
      message(user, hello).locator(
        `[data-testid=reaction][data-emoji="${emoji}"][data-count="${count}"]`,
      );
    await message(bob, hello).hover();
    await message(bob, hello).getByTestId("react-tada").click();
    await chip(ada, "🎉", 1).waitFor();
    await expect(chip(ada, "🎉", 1).getAttribute("data-mine")).resolves.toBe("false");

    await chip(ada, "🎉", 1).click();
    await chip(bob, "🎉", 2).waitFor();
    await chip(ada, "🎉", 2).click();
    await chip(bob, "🎉", 1).waitFor();
    await chip(ada, "🎉", 1).waitFor();
    await expect(chip(ada, "🎉", 1).getAttribute("data-mine")).resolves.toBe("false");
    await message(ada, hello).hover();
    await message(ada, hello).getByTestId("react-thumbsup").click();
    await chip(bob, "👍", 1).waitFor();
  });

  it("renders markup in messages as text, and counts unread messages in other rooms", async () => {
    await bob.page.getByTestId("room-random").click();
    await bob.page.locator('[data-testid=messages][data-loaded="true"]').waitFor();
    const markup = `<img src=x onerror="window.__injected=1"> <b>not bold</b> & <script>window.__injected=2</script>`;
    await send(bob, markup);
    await ada.page.locator("[data-testid=unread-random]", { hasText: "1" }).waitFor();
    await ada.page.getByTestId("room-random").click();
    await message(ada, markup).waitFor();
    await expect(ada.page.getByTestId("unread-random").count()).resolves.toBe(0);
    await expect(message(ada, markup).getByTestId("message-text").textContent()).resolves.toBe(
      markup,
    );
    await expect(ada.page.locator("[data-testid=message-text] *").count()).resolves.toBe(0);
    await expect(
      ada.page.evaluate(() => (window as { __injected?: number }).__injected),
    ).resolves.toBeUndefined();
    await ada.page.getByTestId("room-general").click();
    await bob.page.getByTestId("room-general").click();
    await message(bob, "Morning! The new gateway build is green 🎉").waitFor();
  });

  it("shows who is typing, and clears it when the typer goes idle", async () => {
    const typing = ada.page.getByTestId("typing-text");
    const composer = bob.page.getByTestId("composer");
    await composer.click();
    const typed = composer.pressSequentially("On it, deploying to staging", { delay: 20 });
    await typing.getByText("bob is typing…", { exact: true }).waitFor();
    await typed;
    // Bob stops typing (no send, no blur): his client stops after 5 s idle.
    const typedAt = performance.now();
    await typing.waitFor({ state: "detached" });
    expect(performance.now() - typedAt).toBeGreaterThan(3000);
    await composer.press("Enter");
    await message(ada, "On it, deploying to staging").waitFor();
    await expect(typing.count()).resolves.toBe(0);
  });

  it("lists both users with their statuses and shows a status change on the other side", async () => {
    for (const user of [ada, bob]) {
      await member(user, "ada", "online").waitFor();
      await member(user, "bob", "online").waitFor();
    }
    await expect(ada.page.getByTestId("member").count()).resolves.toBe(2);
    await bob.page.getByTestId("status-picker").selectOption("away");
    await member(ada, "bob", "away").waitFor();
    await member(bob, "bob", "away").waitFor();
    await bob.page.getByTestId("status-picker").selectOption("online");
    await member(ada, "bob", "online").waitFor();
  });

  it("reconnects by itself when the gateway closes the socket (4201), missing nothing", async () => {
    const before = (await texts(bob)).length;
    await expect(api.disconnect("bob", 4201, "e2e: reconnect now")).resolves.toBeGreaterThan(0);
    const text = "Did the deploy bot just restart?";
    await send(ada, text);
    await message(bob, text).waitFor();
    await bob.page.locator('[data-testid=connection][data-state="connected"]').waitFor();
    await expect(bob.page.getByTestId("connection").getAttribute("data-last-close")).resolves.toBe(
      "4201",
    );
    const after = await texts(bob);
    expect(after.slice(before)).toEqual([text]);
  });

  it("recovers what a user missed while offline, once and in order, and sends what they queued", async () => {
    // Bob's network drops: his WebSocket's TCP connection dies, and new ones fail.
    bobNetwork.down();
    await bob.page.locator('[data-testid=connection]:not([data-state="connected"])').waitFor();
    // The browser says so too (`offline` event, failed connects), and later `online`.
    await bob.context.setOffline(true);
    await member(ada, "bob").waitFor({ state: "detached" });

    // Bob writes while offline: queued, shown in the banner.
    const queued = "Back! My train went through a tunnel 🚇";
    await send(bob, queued);
    await bob.page.locator('[data-testid=offline-banner][data-queued="1"]').waitFor();
    await bob.page
      .locator('[data-testid=message][data-status="queued"]', { hasText: queued })
      .waitFor();
    await bob.page.screenshot({ path: join(ARTIFACTS, "offline.png") });

    const missed = [
      "While you were out: migrations ran cleanly",
      "Error rate is flat at 0.01%",
      "Ready for the canary whenever you are",
    ];
    for (const text of missed) {
      await send(ada, text);
      await message(ada, text).waitFor();
    }
    for (const text of missed) await expect(message(bob, text).count()).resolves.toBe(0);

    bobNetwork.up();
    await bob.context.setOffline(false);
    await bob.page.locator('[data-testid=connection][data-state="connected"]').waitFor({
      timeout: 15_000,
    });
    await message(bob, missed[2]!).waitFor();
    const bobTexts = await texts(bob);
    expect(bobTexts.filter((text) => missed.includes(text))).toEqual(missed);
    // Bob's queued message went out after the reconnect: once, after Ada's three.
    await message(ada, queued).waitFor();
    const adaTexts = await texts(ada);
    expect(adaTexts.filter((text) => text === queued)).toHaveLength(1);
    expect(adaTexts.slice(-4)).toEqual([...missed, queued]);
    await bob.page.getByTestId("offline-banner").waitFor({ state: "detached" });
    await member(ada, "bob", "online").waitFor();
    expect((await texts(bob)).slice(-4)).toEqual([...missed, queued]);
  });

  it("looks like a chat (screenshot)", async () => {
    await message(ada, "Back! My train went through a tunnel 🚇").hover();
    await message(ada, "Back! My train went through a tunnel 🚇").getByTestId("react-joy").click();
    await message(bob, "Back! My train went through a tunnel 🚇")
      .locator('[data-testid=reaction][data-emoji="😂"][data-count="1"]')
      .waitFor();
    await bob.page.getByTestId("status-picker").selectOption("away");
    await member(ada, "bob", "away").waitFor();
    await send(bob, "Canary it is. Rolling out to 5% now");
    await message(ada, "Canary it is. Rolling out to 5% now").waitFor();
    await ada.page.getByTestId("composer").click();
    await ada.page.getByTestId("composer").pressSequentially("Great, watching the dashboards", {
      delay: 10,
    });
    await bob.page.getByTestId("typing-text").waitFor();
    // Bob's view: the indicator of Ada typing, the conversation, the members.
    await bob.page.mouse.move(600, 60);
    await bob.page.locator("[data-testid=latency]").waitFor();
    await bob.page.screenshot({ path: join(ARTIFACTS, "demo.png") });
  });

  it("comes back by itself when the dev gateway restarts with a new secret and no history", async () => {
    await gateway.restart();
    for (const user of [ada, bob]) {
      // The old token is refused (4001); the page fetches a new one and reconnects, finds
      // the channel's history gone (state_lost) and reloads the empty room.
      await user.page.locator('[data-testid=connection][data-state="connected"]').waitFor({
        timeout: 10_000,
      });
      await user.page.getByTestId("message").first().waitFor({ state: "detached" });
      await user.page.locator('[data-testid=messages][data-loaded="true"]').waitFor();
    }
    await send(ada, "Fresh start");
    await message(bob, "Fresh start").waitFor();
    await member(ada, "bob").waitFor();
    await member(bob, "ada").waitFor();
    for (const user of [ada, bob]) expect(user.errors).toEqual([]);
  });
});
