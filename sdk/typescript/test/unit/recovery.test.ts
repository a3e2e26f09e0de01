import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { SubscribedInfo } from "../../src/index.js";
import { connectedClient, FakeWebSocket, flush } from "../helpers/fake-websocket.js";

const CHANNEL = "org:acme:ch:general";
const pub = (offset: number, epoch = "E") => ({
  event: "m",
  data: { offset },
  offset,
  epoch,
  ts: 1,
});
const push = (offset: number, epoch = "E") => ({
  push: { channel: CHANNEL, pub: pub(offset, epoch) },
});

async function setup() {
  const made = await connectedClient({ random: () => 0 });
  const sub = made.client.subscribe(CHANNEL);
  const seen: number[] = [];
  sub.on("m", (data) => seen.push((data as { offset: number }).offset));
  const events: string[] = [];
  sub.on("recovered", (info: SubscribedInfo) =>
    events.push(`recovered ${info.recoveredPublications}`),
  );
  sub.on("state_lost", () => events.push("state_lost"));
  await flush();
  made.socket.reply("subscribe", {
    offset: 5,
    epoch: "E",
    recoverable: true,
    recovered: false,
    publications: [],
  });
  await flush();
  return { ...made, sub, seen, events };
}

/** Drops the connection with a reconnect-now code and opens the next one. */
async function reconnect() {
  FakeWebSocket.last().serverClose(4201, "slow consumer");
  await vi.advanceTimersByTimeAsync(1);
  const socket = FakeWebSocket.last();
  socket.accept("c2");
  await flush();
  return socket;
}

