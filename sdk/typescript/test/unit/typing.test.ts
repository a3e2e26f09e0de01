import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Typer } from "../../src/index.js";
import { connectedClient, FakeWebSocket, flush } from "../helpers/fake-websocket.js";

const CHANNEL = "org:acme:ch:general";

async function subscribed(typing: object[] = []) {
  const made = await connectedClient();
  const sub = made.client.subscribe(CHANNEL);
  await flush();
  made.socket.reply("subscribe", {
    offset: 0,
    epoch: "e",
    recoverable: true,
    recovered: false,
    publications: [],
    typing,
  });
  await flush();
  return { ...made, sub };
}

describe("typing", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("sends active:true at most once a second and stops after 5 s idle", async () => {
    const { socket, sub } = await subscribed();
    const typing = () => socket.commands("typing").map((c) => c.params.active);
    sub.typing.start();
    sub.typing.start();
    await vi.advanceTimersByTimeAsync(500);
    sub.typing.start();
    expect(typing()).toEqual([true]);
    await vi.advanceTimersByTimeAsync(500);
    sub.typing.start(); // 1 s after the first
    expect(typing()).toEqual([true, true]);
    await vi.advanceTimersByTimeAsync(4999);
    expect(typing()).toEqual([true, true]);
    await vi.advanceTimersByTimeAsync(1);
    expect(typing()).toEqual([true, true, false]);
    expect(socket.command("typing").params.channel).toBe(CHANNEL);
  });

  it("stop() sends active:false once, and only after a start", async () => {
    const { socket, sub } = await subscribed();
    sub.typing.stop();
    expect(socket.commands("typing")).toEqual([]);
    sub.typing.start();
    sub.typing.stop();
    sub.typing.stop();
    expect(socket.commands("typing").map((c) => c.params.active)).toEqual([true, false]);
  });

  it("stops on unsubscribe, before the unsubscribe", async () => {
    const { socket, sub } = await subscribed();
    sub.typing.start();
    sub.unsubscribe();
    await flush();
    const tail = socket
      .commands()
      .filter((c) => c.method !== "ping")
      .slice(-2);
    expect(tail.map((c) => [c.method, c.params.active])).toEqual([
      ["typing", false],
      ["unsubscribe", undefined],
    ]);
  });

  it("stops on disconnect", async () => {
    const { client, socket, sub } = await subscribed();
    sub.typing.start();
    client.disconnect();
    expect(socket.commands("typing").map((c) => c.params.active)).toEqual([true, false]);
  });

  it("tracks typers from the subscribe result and pushes, with a 6 s safety expiry", async () => {
    const { socket, sub } = await subscribed([
      { user: "ann", info: { name: "Ann" }, active: true },
    ]);
    const changes: string[][] = [];
    sub.typing.onChange((typers: readonly Typer[]) => changes.push(typers.map((t) => t.userId)));
    expect(sub.typing.getTypers()).toEqual([{ userId: "ann", name: "Ann", info: { name: "Ann" } }]);
    socket.receive({
      push: { channel: CHANNEL, typing: { user: "bob", info: null, active: true } },
    });
    expect(changes).toEqual([["ann", "bob"]]);
    socket.receive({ push: { channel: CHANNEL, typing: { user: "ann", active: false } } });
    expect(changes.at(-1)).toEqual(["bob"]);
    await vi.advanceTimersByTimeAsync(5000);
    socket.receive({ push: { channel: CHANNEL, typing: { user: "bob", active: true } } }); // refresh
    await vi.advanceTimersByTimeAsync(5999);
    expect(sub.typing.getTypers().map((t) => t.userId)).toEqual(["bob"]);
    await vi.advanceTimersByTimeAsync(1);
    expect(sub.typing.getTypers()).toEqual([]);
    expect(changes.at(-1)).toEqual([]);
  });
});
