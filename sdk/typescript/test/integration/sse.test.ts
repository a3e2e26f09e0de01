/**
 * The same connect / subscribe / recover behaviour over the SSE fallback (`GET /sse` +
 * `POST /rpc`).
 */
import { describe, expect, it } from "vitest";
import type { SubscribedInfo, WebSocketConstructor } from "../../src/index.js";
import { active, makeClient, reach } from "../helpers/clients.js";
import { gatewayWithApi } from "../helpers/grpc.js";
import { publishThroughDisconnect } from "../helpers/scenarios.js";
import { waitFor } from "../helpers/wait.js";

const { gateway, api } = await gatewayWithApi();
// Pings every second and a 1 s pong timeout: an SSE client that did not answer would be
// closed 4202 within about two seconds.
const fast = await gatewayWithApi({
  env: { HERALD_PING_INTERVAL_SECONDS: "1", HERALD_PONG_TIMEOUT_SECONDS: "1" },
});

/** A WebSocket whose handshake always fails, as behind a proxy that strips Upgrade. */
class BlockedWebSocket {
  readyState = 0;
  onopen: (() => void) | null = null;
  onmessage: ((event: unknown) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  static attempts = 0;
  constructor() {
    BlockedWebSocket.attempts += 1;
    setTimeout(() => {
      this.readyState = 3;
      this.onerror?.({});
      this.onclose?.({ code: 1006, reason: "" });
    }, 1);
  }
  send() {}
  close() {}
}

describe("over SSE", () => {
  it("connects, subscribes and receives a gRPC publish", async () => {
    const { client } = makeClient(gateway, "sid", { transport: "sse" });
    client.connect();
    await reach(client, "connected");
    expect(client.getTransport()).toBe("sse");
    const sub = client.subscribe(channelName("basic"));
    await active(sub);
    const received = waitFor<unknown>("the publication", (cb) => sub.on("message.created", cb));
    await api.publish(channelName("basic"), "message.created", { id: "m1" });
    expect(await received).toEqual({ id: "m1" });
    const history = await client.history(channelName("basic"));
    expect(history.publications).toHaveLength(1);
    client.disconnect();
  });

  it("recovers after a 4201 close: every publication once, in order", async () => {
    const { client } = makeClient(gateway, "sue", { transport: "sse" });
    const run = await publishThroughDisconnect(api, client, "sue", channelName("recover"), 4201);
    expect(run.closes).toEqual([4201]);
    expect(run.recovered.recovered).toBe(true);
    expect(run.stateLost).toBe(false);
    expect(run.seen).toEqual(Array.from({ length: run.published }, (_, i) => i + 1));
    expect(client.getTransport()).toBe("sse");
    client.disconnect();
  });

  it("recovers a channel first published while it was away, from its unpublished position", async () => {
    const channel = channelName("first-while-away");
    const { client } = makeClient(gateway, "ursula", {
      transport: "sse",
      backoff: { initialMs: 300, jitterMs: 100 },
    });
    client.connect();
    const sub = client.subscribe<{ n: { n: number } }>(channel);
    await active(sub);
    // Nobody published yet: a placeholder position, kept for recovery like an epoch.
    expect(sub.position?.offset).toBe(0);
    expect(sub.position?.epoch.startsWith("~")).toBe(true);
    const seen: number[] = [];
    sub.on("n", (data) => seen.push(data.n));
    const third = waitFor<{ n: number }>(
      "the third publication",
      (cb) => sub.on("n", cb),
      (data) => data.n === 3,
    );
    const recovered = waitFor<SubscribedInfo>("recovered", (cb) => sub.on("recovered", cb));
    expect(await api.disconnect("ursula", 4201, "test")).toBe(1);
    for (let n = 1; n <= 3; n++) await api.publish(channel, "n", { n });
    expect((await recovered).recovered).toBe(true);
    await third;
    expect(seen).toEqual([1, 2, 3]);
    client.disconnect();
  });

  it("falls back from a WebSocket whose handshake fails twice (transport auto)", async () => {
    BlockedWebSocket.attempts = 0;
    const { client } = makeClient(gateway, "fallback", {
      WebSocket: BlockedWebSocket as unknown as WebSocketConstructor,
      backoff: { initialMs: 10, jitterMs: 10 },
    });
    client.connect();
    await reach(client, "connected");
    expect(client.getTransport()).toBe("sse");
    expect(BlockedWebSocket.attempts).toBe(2);
    const sub = client.subscribe(channelName("fallback"));
    await active(sub);
    client.disconnect();
  });

  it("emits state_lost after a gateway restart", async () => {
    const channel = channelName("restart");
    const { client } = makeClient(gateway, "rex", {
      transport: "sse",
      backoff: { initialMs: 100, jitterMs: 100 },
    });
    client.connect();
    const sub = client.subscribe(channel);
    await active(sub);
    const first = waitFor("the first publication", (cb) => sub.on("*", cb));
    await api.publish(channel, "m", { x: 1 });
    await first;
    const lost = waitFor<SubscribedInfo>(
      "state_lost",
      (cb) => sub.on("state_lost", cb),
      () => true,
      20_000,
    );
    await gateway.kill();
    await reach(client, "reconnecting");
    await gateway.start();
    expect((await lost).recovered).toBe(false);
    expect(client.getTransport()).toBe("sse");
    client.disconnect();
  });
});

describe("over SSE, with a heartbeat every second", () => {
  it("answers the pings and stays connected", async () => {
    const { client } = makeClient(fast.gateway, "pinged", { transport: "sse" });
    const disconnects: unknown[] = [];
    client.on("disconnected", (info) => disconnects.push(info));
    client.connect();
    await reach(client, "connected");
    const sub = client.subscribe(channelName("pinged"));
    await active(sub);
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    expect(disconnects).toEqual([]);
    const received = waitFor<unknown>("the publication", (cb) => sub.on("message.created", cb));
    await fast.api.publish(channelName("pinged"), "message.created", { id: "after pings" });
    expect(await received).toEqual({ id: "after pings" });
    expect(disconnects).toEqual([]);
    client.disconnect();
  }, 15_000);
});

function channelName(name: string): string {
  return `org:acme:ch:sse-${name}`;
}
