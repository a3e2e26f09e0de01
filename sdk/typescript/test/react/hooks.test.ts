import { act, createElement, StrictMode, type ReactNode } from "react";
import { createRoot, type Root } from "react-dom/client";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { HeraldClient, PresenceMember, Typer } from "../../src/index.js";
import {
  HeraldProvider,
  useChannelEvent,
  useConnectionState,
  useInvalidateOn,
  usePresence,
  useTyping,
  type ConnectionSnapshot,
  type TypingState,
} from "../../src/react/index.js";
import { connectedClient, FakeWebSocket, fakeClient, flush } from "../helpers/fake-websocket.js";

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

const CHANNEL = "org:acme:ch:general";
const ok = { offset: 0, epoch: "E", recoverable: true, recovered: false, publications: [] };

let root: Root;
let container: HTMLElement;

function render(client: HeraldClient, node: ReactNode) {
  container = document.createElement("div");
  root = createRoot(container);
  act(() => {
    root.render(createElement(StrictMode, null, createElement(HeraldProvider, { client }, node)));
  });
}

function Probe<T>({ hook, out }: { hook: () => T; out: { current?: T } }) {
  out.current = hook();
  return null;
}

describe("React hooks", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeWebSocket.reset();
  });
  afterEach(() => {
    act(() => root?.unmount());
    vi.useRealTimers();
  });

  it("useChannelEvent: one subscription through StrictMode's double mount, gone on unmount", async () => {
    const { client, socket } = await connectedClient();
    const seen: unknown[] = [];
    function Messages() {
      useChannelEvent<{ id: string }>(CHANNEL, "message.created", (data) => seen.push(data.id));
      return null;
    }
    render(client, createElement(Messages));
    await act(flush);
    expect(socket.commands("subscribe")).toHaveLength(1);
    expect(socket.commands("unsubscribe")).toHaveLength(0);
    socket.reply("subscribe", ok);
    await act(flush);
    socket.receive({
      push: {
        channel: CHANNEL,
        pub: { event: "message.created", data: { id: "m1" }, offset: 1, epoch: "E" },
      },
    });
    expect(seen).toEqual(["m1"]);
    act(() => root.unmount());
    await act(flush);
    expect(socket.commands("unsubscribe")).toHaveLength(1);
  });

  it("usePresence and useTyping re-render with the channel's members and typers", async () => {
    const { client, socket } = await connectedClient();
    const members: { current?: readonly PresenceMember[] } = {};
    const typing: { current?: TypingState } = {};
    render(client, [
      createElement(Probe<readonly PresenceMember[]>, {
        key: "p",
        hook: () => usePresence(CHANNEL),
        out: members,
      }),
      createElement(Probe<TypingState>, { key: "t", hook: () => useTyping(CHANNEL), out: typing }),
    ]);
    await act(flush);
    expect(socket.commands("subscribe")).toHaveLength(1);
    socket.reply("subscribe", ok);
    await act(flush);
    socket.reply("presence", {
      members: [{ user: "ann", client: "c1", info: { name: "Ann" }, joinedAt: 1 }],
    });
    await act(flush);
    expect(members.current?.map((m) => m.name)).toEqual(["Ann"]);
    act(() =>
      socket.receive({ push: { channel: CHANNEL, typing: { user: "bob", active: true } } }),
    );
    expect(typing.current?.typers.map((t: Typer) => t.userId)).toEqual(["bob"]);
    act(() => typing.current?.setTyping(true));
    expect(socket.command("typing").params).toEqual({ channel: CHANNEL, active: true });
  });

  it("useConnectionState follows state, latency and degradation", async () => {
    const { client } = fakeClient();
    const state: { current?: ConnectionSnapshot } = {};
    render(
      client,
      createElement(Probe<ConnectionSnapshot>, { hook: useConnectionState, out: state }),
    );
    expect(state.current).toEqual({ state: "disconnected", latency: null, degraded: false });
    act(() => client.connect());
    await act(flush);
    const socket = FakeWebSocket.last();
    act(() => socket.accept());
    await act(flush);
    await act(() => vi.advanceTimersByTimeAsync(2500));
    act(() => socket.reply("ping", { ts: Date.now() }));
    await act(flush);
    expect(state.current).toEqual({ state: "connected", latency: 2500, degraded: true });
  });

  it("useInvalidateOn invalidates the query a publication maps to", async () => {
    const { client, socket } = await connectedClient();
    const queryClient = { invalidateQueries: vi.fn() };
    function Invalidate() {
      useInvalidateOn<{ id: string }>(queryClient, CHANNEL, "message.updated", (data) => [
        "message",
        data.id,
      ]);
      return null;
    }
    render(client, createElement(Invalidate));
    await act(flush);
    socket.reply("subscribe", ok);
    await act(flush);
    socket.receive({
      push: {
        channel: CHANNEL,
        pub: { event: "message.updated", data: { id: "m7" }, offset: 1, epoch: "E" },
      },
    });
    expect(queryClient.invalidateQueries).toHaveBeenCalledWith({ queryKey: ["message", "m7"] });
  });
});
