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

function channelName(name: string): string {
  return `org:acme:ch:sse-${name}`;
}
