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
  useRpc,
  useServerSubscriptions,
  useTyping,
  type ConnectionSnapshot,
  type PresenceView,
  type RpcState,
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
        hook: () => usePresence(CHANNEL).members,
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

  it("usePresence gives members with their state, myState and setMyState", async () => {
    const { client, socket } = await connectedClient();
    const view: { current?: PresenceView } = {};
    render(
      client,
      createElement(Probe<PresenceView>, { hook: () => usePresence(CHANNEL), out: view }),
    );
    await act(flush);
    socket.reply("subscribe", ok);
    await act(flush);
    socket.reply("presence", { members: [{ user: "ann", client: "c1", joinedAt: 1, state: 1 }] });
    await act(flush);
    expect(view.current?.members.map((m) => [m.userId, m.state])).toEqual([["ann", 1]]);
    expect(view.current?.myState).toBeNull();
    let done: Promise<void> | undefined;
    act(() => {
      done = view.current?.setMyState({ cell: "A1" });
    });
    expect(view.current?.myState).toEqual({ cell: "A1" });
    expect(socket.command("setPresenceState").params).toEqual({
      channel: CHANNEL,
      state: { cell: "A1" },
    });
    socket.reply("setPresenceState");
    await act(flush);
    await done;
    act(() =>
      socket.receive({
        push: { channel: CHANNEL, state: { user: "ann", client: "c1", state: 2 } },
      }),
    );
    expect(view.current?.members.map((m) => m.state)).toEqual([2]);
  });

  it("useConnectionState follows state, latency and degradation", async () => {
    const { client } = fakeClient();
    const state: { current?: ConnectionSnapshot } = {};
    render(
      client,
      createElement(Probe<ConnectionSnapshot>, { hook: useConnectionState, out: state }),
    );
    expect(state.current).toEqual({ state: "disconnected", latency: null, degraded: false });
    act(() => {
      void client.connect();
    });
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

  it("useRpc: loading, then the data or the error of the last call", async () => {
    const { client, socket } = await connectedClient();
    const rpc: { current?: RpcState<{ offset: number }> } = {};
    render(
      client,
      createElement(Probe<RpcState<{ offset: number }>>, {
        hook: () => useRpc<{ offset: number }>("message:send"),
        out: rpc,
      }),
    );
    expect(rpc.current).toMatchObject({ data: undefined, error: null, loading: false });
    let first: Promise<{ offset: number }> | undefined;
    act(() => {
      first = rpc.current?.call({ text: "hi" });
    });
    expect(rpc.current?.loading).toBe(true);
    expect(socket.command("rpc").params).toEqual({ method: "message:send", data: { text: "hi" } });
    await act(async () => {
      socket.reply("rpc", { data: { offset: 3 } });
      await flush();
    });
    expect(await first).toEqual({ offset: 3 });
    expect(rpc.current).toMatchObject({ data: { offset: 3 }, error: null, loading: false });
    act(() => {
      // Ignored: the error lands in the state, not in an unhandled rejection.
      void rpc.current?.call({ text: "" });
    });
    await act(async () => {
      socket.fail("rpc", 1422, false, "text is empty");
      await flush();
    });
    expect(rpc.current?.loading).toBe(false);
    expect(rpc.current?.data).toEqual({ offset: 3 });
    expect(rpc.current?.error).toMatchObject({ code: 1422 });
  });

  it("useServerSubscriptions re-renders as the server adds and removes them; channel hooks subscribe nothing", async () => {
    const { client, socket } = await connectedClient();
    const channels: { current?: readonly string[] } = {};
    const members: { current?: readonly PresenceMember[] } = {};
    render(client, [
      createElement(Probe<readonly string[]>, {
        key: "s",
        hook: useServerSubscriptions,
        out: channels,
      }),
    ]);
    expect(channels.current).toEqual([]);
    act(() => socket.receive({ push: { channel: CHANNEL, subscribe: ok } }));
    expect(channels.current).toEqual([CHANNEL]);
    act(() =>
      root.render(
        createElement(
          StrictMode,
          null,
          createElement(HeraldProvider, { client }, [
            createElement(Probe<readonly string[]>, {
              key: "s",
              hook: useServerSubscriptions,
              out: channels,
            }),
            createElement(Probe<readonly PresenceMember[]>, {
              key: "p",
              hook: () => usePresence(CHANNEL).members,
              out: members,
            }),
          ]),
        ),
      ),
    );
    await act(flush);
    socket.reply("presence", { members: [{ user: "ann", client: "c1", joinedAt: 1 }] });
    await act(flush);
    expect(members.current?.map((m) => m.userId)).toEqual(["ann"]);
    act(() =>
      socket.receive({
        push: {
          channel: CHANNEL,
          unsubscribe: { code: 2000, reason: "unsubscribed by the server" },
        },
      }),
    );
    expect(channels.current).toEqual([]);
    expect(socket.commands("subscribe")).toHaveLength(0);
    expect(socket.commands("unsubscribe")).toHaveLength(0);
  });
});
