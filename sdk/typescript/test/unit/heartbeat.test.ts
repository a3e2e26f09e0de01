import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { connectedClient, FakeWebSocket, flush } from "../helpers/fake-websocket.js";

describe("heartbeat", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("pings on connect and every 25 s, measuring the round trip", async () => {
    const { client, socket } = await connectedClient();
    expect(socket.commands("ping")).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(120);
    socket.reply("ping", { ts: Date.now() });
    await flush();
    expect(client.getLatency()).toBe(120);
    await vi.advanceTimersByTimeAsync(24_879);
    expect(socket.commands("ping")).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(socket.commands("ping")).toHaveLength(2);
  });

  it("closes and reconnects when a ping gets no reply within 20 s", async () => {
    const { client, socket } = await connectedClient({ random: () => 0 });
    await vi.advanceTimersByTimeAsync(19_999);
    expect(socket.closedByClient).toBeNull();
    await vi.advanceTimersByTimeAsync(1);
    expect(socket.closedByClient).not.toBeNull();
    expect(client.getConnectionState()).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it("emits connection_degraded over 2 s and connection_recovered after", async () => {
    const { client, socket } = await connectedClient();
    const events: string[] = [];
    client.on("connection_degraded", ({ latency }) => events.push(`degraded ${latency}`));
    client.on("connection_recovered", ({ latency }) => events.push(`recovered ${latency}`));
    await vi.advanceTimersByTimeAsync(2500);
    socket.reply("ping", { ts: Date.now() });
    await flush();
    expect(client.isDegraded()).toBe(true);
    await vi.advanceTimersByTimeAsync(22_500);
    await vi.advanceTimersByTimeAsync(2100);
    socket.reply("ping", { ts: Date.now() });
    await flush(); // still slow: no second event
    await vi.advanceTimersByTimeAsync(22_900);
    await vi.advanceTimersByTimeAsync(50);
    socket.reply("ping", { ts: Date.now() });
    await flush();
    expect(events).toEqual(["degraded 2500", "recovered 50"]);
    expect(client.isDegraded()).toBe(false);
  });
});
