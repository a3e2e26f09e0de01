import { status } from "@grpc/grpc-js";
import { beforeAll, describe, expect, it } from "vitest";
import { HeraldError, HeraldServer } from "../../src/index.js";
import { gatewayWithHerald, type Env } from "../helpers/herald.js";

let env: Env;
beforeAll(async () => {
  env = await gatewayWithHerald();
});

describe("publish and broadcast", () => {
  it("a publish reaches a WebSocket subscriber as JSON", async () => {
    const alice = await env.connect({ sub: "alice" });
    await alice.command("subscribe", { channel: "org:acme:ch:pub" });
    const position = await env.herald.publish("org:acme:ch:pub", "message.created", {
      id: "m1",
      text: "hello",
    });
    expect(position.offset).toBe(1);
    expect(position.epoch).not.toBe("");
    const push = await alice.push("the publication", (p) => p.pub !== undefined);
    expect(push).toMatchObject({
      channel: "org:acme:ch:pub",
      pub: { event: "message.created", data: { id: "m1", text: "hello" }, offset: 1 },
    });
  });

  it("a publish repeated with its idempotency key answers the first position and publishes once", async () => {
    const first = await env.herald.publish("org:acme:ch:once", "m", 1, { idempotencyKey: "k1" });
    const again = await env.herald.publish("org:acme:ch:once", "m", 1, { idempotencyKey: "k1" });
    expect(again).toEqual(first);
    expect((await env.herald.history("org:acme:ch:once")).publications).toHaveLength(1);
  });

  it("broadcast publishes to each channel, results in order", async () => {
    await env.herald.publish("org:acme:ch:b2", "m", 0);
    const { results } = await env.herald.broadcast(["org:acme:ch:b1", "org:acme:ch:b2"], "m", {
      n: 1,
    });
    expect(results.map((r) => r.offset)).toEqual([1, 2]);
  });
});

describe("history", () => {
  it("pages through `more`, and iterateHistory reads every page", async () => {
    const channel = "org:acme:ch:history";
    for (let n = 1; n <= 5; n++) await env.herald.publish(channel, "m", { n });
    const page = await env.herald.history<{ n: number }>(channel, { limit: 2 });
    expect(page.more).toBe(true);
    expect(page.offset).toBe(5);
    expect(page.publications.map((p) => p.data.n)).toEqual([1, 2]);
    expect(page.publications[0]).toMatchObject({ offset: 1, event: "m", from: "" });
    expect(page.publications[0]?.ts).toBeGreaterThan(0);

    const all: number[] = [];
    for await (const publication of env.herald.iterateHistory<{ n: number }>(channel, {
      limit: 2,
    })) {
      all.push(publication.data.n);
    }
    expect(all).toEqual([1, 2, 3, 4, 5]);
    const tail = await env.herald.history(channel, { sinceOffset: 3 });
    expect(tail.publications.map((p) => p.offset)).toEqual([4, 5]);
    expect(tail.more).toBe(false);
  });
});

describe("presence and status", () => {
  it("lists members with their info, counts them, and reports statuses", async () => {
    const bob = await env.connect({ sub: "bob", info: { name: "Bob" } });
    await bob.command("subscribe", { channel: "org:acme:ch:presence" });
    const { members } = await env.herald.presence<{ name: string }>("org:acme:ch:presence");
    expect(members).toEqual([
      expect.objectContaining({ user: "bob", client: bob.connected.client, info: { name: "Bob" } }),
    ]);
    expect(members[0]?.joinedAt).toBeGreaterThan(0);
    expect(await env.herald.presenceStats("org:acme:ch:presence")).toEqual({
      users: 1,
      clients: 1,
    });
    const { statuses } = await env.herald.userStatus("acme", ["bob", "nobody"]);
    expect(statuses).toEqual([
      { user: "bob", status: "online", lastSeen: 0 },
      { user: "nobody", status: "offline", lastSeen: 0 },
    ]);
  });
});

describe("server-side subscriptions", () => {
  it("subscribe and unsubscribe a user, and one connection", async () => {
    // No channel claim: only the backend's Subscribe lets carol in.
    const carol = await env.connect({ sub: "carol", channels: [] });
    const channel = "org:acme:room:7";
    await env.herald.subscribe("carol", channel);
    await carol.push("the subscribe push", (p) => p.channel === channel && !!p.subscribe);
    await env.herald.publish(channel, "m", { n: 1 });
    await carol.push("the publication", (p) => p.channel === channel && !!p.pub);
    await env.herald.unsubscribe("carol", channel);
    const ended = await carol.push("the unsubscribe push", (p) => p.channel === channel);
    expect(ended.unsubscribe?.code).toBe(2000);

    await env.herald.subscribe("carol", channel, { client: carol.connected.client });
    await carol.push("the client's subscribe push", (p) => p.channel === channel && !!p.subscribe);
    await env.herald.unsubscribe("carol", channel, { client: carol.connected.client });
    const again = await carol.push("the client's unsubscribe push", (p) => p.channel === channel);
    expect(again.unsubscribe?.code).toBe(2000);
  });
});

describe("disconnect and info", () => {
  it("info counts connections; disconnect closes the user's with the code and reason", async () => {
    const dave = await env.connect({ sub: "dave" });
    const { nodes } = await env.herald.info();
    expect(nodes).toHaveLength(1);
    expect(nodes[0]?.version).not.toBe("");
    expect(nodes[0]?.connections).toBeGreaterThanOrEqual(1);
    expect(await env.herald.disconnect("dave", { code: 4001, reason: "banned" })).toEqual({
      connections: 1,
    });
    expect(await dave.closed).toEqual({ code: 4001, reason: "banned" });
  });
});

describe("errors", () => {
  it("carries the gRPC code, the method and Herald's message", async () => {
    const invalid = await env.herald.publish("nope:x", "m", {}).catch((e: unknown) => e);
    expect(invalid).toBeInstanceOf(HeraldError);
    expect(invalid).toMatchObject({ code: status.INVALID_ARGUMENT, method: "Publish" });
    expect((invalid as HeraldError).details).not.toBe("");

    const noHistory = await env.herald.history("public:lobby").catch((e: unknown) => e);
    expect(noHistory).toMatchObject({ code: status.FAILED_PRECONDITION, method: "History" });

    const stranger = new HeraldServer({ address: env.gateway.grpcAddr, apiKey: "wrong" });
    try {
      await expect(stranger.info()).rejects.toMatchObject({
        code: status.UNAUTHENTICATED,
        method: "Info",
      });
    } finally {
      stranger.close();
    }
  });
});
