import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { connectedClient, FakeWebSocket, flush } from "../helpers/fake-websocket.js";

const CHANNEL = "org:acme:ch:general";
const pub = (offset: number, epoch = "E") => ({ event: "m", data: offset, offset, epoch, ts: 1 });

describe("history", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("asks for pages until the channel's offset at the first page", async () => {
    const { client, socket } = await connectedClient();
    const pending = client.history(CHANNEL, { sinceOffset: 2 });
    await flush();
    expect(socket.command("history").params).toEqual({ channel: CHANNEL, sinceOffset: 2 });
    socket.reply("history", { publications: [pub(3), pub(4)], offset: 6, epoch: "E", more: true });
    await flush();
    expect(socket.command("history").params).toEqual({ channel: CHANNEL, sinceOffset: 4 });
    // Published meanwhile (7): not part of this read.
    socket.reply("history", { publications: [pub(5), pub(6), pub(7)], offset: 7, epoch: "E" });
    const history = await pending;
    expect(history.publications.map((p) => p.offset)).toEqual([3, 4, 5, 6]);
    expect(history).toMatchObject({ offset: 6, epoch: "E", more: false });
    expect(socket.commands("history")).toHaveLength(2);
  });

  it("stops at the limit, asking each page for what is left of it", async () => {
    const { client, socket } = await connectedClient();
    const pending = client.history(CHANNEL, { limit: 3 });
    await flush();
    expect(socket.command("history").params).toEqual({ channel: CHANNEL, limit: 3 });
    socket.reply("history", { publications: [pub(1), pub(2)], offset: 9, epoch: "E", more: true });
    await flush();
    expect(socket.command("history").params).toEqual({
      channel: CHANNEL,
      limit: 1,
      sinceOffset: 2,
    });
    socket.reply("history", { publications: [pub(3)], offset: 9, epoch: "E", more: true });
    const history = await pending;
    expect(history.publications.map((p) => p.offset)).toEqual([1, 2, 3]);
    expect(history.more).toBe(false);
  });

  it("says `more` when the epoch changed between pages", async () => {
    const { client, socket } = await connectedClient();
    const pending = client.history(CHANNEL);
    await flush();
    socket.reply("history", { publications: [pub(1)], offset: 5, epoch: "E", more: true });
    await flush();
    socket.reply("history", { publications: [pub(1, "F")], offset: 1, epoch: "F" });
    const history = await pending;
    expect(history.publications.map((p) => p.offset)).toEqual([1]);
    expect(history).toMatchObject({ offset: 5, epoch: "E", more: true });
  });
});
