import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { reconnectAdvice } from "../../src/index.js";
import { connectedClient, FakeWebSocket, flush } from "../helpers/fake-websocket.js";

describe("close code classes", () => {
  it("maps codes to what the client does", () => {
    expect([4000, 4001, 4003, 4099].map(reconnectAdvice)).toEqual(Array(4).fill("stop"));
    // 4009 dropped one message too large: the connection is worth another try.
    expect(reconnectAdvice(4009)).toBe("backoff");
    expect(reconnectAdvice(4002)).toBe("refresh_token");
    expect([4100, 4101, 4102, 4199].map(reconnectAdvice)).toEqual(Array(4).fill("backoff"));
    expect([4200, 4201, 4202, 4299].map(reconnectAdvice)).toEqual(Array(4).fill("now"));
    expect([1000, 1001, 1006, 1011, 4300].map(reconnectAdvice)).toEqual(Array(5).fill("backoff"));
  });
});

describe("reconnecting by close code", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  it("4000-4099: does not retry", async () => {
    const { client } = await connectedClient();
    FakeWebSocket.last().serverClose(4001, "unauthorized");
    await flush();
    expect(client.getConnectionState()).toBe("disconnected");
    await vi.advanceTimersByTimeAsync(120_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("4002: gets a new token and reconnects at once", async () => {
    const { client, getToken } = await connectedClient();
    expect(getToken).toHaveBeenCalledTimes(1);
    FakeWebSocket.last().serverClose(4002, "token expired");
    await flush();
    expect(getToken).toHaveBeenCalledTimes(2);
    expect(FakeWebSocket.instances).toHaveLength(2);
    FakeWebSocket.last().open();
    expect(FakeWebSocket.last().command("connect").params.token).toBe("token-2");
    expect(client.getConnectionState()).toBe("reconnecting");
  });

  it("reuses the cached token for other reconnects", async () => {
    const { getToken } = await connectedClient();
    FakeWebSocket.last().serverClose(4200);
    await vi.advanceTimersByTimeAsync(1000);
    FakeWebSocket.last().open();
    expect(FakeWebSocket.last().command("connect").params.token).toBe("token-1");
    expect(getToken).toHaveBeenCalledTimes(1);
  });

  it("4100-4199: backs off", async () => {
    const { client } = await connectedClient();
    FakeWebSocket.last().serverClose(4101, "connection limit");
    await flush();
    expect(client.getConnectionState()).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(1499); // 1 s + 0.5 × 1 s jitter
    expect(FakeWebSocket.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it("4200-4299: reconnects at once, within the jitter", async () => {
    await connectedClient({ random: () => 0.25 });
    FakeWebSocket.last().serverClose(4201, "slow consumer");
    await vi.advanceTimersByTimeAsync(249);
    expect(FakeWebSocket.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it("abnormal closes back off", async () => {
    await connectedClient();
    FakeWebSocket.last().serverClose(1006);
    await vi.advanceTimersByTimeAsync(1499);
    expect(FakeWebSocket.instances).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  it("honours the disconnect push when the close frame lost its code", async () => {
    const { client } = await connectedClient({ random: () => 0 });
    const socket = FakeWebSocket.last();
    socket.receive({
      push: { disconnect: { code: 4001, reason: "unauthorized", reconnect: false } },
    });
    socket.serverClose(1006);
    await flush();
    expect(client.getConnectionState()).toBe("disconnected");
  });

  it("closes by itself after a disconnect push that no close follows", async () => {
    const { client } = await connectedClient({ random: () => 0 });
    const socket = FakeWebSocket.last();
    socket.receive({
      push: { disconnect: { code: 4200, reason: "server shutdown", reconnect: true } },
    });
    await vi.advanceTimersByTimeAsync(1999);
    expect(socket.closedByClient).toBeNull();
    await vi.advanceTimersByTimeAsync(1);
    expect(socket.closedByClient).not.toBeNull();
    await vi.advanceTimersByTimeAsync(1); // a zero jitter is a 1 ms timer
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(client.getConnectionState()).toBe("reconnecting");
  });

  it("retries early when the browser comes back online", async () => {
    const listeners = new Map<string, () => void>();
    vi.stubGlobal("addEventListener", (type: string, listener: () => void) =>
      listeners.set(type, listener),
    );
    vi.stubGlobal("removeEventListener", (type: string) => listeners.delete(type));
    const { client } = await connectedClient();
    for (let i = 0; i < 5; i++) {
      FakeWebSocket.last().serverClose(1006);
      await vi.advanceTimersByTimeAsync(60_000);
    }
    FakeWebSocket.last().serverClose(1006); // the next try is 32-33 s away
    await flush();
    const count = FakeWebSocket.instances.length;
    listeners.get("online")?.();
    await flush();
    expect(FakeWebSocket.instances).toHaveLength(count + 1);
    client.disconnect();
    expect(listeners.has("online")).toBe(false);
  });

  it("retries early when the page becomes visible", async () => {
    const listeners = new Map<string, () => void>();
    const document = {
      visibilityState: "hidden",
      addEventListener: (type: string, listener: () => void) => listeners.set(type, listener),
      removeEventListener: (type: string) => listeners.delete(type),
    };
    vi.stubGlobal("document", document);
    await connectedClient();
    FakeWebSocket.last().serverClose(1006);
    await flush();
    listeners.get("visibilitychange")?.();
    await flush();
    expect(FakeWebSocket.instances).toHaveLength(1);
    document.visibilityState = "visible";
    listeners.get("visibilitychange")?.();
    await flush();
    expect(FakeWebSocket.instances).toHaveLength(2);
  });
});