describe("recovery", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("resubscribes with the last position, delivers the missed ones once and emits recovered", async () => {
    const { socket, seen, events, sub } = await setup();
    socket.receive(push(6), push(7));
    expect(sub.position).toEqual({ offset: 7, epoch: "E" });
    const next = await reconnect();
    expect(next.command("subscribe").params).toEqual({
      channel: CHANNEL,
      recover: { offset: 7, epoch: "E" },
    });
    // Pushes that race the reply are held back and deduplicated.
    next.receive(push(9));
    next.reply("subscribe", {
      offset: 9,
      epoch: "E",
      recoverable: true,
      recovered: true,
      publications: [pub(6), pub(7), pub(8), pub(9)],
    });
    await flush();
    next.receive(push(9), push(10));
    expect(seen).toEqual([6, 7, 8, 9, 10]);
    expect(events).toEqual(["recovered 2"]);
  });

  it("pages a recovery that did not fit the reply, holding live pushes until the last page", async () => {
    const { seen, events, sub } = await setup();
    const next = await reconnect();
    next.reply("subscribe", {
      offset: 12,
      epoch: "E",
      recoverable: true,
      recovered: true,
      publications: [pub(6), pub(7)],
      more: true,
    });
    await flush();
    expect(next.command("history").params).toEqual({ channel: CHANNEL, sinceOffset: 7 });
    expect(events).toEqual([]);
    expect(sub.state).toBe("subscribing");
    // Live pushes past the reply's offset wait for the pages.
    next.receive(push(13), push(14));
    next.reply("history", {
      publications: [pub(8), pub(9), pub(10)],
      offset: 14,
      epoch: "E",
      more: true,
    });
    await flush();
    expect(next.command("history").params).toEqual({ channel: CHANNEL, sinceOffset: 10 });
    // A page may reach past the reply's offset: those come as live pushes instead.
    next.reply("history", { publications: [pub(11), pub(12), pub(13)], offset: 14, epoch: "E" });
    await flush();
    next.receive(push(14), push(15));
    expect(seen).toEqual([6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    expect(events).toEqual(["recovered 7"]);
    expect(next.commands("history")).toHaveLength(2);
    expect(sub.position).toEqual({ offset: 15, epoch: "E" });
  });

  it("emits state_lost when a page shows history no longer reaches back", async () => {
    const { seen, events, sub } = await setup();
    const next = await reconnect();
    next.reply("subscribe", {
      offset: 20,
      epoch: "E",
      recoverable: true,
      recovered: true,
      publications: [pub(6)],
      more: true,
    });
    await flush();
    next.receive(push(21));
    // History was trimmed past offset 6 meanwhile.
    next.reply("history", { publications: [pub(9), pub(10)], offset: 21, epoch: "E" });
    await flush();
    expect(events).toEqual(["state_lost"]);
    expect(seen).toEqual([6, 21]);
    expect(sub.position).toEqual({ offset: 21, epoch: "E" });
  });

  it("retries a page refused with a temporary error, and resumes after a reconnect mid-paging", async () => {
    const { seen, events } = await setup();
    let next = await reconnect();
    next.reply("subscribe", {
      offset: 9,
      epoch: "E",
      recoverable: true,
      recovered: true,
      publications: [pub(6)],
      more: true,
    });
    await flush();
    next.fail("history", 110, true, "too many requests");
    await flush();
    expect(next.commands("history")).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(2000);
    expect(next.commands("history")).toHaveLength(2);
    next.reply("history", { publications: [pub(7)], offset: 9, epoch: "E", more: true });
    await flush();
    // The connection drops with offsets 8 and 9 still missing: recover from 7.
    next = await reconnect();
    expect(next.command("subscribe").params).toEqual({
      channel: CHANNEL,
      recover: { offset: 7, epoch: "E" },
    });
    next.reply("subscribe", {
      offset: 9,
      epoch: "E",
      recoverable: true,
      recovered: true,
      publications: [pub(8), pub(9)],
    });
    await flush();
    expect(seen).toEqual([6, 7, 8, 9]);
    expect(events).toEqual(["recovered 2"]);
  });

  it("emits state_lost when history no longer covers the gap, and goes on from the new position", async () => {
    const { socket, seen, events, sub } = await setup();
    socket.receive(push(6));
    const next = await reconnect();
    next.reply("subscribe", {
      offset: 3,
      epoch: "F",
      recoverable: true,
      recovered: false,
      publications: [],
    });
    await flush();
    expect(events).toEqual(["state_lost"]);
    expect(sub.position).toEqual({ offset: 3, epoch: "F" });
    next.receive(push(3, "F"), push(4, "F"));
    expect(seen).toEqual([6, 4]);
  });

  it("resubscribes at once on an unsubscribe push with code 2500", async () => {
    const { socket, events } = await setup();
    socket.receive(push(6));
    socket.receive({
      push: { channel: CHANNEL, unsubscribe: { code: 2500, reason: "resubscribe" } },
    });
    expect(socket.commands("subscribe")).toHaveLength(2);
    expect(socket.command("subscribe").params.recover).toEqual({ offset: 6, epoch: "E" });
    socket.reply("subscribe", {
      offset: 7,
      epoch: "E",
      recoverable: true,
      recovered: true,
      publications: [pub(7)],
    });
    await flush();
    expect(events).toEqual(["recovered 1"]);
  });

  it("ends the subscription on an unsubscribe push with code 2000", async () => {
    const { client, socket, sub } = await setup();
    const ended: number[] = [];
    sub.on("unsubscribed", (info) => ended.push(info.code));
    socket.receive({ push: { channel: CHANNEL, unsubscribe: { code: 2000, reason: "server" } } });
    await flush();
    expect(ended).toEqual([2000]);
    expect(sub.state).toBe("ended");
    expect(client.getChannels()).toEqual([]);
    expect(socket.commands("subscribe")).toHaveLength(1);
    await reconnect();
    expect(FakeWebSocket.last().commands("subscribe")).toHaveLength(0);
  });

  it("does not recover on channels without history", async () => {
    const { client } = await connectedClient({ random: () => 0 });
    const sub = client.subscribe("public:lobby");
    const seen: unknown[] = [];
    sub.on("*", (data) => seen.push(data));
    await flush();
    FakeWebSocket.last().reply("subscribe", {
      offset: 0,
      epoch: "",
      recoverable: false,
      recovered: false,
      publications: [],
    });
    await flush();
    FakeWebSocket.last().receive({
      push: { channel: "public:lobby", pub: { event: "x", data: 1, ts: 1 } },
    });
    FakeWebSocket.last().receive({
      push: { channel: "public:lobby", pub: { event: "x", data: 1, ts: 2 } },
    });
    expect(seen).toEqual([1, 1]);
    const next = await reconnect();
    expect(next.command("subscribe").params).toEqual({ channel: "public:lobby" });
  });
});
