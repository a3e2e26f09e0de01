import { describe, expect, it, vi } from "vitest";
import { HeraldError } from "../../src/index.js";
import {
  connectedClient,
  FakeWebSocket,
  flush,
  useFakeClockAndSockets,
} from "../helpers/fake-websocket.js";

const CHANNEL = "org:acme:ch:general";
const ok = { offset: 0, epoch: "E", recoverable: true, recovered: false, publications: [] };
const member = (user: string, client: string, extra: object = {}) => ({
  user,
  client,
  joinedAt: 1000,
  ...extra,
});

/** A connected client subscribed to CHANNEL, tracking its presence. */
async function subscribed() {
  const made = await connectedClient();
  const sub = made.client.subscribe(CHANNEL);
  sub.presence.getMembers();
  await flush();
  made.socket.reply("subscribe", ok);
  await flush();
  return { ...made, sub };
}

describe("presence state", () => {
  useFakeClockAndSockets();

  it("sends setPresenceState and resolves on the acknowledgement", async () => {
    const { client, socket, sub } = await subscribed();
    const done = client.setPresenceState(CHANNEL, { cursor: [1, 2] });
    expect(socket.command("setPresenceState").params).toEqual({
      channel: CHANNEL,
      state: { cursor: [1, 2] },
    });
    expect(sub.presence.getMyState()).toEqual({ cursor: [1, 2] });
    expect(client.getPresenceState(CHANNEL)).toEqual({ cursor: [1, 2] });
    socket.reply("setPresenceState");
    await expect(done).resolves.toBeUndefined();
  });

  it("coalesces calls closer than 250 ms: the last state goes out", async () => {
    const { client, socket } = await subscribed();
    const first = client.setPresenceState(CHANNEL, 1);
    const second = client.setPresenceState(CHANNEL, 2);
    const third = client.setPresenceState(CHANNEL, 3);
    expect(socket.commands("setPresenceState").map((c) => c.params.state)).toEqual([1]);
    socket.reply("setPresenceState");
    await vi.advanceTimersByTimeAsync(249);
    expect(socket.commands("setPresenceState")).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(socket.commands("setPresenceState").map((c) => c.params.state)).toEqual([1, 3]);
    socket.reply("setPresenceState");
    await Promise.all([first, second, third]);
  });

  it("rejects a state over 1024 bytes of JSON locally", async () => {
    const { client, socket } = await subscribed();
    const error = await client.setPresenceState(CHANNEL, "x".repeat(1100)).catch((e) => e);
    expect(error).toBeInstanceOf(HeraldError);
    expect(error).toMatchObject({ code: "message_too_large" });
    expect(socket.commands("setPresenceState")).toHaveLength(0);
  });

  it("sends the state again after a reconnect's resubscribe", async () => {
    const { client, socket } = await subscribed();
    void client.setPresenceState(CHANNEL, "typing-cell:B3");
    socket.reply("setPresenceState");
    await flush();
    socket.serverClose(4200);
    await vi.advanceTimersByTimeAsync(1000);
    const next = FakeWebSocket.last();
    next.accept();
    await flush();
    expect(next.commands("setPresenceState")).toHaveLength(0);
    next.reply("subscribe", ok);
    await flush();
    expect(next.command("setPresenceState").params).toEqual({
      channel: CHANNEL,
      state: "typing-cell:B3",
    });
  });

  it("settles a state whose reply the connection lost with the resend after the resubscribe", async () => {
    const { client, socket } = await subscribed();
    const done = client.setPresenceState(CHANNEL, "x");
    socket.serverClose(4200);
    await vi.advanceTimersByTimeAsync(1000);
    const next = FakeWebSocket.last();
    next.accept();
    await flush();
    next.reply("subscribe", ok);
    await flush();
    expect(next.command("setPresenceState").params.state).toBe("x");
    next.reply("setPresenceState");
    await expect(done).resolves.toBeUndefined();
  });

  it("shows members' states from presence results, state pushes and diffs", async () => {
    const { socket, sub } = await subscribed();
    socket.reply("presence", {
      members: [member("ann", "c1", { state: { x: 1 } }), member("bob", "c2")],
    });
    await flush();
    const states = () => sub.presence.getMembers().map((m) => [m.clientId, m.state]);
    expect(states()).toEqual([
      ["c1", { x: 1 }],
      ["c2", undefined],
    ]);
    socket.receive({ push: { channel: CHANNEL, state: { user: "bob", client: "c2", state: 7 } } });
    expect(states()).toEqual([
      ["c1", { x: 1 }],
      ["c2", 7],
    ]);
    socket.receive({
      push: { channel: CHANNEL, state: { user: "ann", client: "c1", state: null } },
    });
    expect(states()).toEqual([
      ["c1", undefined],
      ["c2", 7],
    ]);
    // Leaves, then joins, then states.
    socket.receive({
      push: {
        channel: CHANNEL,
        presence: {
          leaves: [member("bob", "c2")],
          joins: [member("cy", "c3")],
          states: [{ user: "cy", client: "c3", state: "here" }],
        },
      },
    });
    expect(states()).toEqual([
      ["c1", undefined],
      ["c3", "here"],
    ]);
  });

  it("forgets the state when the channel is unsubscribed", async () => {
    const { client, socket, sub } = await subscribed();
    void client.setPresenceState(CHANNEL, 1);
    socket.reply("setPresenceState");
    sub.unsubscribe();
    await flush();
    expect(client.getPresenceState(CHANNEL)).toBeNull();
    await expect(client.setPresenceState(CHANNEL, 2)).rejects.toBeInstanceOf(HeraldError);
  });

  it("keeps setPresenceState(status) for the user's status", async () => {
    const { client, socket } = await connectedClient();
    const done = client.setPresenceState("away");
    expect(socket.command("setStatus").params).toEqual({ status: "away" });
    socket.reply("setStatus");
    await done;
  });
});
