import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { PresenceMember } from "../../src/index.js";
import { toMember } from "../../src/presence.js";
import { connectedClient, FakeWebSocket, flush } from "../helpers/fake-websocket.js";

const CHANNEL = "org:acme:ch:general";
const wire = (user: string, client: string, extra: object = {}) => ({
  user,
  client,
  info: { name: user.toUpperCase(), avatar: `https://img/${user}` },
  joinedAt: 1000,
  ...extra,
});

async function tracked() {
  const made = await connectedClient();
  const sub = made.client.subscribe(CHANNEL);
  const updates: string[][] = [];
  sub.presence.onUpdate((members) => updates.push(members.map((m) => m.clientId)));
  await flush();
  made.socket.reply("subscribe", {
    offset: 0,
    epoch: "E",
    recoverable: true,
    recovered: false,
    publications: [],
  });
  await flush();
  return { ...made, sub, updates };
}

describe("presence", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("maps the wire member, keeping the client id and info", () => {
    expect(toMember(wire("ann", "c1", { status: "busy" }))).toEqual({
      userId: "ann",
      clientId: "c1",
      name: "ANN",
      avatar: "https://img/ann",
      status: "busy",
      joinedAt: 1000,
      info: { name: "ANN", avatar: "https://img/ann" },
    });
    expect(toMember({ user: "x", client: "c", joinedAt: 5 })).toEqual({
      userId: "x",
      clientId: "c",
      status: "online",
      joinedAt: 5,
      info: null,
    });
  });

  it("fetches the members after subscribe, then follows joins and leaves", async () => {
    const { socket, sub, updates } = await tracked();
    expect(socket.command("presence").params).toEqual({ channel: CHANNEL });
    // A join that races the presence reply is applied after it, once.
    socket.receive({ push: { channel: CHANNEL, join: wire("bob", "c2") } });
    socket.reply("presence", { members: [wire("ann", "c1"), wire("bob", "c2")] });
    await flush();
    expect(updates).toEqual([["c1", "c2"]]);
    const joins: PresenceMember[] = [];
    const leaves: PresenceMember[] = [];
    sub.presence.onJoin((m) => joins.push(m));
    sub.presence.onLeave((m) => leaves.push(m));
    socket.receive({ push: { channel: CHANNEL, join: wire("cy", "c3") } });
    socket.receive({ push: { channel: CHANNEL, leave: wire("ann", "c1") } });
    expect(joins.map((m) => m.userId)).toEqual(["cy"]);
    expect(leaves.map((m) => m.userId)).toEqual(["ann"]);
    expect(sub.presence.getMembers().map((m) => m.clientId)).toEqual(["c2", "c3"]);
    expect(updates.at(-1)).toEqual(["c2", "c3"]);
  });

  it("applies batched presence diffs: leaves first, then joins, one update each", async () => {
    const { socket, sub, updates } = await tracked();
    // A diff that races the presence reply is applied after it.
    socket.receive({
      push: { channel: CHANNEL, presence: { joins: [wire("bob", "c2"), wire("cy", "c3")] } },
    });
    socket.reply("presence", {
      members: [wire("ann", "c1", { status: "away" }), wire("bob", "c2")],
    });
    await flush();
    expect(updates).toEqual([["c1", "c2", "c3"]]);
    const joins: string[] = [];
    const leaves: string[] = [];
    sub.presence.onJoin((m) => joins.push(m.clientId));
    sub.presence.onLeave((m) => leaves.push(m.clientId));
    // c3 left and came back (a resubscribe): in both lists; a second tab of ann's joins
    // with her status.
    socket.receive({
      push: {
        channel: CHANNEL,
        presence: {
          leaves: [wire("bob", "c2"), wire("cy", "c3")],
          joins: [wire("cy", "c3", { joinedAt: 2000 }), wire("ann", "c4")],
        },
      },
    });
    expect(leaves).toEqual(["c2", "c3"]);
    expect(joins).toEqual(["c3", "c4"]);
    const members = sub.presence.getMembers();
    expect(members.map((m) => m.clientId)).toEqual(["c1", "c3", "c4"]);
    expect(members[1]?.joinedAt).toBe(2000);
    expect(members[2]?.status).toBe("away");
    expect(updates).toHaveLength(2);
    // Nothing new (a member already known, a leave of one not there): no update.
    socket.receive({
      push: {
        channel: CHANNEL,
        presence: { joins: [wire("ann", "c1")], leaves: [wire("x", "c9")] },
      },
    });
    expect(updates).toHaveLength(2);
  });

  it("reads every page of a big member list before showing it", async () => {
    const { socket, updates } = await tracked();
    socket.receive({ push: { channel: CHANNEL, leave: wire("ann", "c1") } });
    socket.reply("presence", {
      members: [wire("ann", "c1"), wire("bob", "c2")],
      more: true,
      cursor: "1000.c2",
    });
    await flush();
    expect(updates).toEqual([]);
    expect(socket.command("presence").params).toEqual({ channel: CHANNEL, cursor: "1000.c2" });
    socket.reply("presence", { members: [wire("cy", "c3")] });
    await flush();
    // The leave that raced the pages is applied after the last one.
    expect(updates).toEqual([["c2", "c3"]]);
    expect(socket.commands("presence")).toHaveLength(2);
  });

  it("updates statuses from status pushes on org:<org>", async () => {
    const { socket, sub } = await tracked();
    socket.reply("presence", {
      members: [wire("ann", "c1", { status: "online" }), wire("ann", "c9")],
    });
    await flush();
    socket.receive({ push: { channel: "org:acme", status: { user: "ann", status: "away" } } });
    expect(sub.presence.getMembers().map((m) => m.status)).toEqual(["away", "away"]);
    // Another org's status does not apply.
    socket.receive({ push: { channel: "org:other", status: { user: "ann", status: "busy" } } });
    expect(sub.presence.getMembers().map((m) => m.status)).toEqual(["away", "away"]);
  });

  it("costs no command on channels nobody watches the presence of", async () => {
    const { client, socket } = await connectedClient();
    client.subscribe("org:acme:ch:quiet");
    await flush();
    socket.reply("subscribe", {
      offset: 0,
      epoch: "E",
      recoverable: true,
      recovered: false,
      publications: [],
    });
    await flush();
    expect(socket.commands("presence")).toEqual([]);
  });

  it("fetches again after a reconnect", async () => {
    const { socket } = await tracked();
    socket.reply("presence", { members: [wire("ann", "c1")] });
    await flush();
    socket.serverClose(4200);
    await vi.advanceTimersByTimeAsync(1000);
    const next = FakeWebSocket.last();
    next.accept();
    await flush();
    next.reply("subscribe", {
      offset: 0,
      epoch: "E",
      recoverable: true,
      recovered: true,
      publications: [],
    });
    await flush();
    expect(next.commands("presence")).toHaveLength(1);
  });
});
