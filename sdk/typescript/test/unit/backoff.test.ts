import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Backoff, backoffDelay, DEFAULT_BACKOFF, jitter } from "../../src/backoff.js";
import { FakeWebSocket, fakeClient, flush } from "../helpers/fake-websocket.js";
import { vi } from "vitest";

describe("backoff", () => {
  it("doubles from 1 s to a 30 s ceiling", () => {
    const delays = Array.from({ length: 8 }, (_, attempt) =>
      backoffDelay(DEFAULT_BACKOFF, attempt, () => 0),
    );
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });

  it("adds 0 to 1 s of jitter", () => {
    expect(backoffDelay(DEFAULT_BACKOFF, 0, () => 0.999999)).toBe(1999);
    expect(backoffDelay(DEFAULT_BACKOFF, 6, () => 0.999999)).toBe(30999);
    for (let i = 0; i < 1000; i++) {
      const delay = backoffDelay(DEFAULT_BACKOFF, 2);
      expect(delay).toBeGreaterThanOrEqual(4000);
      expect(delay).toBeLessThan(5000);
      const extra = jitter(1000);
      expect(extra).toBeGreaterThanOrEqual(0);
      expect(extra).toBeLessThan(1000);
    }
  });

  it("counts failures until the limit and starts over after reset", () => {
    const backoff = new Backoff({ ...DEFAULT_BACKOFF, maxAttempts: 3 }, () => 0);
    expect([backoff.next(), backoff.next(), backoff.next()]).toEqual([1000, 2000, 4000]);
    expect(backoff.exhausted).toBe(true);
    backoff.reset();
    expect(backoff.exhausted).toBe(false);
    expect(backoff.next()).toBe(1000);
  });
});

describe("reconnect attempts", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("retries failed handshakes at 1, 2, 4, 8, 16, 30, 30… s and gives up after 20", async () => {
    const { client } = fakeClient({ random: () => 0 });
    const states: string[] = [];
    client.onConnectionChange((state) => states.push(state));
    client.connect();
    await flush();
    expect(FakeWebSocket.instances).toHaveLength(1);
    const expected = [1000, 2000, 4000, 8000, 16000, ...Array(15).fill(30000)] as number[];
    for (const [i, delay] of expected.entries()) {
      FakeWebSocket.last().serverClose(1006);
      await vi.advanceTimersByTimeAsync(delay - 1);
      expect(FakeWebSocket.instances).toHaveLength(i + 1);
      await vi.advanceTimersByTimeAsync(1);
      expect(FakeWebSocket.instances).toHaveLength(i + 2);
    }
    // The 20th retry fails too: that is the end.
    FakeWebSocket.last().serverClose(1006);
    await flush();
    expect(client.getConnectionState()).toBe("permanently_disconnected");
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(FakeWebSocket.instances).toHaveLength(21);
    expect(states.slice(0, 2)).toEqual(["connecting", "reconnecting"]);

    // connect() starts over.
    client.connect();
    await flush();
    expect(client.getConnectionState()).toBe("connecting");
    expect(FakeWebSocket.instances).toHaveLength(22);
    FakeWebSocket.last().accept();
    await flush();
    expect(client.getConnectionState()).toBe("connected");
  });

  it("starts counting again after a successful connect", async () => {
    const { client } = fakeClient({ random: () => 0, backoff: { maxAttempts: 2 } });
    client.connect();
    await flush();
    FakeWebSocket.last().serverClose(1006);
    await vi.advanceTimersByTimeAsync(1000);
    FakeWebSocket.last().serverClose(1006);
    await vi.advanceTimersByTimeAsync(2000);
    FakeWebSocket.last().accept();
    await flush();
    FakeWebSocket.last().serverClose(1006);
    await vi.advanceTimersByTimeAsync(1000);
    expect(FakeWebSocket.instances).toHaveLength(4);
    expect(client.getConnectionState()).toBe("reconnecting");
  });
});
