import WebSocket from "ws";
import { afterAll, describe, expect, it } from "vitest";
import { createClient, HeraldError, type Publication } from "../../src/index.js";
import { active, makeClient, reach } from "../helpers/clients.js";
import { CHAT_NAMESPACE } from "../helpers/gateway.js";
import { gatewayWithApi } from "../helpers/grpc.js";
import { mintSubscriptionToken, mintToken } from "../helpers/token.js";
import { waitFor } from "../helpers/wait.js";

const { gateway } = await gatewayWithApi({ config: CHAT_NAMESPACE });

afterAll(async () => {
  await gateway.stop();
});

/**
 * A `ws` WebSocket that, once armed, loses the connection right after the gateway answers
 * the next `publish`: the reply never reaches the client, as when a network drops.
 */
class LosingWebSocket extends WebSocket {
  static armed = false;

  override send(data: any, ...rest: any[]): void {
    (super.send as (...args: unknown[]) => void)(data, ...rest);
    if (!LosingWebSocket.armed || typeof data !== "string" || !data.includes('"publish":')) {
      return;
    }
    LosingWebSocket.armed = false;
    // The client's handler goes; the first frame after the publish (its reply) ends it all.
    this.removeAllListeners("message");
    this.once("message", () => this.terminate());
  }
}

describe("client API against the gateway", () => {
  it("connect() resolves once connected, and rejects when the token is refused", async () => {
    const { client } = makeClient(gateway, "amy");
    await client.connect();
    expect(client.getConnectionState()).toBe("connected");
    await client.connect();
    client.disconnect();

    const impostor = createClient({
      url: gateway.wsUrl,
      WebSocket,
      getToken: () => mintToken("y".repeat(40), { sub: "amy" }),
    });
    const error = await impostor.connect().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HeraldError);
    expect((error as HeraldError).temporary).toBe(false);
    expect(impostor.getConnectionState()).toBe("disconnected");
  });

  it("connects on the first subscribe, routes handlers, and unsubscribes by channel", async () => {
    const channel = "chat:acme:api";
    const bob = makeClient(gateway, "bob").client;
    const seen: unknown[] = [];
    const sub = bob.subscribeToChannel<{ m: { n: number } }>(channel, {
      m: (data) => seen.push(data.n),
    });
    await active(sub);
    expect(bob.getConnectionState()).toBe("connected");
    expect(await bob.presenceStats(channel)).toEqual({ users: 1, clients: 1 });

    const alice = makeClient(gateway, "alice").client;
    await alice.connect();
    const got = waitFor<Publication>("a publication", (cb) => sub.on("m", (_d, pub) => cb(pub)));
    await alice.publish(channel, "m", { n: 1 });
    await got;
    expect(seen).toEqual([1]);

    bob.unsubscribe(channel);
    expect(sub.state).toBe("ended");
    // Subscribed by alice now: bob's membership is gone once the unsubscribe went through.
    const aliceSub = alice.subscribe(channel);
    await active(aliceSub);
    await waitFor<{ clients: number }>(
      "bob's membership to end",
      (cb) => {
        const timer = setInterval(() => {
          alice.presenceStats(channel).then(cb, () => {});
        }, 50);
        return () => clearInterval(timer);
      },
      (stats) => stats.clients === 1,
    );
    alice.disconnect();
    bob.disconnect();
  });

  it("subscribes with a fixed subscription token", async () => {
    const channel = "org:gamma:fixed";
    const { client } = makeClient(gateway, "sam");
    const sub = client.subscribe(channel, {
      token: mintSubscriptionToken(gateway.secret, "sam", channel, 60),
    });
    await active(sub);
    client.disconnect();
  });

  it("publishes once per idempotency key", async () => {
    const channel = "chat:acme:idem";
    const alice = makeClient(gateway, "alice").client;
    await alice.connect();
    const first = await alice.publish(channel, "m", 1, { idempotencyKey: "k-1" });
    const again = await alice.publish(channel, "m", 1, { idempotencyKey: "k-1" });
    expect(again).toEqual(first);
    const history = await alice.history(channel);
    expect(history.publications.map((p) => p.data)).toEqual([1]);
    alice.disconnect();
  });

  it("sends a publish whose reply was lost again after the reconnect: applied once, resolved", async () => {
    const channel = "chat:acme:lost";
    const bob = makeClient(gateway, "bob").client;
    const bobSub = bob.subscribe(channel);
    await active(bobSub);
    const seen: unknown[] = [];
    bobSub.on("m", (data) => seen.push(data));

    const alice = makeClient(gateway, "alice", { WebSocket: LosingWebSocket }).client;
    await alice.connect();
    const first = alice.getClientId();
    LosingWebSocket.armed = true;
    const result = await alice.publish(channel, "m", "once");
    expect(alice.getClientId()).not.toBe(first);
    expect(result.offset).toBe(1);
    const history = await alice.history(channel);
    expect(history.publications.map((p) => p.data)).toEqual(["once"]);
    if (seen.length === 0) await waitFor("bob's copy", (cb) => bobSub.on("m", cb));
    expect(seen).toEqual(["once"]);
    alice.disconnect();
    bob.disconnect();
  });

  it("fails a message over the size limit locally and stays connected", async () => {
    const channel = "chat:acme:big";
    const alice = makeClient(gateway, "alice").client;
    await alice.connect();
    const states: string[] = [];
    alice.onConnectionChange((state) => states.push(state));
    const error = await alice
      .publish(channel, "m", "x".repeat(70_000))
      .catch((e: HeraldError) => e.code);
    expect(error).toBe("message_too_large");
    const ok = await alice.publish(channel, "m", "small");
    expect(ok.offset).toBeGreaterThan(0);
    expect(states).toEqual([]);
    await reach(alice, "connected");
    alice.disconnect();
  });
});
