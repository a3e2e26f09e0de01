import { describe, expect, it, vi } from "vitest";
import {
  FakeWebSocket,
  fakeClient,
  flush,
  useFakeClockAndSockets,
} from "../helpers/fake-websocket.js";

async function connectWithExpiry(expiresInSeconds: number, options = {}) {
  const made = fakeClient(options);
  const refreshed: number[] = [];
  made.client.on("token_refreshed", ({ expires }) => refreshed.push(expires));
  made.client.connect();
  await flush();
  const socket = FakeWebSocket.last();
  const now = Math.floor(Date.now() / 1000);
  socket.accept("c1", now + expiresInSeconds);
  await flush();
  return { ...made, socket, refreshed, now };
}

describe("token refresh", () => {
  useFakeClockAndSockets();

  it("sends refresh with a new token refreshBeforeExpiryMs before exp, on the same connection", async () => {
    const { socket, getToken, refreshed, now } = await connectWithExpiry(600, {
      refreshBeforeExpiryMs: 60_000,
    });
    await vi.advanceTimersByTimeAsync(539_999);
    expect(socket.commands("refresh")).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(getToken).toHaveBeenCalledTimes(2);
    expect(socket.command("refresh").params).toEqual({ token: "token-2" });
    socket.reply("refresh", { expires: now + 1200 });
    await flush();
    expect(refreshed).toEqual([now + 1200]);
    // The next one is scheduled from the new expiry.
    await vi.advanceTimersByTimeAsync(600_000);
    expect(socket.commands("refresh")).toHaveLength(2);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("refreshes a token shorter than the margin halfway through its life", async () => {
    const { socket } = await connectWithExpiry(4);
    await vi.advanceTimersByTimeAsync(1999);
    expect(socket.commands("refresh")).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(socket.commands("refresh")).toHaveLength(1);
  });

  it("uses the fresh token for the next reconnect", async () => {
    const { socket } = await connectWithExpiry(100);
    await vi.advanceTimersByTimeAsync(50_000);
    socket.reply("refresh", { expires: Math.floor(Date.now() / 1000) + 100 });
    await flush();
    socket.serverClose(4200);
    await vi.advanceTimersByTimeAsync(1000);
    FakeWebSocket.last().open();
    expect(FakeWebSocket.last().command("connect").params.token).toBe("token-2");
  });

  it("retries a failed getToken before the token expires", async () => {
    let calls = 0;
    const { socket, client } = await connectWithExpiry(20, {
      getToken: () => {
        calls += 1;
        if (calls === 2) throw new Error("network");
        return `token-${calls}`;
      },
    });
    const errors: string[] = [];
    client.on("error", (e) => errors.push(e.message));
    await vi.advanceTimersByTimeAsync(10_000);
    expect(errors).toEqual(["getToken failed: network"]);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(socket.command("refresh").params).toEqual({ token: "token-3" });
  });
});
