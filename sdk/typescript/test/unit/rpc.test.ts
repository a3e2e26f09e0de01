import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ErrorCodes, HeraldError } from "../../src/index.js";
import { connectedClient, FakeWebSocket, fakeClient, flush } from "../helpers/fake-websocket.js";

describe("rpc", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
    FakeWebSocket.autoPing = true;
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("sends the method and data, and resolves with the result's data", async () => {
    const { client, socket } = await connectedClient();
    const reply = client.rpc("message:send", { channel: "org:acme:ch:x", text: "hi" });
    expect(socket.command("rpc").params).toEqual({
      method: "message:send",
      data: { channel: "org:acme:ch:x", text: "hi" },
    });
    socket.reply("rpc", { data: { offset: 7 } });
    expect(await reply).toEqual({ offset: 7 });
  });

  it("leaves out absent data, and resolves with null when the backend returned none", async () => {
    const { client, socket } = await connectedClient();
    const reply = client.rpc("ping:me");
    expect(socket.command("rpc").params).toEqual({ method: "ping:me" });
    socket.reply("rpc", { data: null });
    expect(await reply).toBeNull();
    const second = client.rpc("ping:me");
    socket.reply("rpc", {});
    expect(await second).toBeNull();
  });

  it("passes the backend's error code and message through, and the gateway's temporary flag", async () => {
    const { client, socket } = await connectedClient();
    const failed = client.rpc("message:send", { text: "" }).catch((e: unknown) => e);
    socket.fail("rpc", 1422, false, "text is empty");
    const error = (await failed) as HeraldError;
    expect(error).toBeInstanceOf(HeraldError);
    expect(error).toMatchObject({ code: 1422, temporary: false });
    expect(error.message).toContain("text is empty");

    const down = client.rpc("message:send", {}).catch((e: unknown) => e);
    socket.fail("rpc", ErrorCodes.backendUnavailable, true, "backend unavailable");
    expect(await down).toMatchObject({ code: 112, temporary: true });
    const slow = client.rpc("message:send", {}).catch((e: unknown) => e);
    socket.fail("rpc", ErrorCodes.backendTimeout, true, "backend timeout");
    expect(await slow).toMatchObject({ code: 113, temporary: true });
  });

  it("waits in the offline queue, in order with publishes, and goes out after the connect", async () => {
    const { client } = fakeClient();
    const published = client.publish("org:acme:ch:x", "m", 1);
    const called = client.rpc("message:send", { text: "queued" });
    client.connect();
    await flush();
    const socket = FakeWebSocket.last();
    socket.accept();
    await flush();
    expect(
      socket
        .commands()
        .map((c) => c.method)
        .filter((m) => m !== "ping"),
    ).toEqual(["connect", "publish", "rpc"]);
    socket.reply("publish", { offset: 1, epoch: "e" });
    socket.reply("rpc", { data: "done" });
    expect(await published).toEqual({ offset: 1, epoch: "e" });
    expect(await called).toBe("done");
  });

  it("shares the offline queue's bound: the oldest is dropped with queue_overflow", async () => {
    const { client } = fakeClient({ offlineQueueSize: 1 });
    const overflows: unknown[] = [];
    client.on("queue_overflow", (item) => overflows.push(item));
    const first = client.rpc("a").catch((e: HeraldError) => e.code);
    const second = client.publish("org:acme:ch:x", "m", 2).catch((e: HeraldError) => e.code);
    client.rpc("c").catch(() => {});
    expect(await first).toBe("queue_overflow");
    expect(await second).toBe("queue_overflow");
    // Only dropped publishes are reported as events; a dropped rpc rejects its promise.
    expect(overflows).toEqual([{ channel: "org:acme:ch:x", event: "m", data: 2 }]);
    client.disconnect();
  });

  it("fails with client_closed when disconnect() runs while it is queued", async () => {
    const { client } = fakeClient();
    const queued = client.rpc("a").catch((e: HeraldError) => e.code);
    client.disconnect();
    expect(await queued).toBe("client_closed");
  });

  it("fails with disconnected when the connection drops before the reply", async () => {
    const { client, socket } = await connectedClient();
    const sent = client.rpc("a").catch((e: unknown) => e);
    socket.serverClose(1006);
    expect(await sent).toMatchObject({ code: "disconnected", temporary: true });
    client.disconnect();
  });

  it("times out after the command timeout, or the call's own, counted from the send", async () => {
    const { client } = fakeClient({ commandTimeoutMs: 10_000 });
    const long = client.rpc("a").catch((e: HeraldError) => e.code);
    const short = client.rpc("b", null, { timeout: 500 }).catch((e: HeraldError) => e.code);
    // Queued: no timeout runs until it is sent.
    await vi.advanceTimersByTimeAsync(60_000);
    client.connect();
    await flush();
    FakeWebSocket.last().accept();
    await flush();
    expect(FakeWebSocket.last().commands("rpc")).toHaveLength(2);
    let settled = false;
    void long.then(() => (settled = true));
    await vi.advanceTimersByTimeAsync(500);
    expect(await short).toBe("timeout");
    expect(settled).toBe(false);
    await vi.advanceTimersByTimeAsync(9_500);
    expect(await long).toBe("timeout");
    client.disconnect();
  });
});
