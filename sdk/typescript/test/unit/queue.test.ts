import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { HeraldError, type QueuedPublication } from "../../src/index.js";
import { BoundedQueue } from "../../src/queue.js";
import { connectedClient, FakeWebSocket, fakeClient, flush } from "../helpers/fake-websocket.js";

describe("BoundedQueue", () => {
  it("keeps the newest items, oldest first", () => {
    const queue = new BoundedQueue<number>(3);
    expect(queue.push(1)).toEqual([]);
    queue.push(2);
    queue.push(3);
    expect(queue.push(4)).toEqual([1]);
    expect(queue.size).toBe(3);
    expect(queue.drain()).toEqual([2, 3, 4]);
    expect(queue.size).toBe(0);
  });
});

describe("offline queue", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("sends publishes made offline in order after the connect and the resubscribes", async () => {
    const { client } = fakeClient();
    client.subscribe("chat:acme:room");
    const results = [1, 2, 3].map((n) => client.publish("chat:acme:room", "n", { n }));
    client.connect();
    await flush();
    const socket = FakeWebSocket.last();
    socket.accept();
    await flush();
    const methods = socket.commands().map((c) => c.method);
    expect(methods.filter((m) => m !== "ping")).toEqual([
      "connect",
      "subscribe",
      "publish",
      "publish",
      "publish",
    ]);
    const publishes = socket.commands("publish");
    expect(publishes.map((c) => c.params.data.n)).toEqual([1, 2, 3]);
    publishes.forEach((command, i) =>
      socket.receive({ id: command.id, result: { offset: 10 + i, epoch: "e" } }),
    );
    expect((await Promise.all(results)).map((r) => r.offset)).toEqual([10, 11, 12]);
  });

  it("drops the oldest when full, with a queue_overflow event", async () => {
    const { client } = fakeClient({ offlineQueueSize: 3 });
    const dropped: QueuedPublication[] = [];
    client.on("queue_overflow", (item) => dropped.push(item));
    const results = [1, 2, 3, 4, 5].map((n) => client.publish("chat:acme:room", "n", n));
    const settled = results.map((p) =>
      p.then(
        () => "ok",
        (e: HeraldError) => e.code,
      ),
    );
    expect(dropped.map((d) => d.data)).toEqual([1, 2]);
    expect(await settled[0]).toBe("queue_overflow");
    expect(await settled[1]).toBe("queue_overflow");
    client.connect();
    await flush();
    FakeWebSocket.last().accept();
    await flush();
    expect(
      FakeWebSocket.last()
        .commands("publish")
        .map((c) => c.params.data),
    ).toEqual([3, 4, 5]);
  });

  it("sends a publish unanswered when the connection dropped again after the reconnect, same key", async () => {
    const { client, socket } = await connectedClient();
    const inFlight = client.publish("chat:acme:room", "n", 1);
    const key = socket.command("publish").params.idempotencyKey;
    expect(typeof key).toBe("string");
    socket.serverClose(1006);
    const queued = client.publish("chat:acme:room", "n", 2);
    await vi.advanceTimersByTimeAsync(2000);
    const next = FakeWebSocket.last();
    expect(next).not.toBe(socket);
    next.accept();
    await flush();
    const publishes = next.commands("publish");
    expect(publishes.map((c) => c.params.data)).toEqual([1, 2]);
    expect(publishes[0]?.params.idempotencyKey).toBe(key);
    next.receive({ id: publishes[0]?.id as number, result: { offset: 1, epoch: "e" } });
    next.receive({ id: publishes[1]?.id as number, result: { offset: 2, epoch: "e" } });
    expect(await inFlight).toEqual({ offset: 1, epoch: "e" });
    expect(await queued).toEqual({ offset: 2, epoch: "e" });
  });

  it("rejects a publish only on the gateway's error", async () => {
    const { client, socket } = await connectedClient();
    const refused = client.publish("chat:acme:room", "n", 1).catch((e: HeraldError) => e);
    socket.fail("publish", 103, false, "permission denied");
    expect(await refused).toMatchObject({ code: 103, temporary: false });
  });

  it("rejects what is queued on disconnect()", async () => {
    const { client } = fakeClient();
    const queued = client.publish("chat:acme:room", "n", 1).catch((e: HeraldError) => e.code);
    client.disconnect();
    expect(await queued).toBe("client_closed");
  });

  it("times out a command without a reply", async () => {
    const { client } = await connectedClient({ commandTimeoutMs: 10_000 });
    const pending = client.history("org:acme:ch:x").catch((e: HeraldError) => e);
    await vi.advanceTimersByTimeAsync(10_000);
    const error = (await pending) as HeraldError;
    expect(error.code).toBe("timeout");
    expect(error.temporary).toBe(true);
  });

  it("carries the protocol's error code and temporary flag", async () => {
    const { client, socket } = await connectedClient();
    const pending = client.history("org:acme:ch:x").catch((e: HeraldError) => e);
    socket.fail("history", 110, true, "too many requests");
    const error = (await pending) as HeraldError;
    expect(error).toMatchObject({ code: 110, temporary: true });
    expect(error.message).toContain("too many requests");
  });
});
