import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { HeraldError } from "../../src/index.js";
import { connectedClient, FakeWebSocket, fakeClient, flush } from "../helpers/fake-websocket.js";

const CHANNEL = "org:acme:ch:general";
const ok = { offset: 0, epoch: "E", recoverable: true, recovered: false, publications: [] };

describe("subscriptions", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("survives a StrictMode-style subscribe, unsubscribe, subscribe with one subscribe", async () => {
    const { client, socket } = await connectedClient();
    const first = client.subscribe(CHANNEL);
    first.unsubscribe();
    const second = client.subscribe(CHANNEL);
    await flush();
    expect(socket.commands("subscribe")).toHaveLength(1);
    expect(socket.commands("unsubscribe")).toHaveLength(0);
    socket.reply("subscribe", ok);
    await flush();
    expect(second.state).toBe("subscribed");
    expect(first.state).toBe("ended");
  });

  it("reference-counts handles: the last unsubscribe unsubscribes", async () => {
    const { client, socket } = await connectedClient();
    const a = client.subscribe(CHANNEL);
    const b = client.subscribe(CHANNEL);
    await flush();
    socket.reply("subscribe", ok);
    await flush();
    const seenA: unknown[] = [];
    const seenB: unknown[] = [];
    a.on("m", (data) => seenA.push(data));
    b.on("m", (data) => seenB.push(data));
    a.unsubscribe();
    a.unsubscribe(); // twice: harmless
    await flush();
    expect(socket.commands("unsubscribe")).toHaveLength(0);
    socket.receive({
      push: { channel: CHANNEL, pub: { event: "m", data: 1, offset: 1, epoch: "E" } },
    });
    expect(seenA).toEqual([]);
    expect(seenB).toEqual([1]);
    b.unsubscribe();
    await flush();
    expect(socket.command("unsubscribe").params).toEqual({ channel: CHANNEL });
    expect(client.getChannels()).toEqual([]);
  });

  it("subscribes offline channels once connected", async () => {
    const { client } = fakeClient();
    const sub = client.subscribe(CHANNEL);
    await flush();
    expect(sub.state).toBe("pending");
    client.connect();
    await flush();
    FakeWebSocket.last().accept();
    await flush();
    expect(FakeWebSocket.last().command("subscribe").params).toEqual({ channel: CHANNEL });
  });

  it("reports a refused subscribe and retries temporary errors", async () => {
    const { client, socket } = await connectedClient({ random: () => 0 });
    const denied = client.subscribe("org:other:ch:x");
    const errors: unknown[] = [];
    denied.on("error", (error) => errors.push(error));
    await flush();
    socket.fail("subscribe", 103, false, "permission denied");
    await flush();
    expect(denied.state).toBe("failed");
    expect(errors[0]).toBeInstanceOf(HeraldError);
    expect((errors[0] as HeraldError).code).toBe(103);

    const limited = client.subscribe(CHANNEL);
    await flush();
    socket.fail("subscribe", 110, true, "too many requests");
    await flush();
    expect(limited.state).toBe("pending");
    await vi.advanceTimersByTimeAsync(1000);
    expect(socket.commands("subscribe").filter((c) => c.params.channel === CHANNEL)).toHaveLength(
      2,
    );
  });

  it("types publication data through an event map", async () => {
    const { client, socket } = await connectedClient();
    const sub = client.subscribe<{ "message.created": { id: string } }>(CHANNEL);
    const ids: string[] = [];
    sub.on("message.created", (data, pub) => {
      ids.push(data.id);
      expect(pub.channel).toBe(CHANNEL);
    });
    await flush();
    socket.reply("subscribe", ok);
    await flush();
    socket.receive({
      push: {
        channel: CHANNEL,
        pub: { event: "message.created", data: { id: "m1" }, offset: 1, epoch: "E" },
      },
    });
    expect(ids).toEqual(["m1"]);
  });
});
