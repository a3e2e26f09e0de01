import { describe, expect, it, vi } from "vitest";
import { HeraldError, UnsubscribeCodes, type UnsubscribedInfo } from "../../src/index.js";
import {
  connectedClient,
  FakeWebSocket,
  flush,
  useFakeClockAndSockets,
} from "../helpers/fake-websocket.js";

const CHANNEL = "org:acme:ch:secret";

function subscribeResult(offset: number, expires?: number) {
  return {
    offset,
    epoch: "E",
    recoverable: true,
    recovered: offset > 0,
    publications: [],
    ...(expires === undefined ? {} : { expires }),
  };
}

/** A connected client and a subscription with `getToken`, subscribed (token expiring at `expires`). */
async function subscribedWithToken(expiresInSeconds: number) {
  const made = await connectedClient({ refreshBeforeExpiryMs: 60_000 });
  let n = 0;
  const getToken = vi.fn(async (channel: string) => `sub-${channel}-${++n}`);
  const sub = made.client.subscribe(CHANNEL, { getToken });
  await flush();
  const now = Math.floor(Date.now() / 1000);
  made.socket.reply("subscribe", subscribeResult(0, now + expiresInSeconds));
  await flush();
  return { ...made, sub, getToken, now };
}

describe("subscription tokens", () => {
  useFakeClockAndSockets();

  it("subscribes with a token from getToken(channel)", async () => {
    const { socket, sub, getToken } = await subscribedWithToken(600);
    expect(getToken).toHaveBeenCalledWith(CHANNEL);
    expect(socket.command("subscribe").params).toEqual({
      channel: CHANNEL,
      token: `sub-${CHANNEL}-1`,
    });
    expect(sub.state).toBe("subscribed");
  });

  it("sends subRefresh before the token expires, on the same connection", async () => {
    const { socket, now } = await subscribedWithToken(600);
    await vi.advanceTimersByTimeAsync(539_999);
    expect(socket.commands("subRefresh")).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(socket.command("subRefresh").params).toEqual({
      channel: CHANNEL,
      token: `sub-${CHANNEL}-2`,
    });
    socket.reply("subRefresh", { expires: now + 1200 });
    await flush();
    // The next one is scheduled from the new expiry.
    await vi.advanceTimersByTimeAsync(600_000);
    expect(socket.commands("subRefresh")).toHaveLength(2);
    expect(socket.commands("subscribe")).toHaveLength(1);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("resubscribes with a new token and recovery after 2401", async () => {
    const { socket, sub } = await subscribedWithToken(600);
    socket.receive({
      push: { channel: CHANNEL, pub: { event: "m", data: 1, offset: 1, epoch: "E" } },
    });
    const ended: UnsubscribedInfo[] = [];
    sub.on("unsubscribed", (info) => ended.push(info));
    socket.receive({
      push: {
        channel: CHANNEL,
        unsubscribe: { code: UnsubscribeCodes.tokenExpired, reason: "subscription token expired" },
      },
    });
    await flush();
    expect(socket.commands("subscribe")).toHaveLength(2);
    expect(socket.command("subscribe").params).toEqual({
      channel: CHANNEL,
      token: `sub-${CHANNEL}-2`,
      recover: { offset: 1, epoch: "E" },
    });
    socket.reply("subscribe", subscribeResult(1, Math.floor(Date.now() / 1000) + 600));
    await flush();
    expect(sub.state).toBe("subscribed");
    expect(ended).toEqual([]);
  });

  it("ends without getToken on 2401, and on 2403 without retrying", async () => {
    const { client, socket } = await connectedClient();
    const plain = client.subscribe("org:acme:ch:plain");
    const revoked = client.subscribe(CHANNEL, { getToken: () => "t" });
    await flush();
    for (const command of socket.commands("subscribe")) {
      socket.receive({ id: command.id, result: subscribeResult(0) });
    }
    await flush();
    const ended: UnsubscribedInfo[] = [];
    plain.on("unsubscribed", (info) => ended.push(info));
    revoked.on("unsubscribed", (info) => ended.push(info));
    socket.receive(
      {
        push: {
          channel: "org:acme:ch:plain",
          unsubscribe: { code: 2401, reason: "subscription token expired" },
        },
      },
      { push: { channel: CHANNEL, unsubscribe: { code: 2403, reason: "permission revoked" } } },
    );
    await vi.advanceTimersByTimeAsync(60_000);
    expect(ended.map((info) => info.code)).toEqual([2401, 2403]);
    expect(plain.state).toBe("ended");
    expect(revoked.state).toBe("ended");
    expect(socket.commands("subscribe")).toHaveLength(2);
    expect(client.getChannels()).toEqual([]);
  });

  it("retries the subscribe when getToken fails, reporting the error", async () => {
    const { client, socket } = await connectedClient({ random: () => 0 });
    let calls = 0;
    const sub = client.subscribe(CHANNEL, {
      getToken: () => {
        calls += 1;
        if (calls === 1) throw new Error("backend down");
        return "t2";
      },
    });
    const errors: HeraldError[] = [];
    sub.on("error", (error) => errors.push(error));
    await flush();
    expect(socket.commands("subscribe")).toHaveLength(0);
    expect(errors[0]?.temporary).toBe(true);
    expect(sub.state).toBe("pending");
    await vi.advanceTimersByTimeAsync(1000);
    expect(socket.command("subscribe").params).toEqual({ channel: CHANNEL, token: "t2" });
  });

  it("stops refreshing when the subscription ends", async () => {
    const { socket, sub } = await subscribedWithToken(100);
    sub.unsubscribe();
    await flush();
    expect(socket.commands("unsubscribe")).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(200_000);
    expect(socket.commands("subRefresh")).toHaveLength(0);
  });
});
