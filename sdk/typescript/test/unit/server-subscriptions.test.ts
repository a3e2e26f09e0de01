import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { SubscribedInfo, UnsubscribedInfo } from "../../src/index.js";
import { connectedClient, FakeWebSocket, flush } from "../helpers/fake-websocket.js";

const CHANNEL = "org:acme:ch:general";
const pub = (offset: number, epoch = "E") => ({ event: "m", data: offset, offset, epoch, ts: 1 });
const pubPush = (offset: number, epoch = "E") => ({
  push: { channel: CHANNEL, pub: pub(offset, epoch) },
});
const subscribePush = (body: object, channel = CHANNEL) => ({
  push: {
    channel,
    subscribe: { epoch: "E", recoverable: true, recovered: false, publications: [], ...body },
  },
});
const serverUnsubscribe = (channel = CHANNEL) => ({
  push: { channel, unsubscribe: { code: 2000, reason: "unsubscribed by the server" } },
});

/** Drops the connection with a reconnect-now code and opens the next one (not accepted yet). */
async function dropAndReopen() {
  FakeWebSocket.last().serverClose(4201, "slow consumer");
  await vi.advanceTimersByTimeAsync(1);
  const socket = FakeWebSocket.last();
  socket.open();
  await flush();
  return socket;
}

const connectReply = (socket: FakeWebSocket) => ({
  id: socket.command("connect").id,
  result: { client: "c2", user: "u1", node: "n1", ping: 25, expires: 9999999999 },
});

describe("server-side subscriptions", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
    FakeWebSocket.autoPing = true;
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("a subscribe push makes a subscription the app can use without sending subscribe", async () => {
    const { client, socket } = await connectedClient({ random: () => 0 });
    const seen: unknown[] = [];
    const events: string[] = [];
    client.on("server_subscribed", ({ channel }) => {
      events.push(`server_subscribed ${channel}`);
      const sub = client.subscribe(channel);
      sub.on("subscribed", (info: SubscribedInfo) =>
        events.push(`subscribed ${info.position.offset}`),
      );
      sub.on("m", (data) => seen.push(data));
    });
    socket.receive(subscribePush({ offset: 4 }));
    socket.receive(pubPush(5), pubPush(6));
    await flush();
    expect(events).toEqual([`server_subscribed ${CHANNEL}`, "subscribed 4"]);
    expect(seen).toEqual([5, 6]);
    expect(client.getServerSubscriptions()).toEqual([CHANNEL]);
    const handle = client.subscribe(CHANNEL);
    expect(handle.serverSide).toBe(true);
    expect(handle.state).toBe("subscribed");
    expect(handle.position).toEqual({ offset: 6, epoch: "E" });
    // Dropping every handle keeps it: the server ends it.
    handle.unsubscribe();
    await flush();
    expect(socket.commands("subscribe")).toHaveLength(0);
    expect(socket.commands("unsubscribe")).toHaveLength(0);
    expect(client.getChannels()).toEqual([CHANNEL]);
  });

  it("presence and typing work on it as on any subscription", async () => {
    const { client, socket } = await connectedClient({ random: () => 0 });
    socket.receive(subscribePush({ offset: 0, typing: [{ user: "bob", active: true }] }));
    const sub = client.subscribe(CHANNEL);
    expect(sub.typing.getTypers().map((t) => t.userId)).toEqual(["bob"]);
    sub.typing.start();
    expect(socket.command("typing").params).toEqual({ channel: CHANNEL, active: true });
    sub.presence.onUpdate(() => {});
    await flush();
    socket.reply("presence", {
      members: [{ user: "bob", client: "c9", joinedAt: 1 }],
    });
    await flush();
    expect(client.getPresence(CHANNEL).map((m) => m.userId)).toEqual(["bob"]);
    sub.unsubscribe();
  });

  it("takes over a client subscribe in flight: a handle made before the push gets everything", async () => {
    const { client, socket } = await connectedClient({ random: () => 0 });
    const sub = client.subscribe(CHANNEL);
    const seen: unknown[] = [];
    const errors: unknown[] = [];
    sub.on("m", (data) => seen.push(data));
    sub.on("error", (error) => errors.push(error));
    await flush();
    expect(socket.commands("subscribe")).toHaveLength(1);
    socket.receive(subscribePush({ offset: 2 }), pubPush(3));
    // The gateway answers the client's own subscribe "already subscribed".
    socket.fail("subscribe", 105, false, "already subscribed");
    await flush();
    expect(sub.state).toBe("subscribed");
    expect(sub.serverSide).toBe(true);
    expect(errors).toEqual([]);
    socket.receive(pubPush(4));
    expect(seen).toEqual([3, 4]);
  });

  it("a 2000 unsubscribe push removes it and emits server_unsubscribed", async () => {
    const { client, socket } = await connectedClient({ random: () => 0 });
    socket.receive(subscribePush({ offset: 1 }));
    const sub = client.subscribe(CHANNEL);
    const ended: UnsubscribedInfo[] = [];
    const removed: UnsubscribedInfo[] = [];
    sub.on("unsubscribed", (info) => ended.push(info));
    client.on("server_unsubscribed", (info) => removed.push(info));
    socket.receive(serverUnsubscribe());
    await flush();
    const info = { channel: CHANNEL, code: 2000, reason: "unsubscribed by the server" };
    expect(ended).toEqual([info]);
    expect(removed).toEqual([info]);
    expect(sub.state).toBe("ended");
    expect(client.getServerSubscriptions()).toEqual([]);
    expect(client.getChannels()).toEqual([]);
    expect(socket.commands("subscribe")).toHaveLength(0);
  });

  it("after a reconnect, sends the positions in connect, does not resubscribe, and recovers from the push", async () => {
    const { client, socket } = await connectedClient({ random: () => 0 });
    socket.receive(
      subscribePush({ offset: 4 }),
      subscribePush({ offset: 0, epoch: "", recoverable: false }, "org:acme:ch:nohistory"),
    );
    client.subscribe("org:acme:ch:client");
    await flush();
    socket.reply("subscribe", { offset: 0, epoch: "", recoverable: false, recovered: false });
    const sub = client.subscribe(CHANNEL);
    const seen: unknown[] = [];
    const events: string[] = [];
    sub.on("m", (data) => seen.push(data));
    sub.on("recovered", (info: SubscribedInfo) =>
      events.push(`recovered ${info.recoveredPublications}`),
    );
    sub.on("state_lost", () => events.push("state_lost"));
    client.on("server_subscribed", ({ channel }) => events.push(`server_subscribed ${channel}`));
    socket.receive(pubPush(5));

    const next = await dropAndReopen();
    expect(next.command("connect").params.subs).toEqual({
      [CHANNEL]: { offset: 5, epoch: "E" },
      "org:acme:ch:nohistory": { offset: 0, epoch: "" },
    });
    // The restore comes in the same frame as the connect reply; live publications follow.
    next.receive(
      connectReply(next),
      subscribePush({ offset: 7, recovered: true, publications: [pub(5), pub(6), pub(7)] }),
      serverUnsubscribe("org:acme:ch:nohistory"),
    );
    await flush();
    next.receive(pubPush(8));
    // Only the client's own subscription is resubscribed by the client.
    expect(next.commands("subscribe").map((c) => c.params.channel)).toEqual(["org:acme:ch:client"]);
    expect(seen).toEqual([5, 6, 7, 8]);
    expect(events).toEqual(["recovered 2"]);
    expect(client.getServerSubscriptions()).toEqual([CHANNEL]);
  });

  it("emits state_lost when the restore could not recover, and fetches the rest with history on more", async () => {
    const { client, socket } = await connectedClient({ random: () => 0 });
    socket.receive(subscribePush({ offset: 2 }));
    const sub = client.subscribe(CHANNEL);
    const seen: unknown[] = [];
    const events: string[] = [];
    sub.on("m", (data) => seen.push(data));
    sub.on("recovered", () => events.push("recovered"));
    sub.on("state_lost", (info: SubscribedInfo) =>
      events.push(`state_lost ${info.position.epoch}`),
    );

    let next = await dropAndReopen();
    next.receive(connectReply(next), subscribePush({ offset: 1, epoch: "F", recovered: false }));
    await flush();
    expect(events).toEqual(["state_lost F"]);

    next = await dropAndReopen();
    expect(next.command("connect").params.subs).toEqual({ [CHANNEL]: { offset: 1, epoch: "F" } });
    next.receive(
      connectReply(next),
      subscribePush({
        offset: 4,
        epoch: "F",
        recovered: true,
        publications: [pub(2, "F")],
        more: true,
      }),
    );
    await flush();
    expect(next.command("history").params).toEqual({ channel: CHANNEL, sinceOffset: 2 });
    next.receive(pubPush(5, "F"));
    next.reply("history", { publications: [pub(3, "F"), pub(4, "F")], offset: 5, epoch: "F" });
    await flush();
    expect(seen).toEqual([2, 3, 4, 5]);
    expect(events).toEqual(["state_lost F", "recovered"]);
  });

  it("is kept across disconnect() and restored on the next connect()", async () => {
    const { client, socket } = await connectedClient({ random: () => 0 });
    socket.receive(subscribePush({ offset: 3 }));
    client.disconnect();
    client.connect();
    await flush();
    const next = FakeWebSocket.last();
    next.open();
    await flush();
    expect(next.command("connect").params.subs).toEqual({ [CHANNEL]: { offset: 3, epoch: "E" } });
    next.receive(connectReply(next), serverUnsubscribe());
    await flush();
    expect(client.getServerSubscriptions()).toEqual([]);
    client.disconnect();
    client.connect();
    await flush();
    FakeWebSocket.last().open();
    await flush();
    expect(FakeWebSocket.last().command("connect").params.subs).toBeUndefined();
  });
});
