import { afterEach, describe, expect, it, vi } from "vitest";
import {
  createClient,
  HeraldError,
  type SubscribedInfo,
  type WebSocketConstructor,
} from "../../src/index.js";
import {
  connectedClient,
  FakeWebSocket,
  fakeClient,
  flush,
  useFakeClockAndSockets,
} from "../helpers/fake-websocket.js";

const CHANNEL = "org:acme:ch:general";
const ok = { offset: 0, epoch: "E", recoverable: true, recovered: false, publications: [] };

describe("connect()", () => {
  useFakeClockAndSockets();

  it("resolves once connected; calls while trying share the attempt, calls while connected resolve at once", async () => {
    const { client } = fakeClient();
    let settled = 0;
    const first = client.connect().then(() => settled++);
    const second = client.connect().then(() => settled++);
    await flush();
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(settled).toBe(0);
    FakeWebSocket.last().accept();
    await Promise.all([first, second]);
    expect(settled).toBe(2);
    await client.connect();
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("rejects on a close that stops the client", async () => {
    const { client } = fakeClient();
    const connecting = client.connect().catch((e: unknown) => e);
    await flush();
    FakeWebSocket.last().open();
    FakeWebSocket.last().serverClose(4001, "unauthorized");
    const error = (await connecting) as HeraldError;
    expect(error).toBeInstanceOf(HeraldError);
    expect(error).toMatchObject({ code: "disconnected", temporary: false });
  });

  it("rejects on disconnect() with client_closed", async () => {
    const { client } = fakeClient();
    const connecting = client.connect().catch((e: HeraldError) => e.code);
    client.disconnect();
    expect(await connecting).toBe("client_closed");
  });

  it("rejects when reconnecting gives up, with a permanently_disconnected event", async () => {
    const { client } = fakeClient({ backoff: { maxAttempts: 2 } });
    const events: unknown[] = [];
    client.on("permanently_disconnected", (info) => events.push(info));
    const connecting = client.connect().catch((e: HeraldError) => e.message);
    for (let i = 0; i < 3; i++) {
      await vi.advanceTimersByTimeAsync(60_000);
      FakeWebSocket.last().serverClose(1006);
    }
    await flush();
    expect(client.getConnectionState()).toBe("permanently_disconnected");
    expect(events).toEqual([{ attempts: 2 }]);
    expect(await connecting).toBe("gave up reconnecting");
  });

  it("autoConnect connects at creation", async () => {
    fakeClient({ autoConnect: true });
    await flush();
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("the first subscribe connects a client never connected, not one disconnected", async () => {
    const { client } = fakeClient();
    client.subscribe(CHANNEL);
    await flush();
    expect(client.getConnectionState()).toBe("connecting");
    expect(FakeWebSocket.instances).toHaveLength(1);
    client.disconnect();
    client.subscribe("org:acme:ch:other");
    await flush();
    expect(client.getConnectionState()).toBe("disconnected");
    expect(FakeWebSocket.instances).toHaveLength(1);
  });
});

describe("channel API", () => {
  useFakeClockAndSockets();

  it("subscribeToChannel routes events and lifecycle events to their handlers", async () => {
    const { client, socket } = await connectedClient();
    const seen: unknown[] = [];
    const sub = client.subscribeToChannel<{ "message.created": { id: string } }>(CHANNEL, {
      "message.created": (data) => seen.push(data.id),
      subscribed: () => seen.push("subscribed"),
    });
    await flush();
    socket.reply("subscribe", ok);
    await flush();
    socket.receive({
      push: {
        channel: CHANNEL,
        pub: { event: "message.created", data: { id: "m1" }, offset: 1, epoch: "E" },
      },
    });
    expect(seen).toEqual(["subscribed", "m1"]);
    expect(sub.channel).toBe(CHANNEL);
  });

  it("unsubscribe(channel) drops every handle and unsubscribes on the gateway", async () => {
    const { client, socket } = await connectedClient();
    const a = client.subscribe(CHANNEL);
    const b = client.subscribe(CHANNEL);
    await flush();
    socket.reply("subscribe", ok);
    await flush();
    client.unsubscribe(CHANNEL);
    await flush();
    expect(a.state).toBe("ended");
    expect(b.state).toBe("ended");
    expect(socket.command("unsubscribe").params).toEqual({ channel: CHANNEL });
    expect(client.getChannels()).toEqual([]);
  });

  it("off removes a listener from the client and from a subscription", async () => {
    const { client, socket } = await connectedClient();
    const latencies: number[] = [];
    const onLatency = (latency: number) => latencies.push(latency);
    client.on("latency", onLatency);
    client.off("latency", onLatency);
    const seen: unknown[] = [];
    const handler = (data: unknown) => seen.push(data);
    const sub = client.subscribe(CHANNEL);
    sub.on("m", handler);
    await flush();
    socket.reply("subscribe", ok);
    await flush();
    const pub = (offset: number) =>
      socket.receive({
        push: { channel: CHANNEL, pub: { event: "m", data: offset, offset, epoch: "E" } },
      });
    pub(1);
    sub.off("m", handler);
    pub(2);
    expect(seen).toEqual([1]);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(latencies).toEqual([]);
  });

  it("presenceStats asks the gateway", async () => {
    const { client, socket } = await connectedClient();
    const stats = client.presenceStats(CHANNEL);
    expect(socket.command("presenceStats").params).toEqual({ channel: CHANNEL });
    socket.reply("presenceStats", { users: 2, clients: 3 });
    expect(await stats).toEqual({ users: 2, clients: 3 });
  });

  it("emits sync_requested (client and subscription) when recovery fails", async () => {
    const { client, socket } = await connectedClient();
    const sub = client.subscribe(CHANNEL);
    await flush();
    socket.reply("subscribe", { ...ok, offset: 5 });
    await flush();
    const fromClient: SubscribedInfo[] = [];
    const fromSub: SubscribedInfo[] = [];
    client.on("sync_requested", (info) => fromClient.push(info));
    sub.on("sync_requested", (info) => fromSub.push(info));
    socket.serverClose(4200);
    await vi.advanceTimersByTimeAsync(1000);
    const next = FakeWebSocket.last();
    next.accept();
    await flush();
    expect(next.command("subscribe").params.recover).toEqual({ offset: 5, epoch: "E" });
    next.reply("subscribe", { ...ok, offset: 9, epoch: "F" });
    await flush();
    expect(fromClient.map((i) => i.channel)).toEqual([CHANNEL]);
    expect(fromSub).toHaveLength(1);
    expect(fromSub[0]?.recovered).toBe(false);
  });

  it("subscribes with a fixed subscription token", async () => {
    const { client, socket } = await connectedClient();
    client.subscribe("org:acme:ch:secret", { token: "sub-token" });
    await flush();
    expect(socket.command("subscribe").params).toEqual({
      channel: "org:acme:ch:secret",
      token: "sub-token",
    });
  });
});

describe("URLs and sizes", () => {
  useFakeClockAndSockets();

  const make = (url: string, allowInsecureTransport?: boolean) => () =>
    createClient({
      url,
      getToken: () => "t",
      WebSocket: FakeWebSocket as unknown as WebSocketConstructor,
      ...(allowInsecureTransport === undefined ? {} : { allowInsecureTransport }),
    });

  it("refuses ws:// and http:// off localhost unless allowed", () => {
    expect(make("ws://rt.example.com/ws")).toThrow(/clear text/);
    expect(() =>
      createClient({
        url: "wss://rt.example.com/ws",
        sseUrl: "http://rt.example.com/sse",
        getToken: () => "t",
      }),
    ).toThrow(/clear text/);
    expect(make("ws://rt.example.com/ws", true)).not.toThrow();
    for (const url of [
      "ws://localhost:8080/ws",
      "ws://127.0.0.1:8080/ws",
      "ws://[::1]:8080/ws",
      "ws://app.localhost/ws",
      "wss://rt.example.com/ws",
    ]) {
      expect(make(url)).not.toThrow();
    }
  });

  it("fails a publish over maxMessageBytes locally, sending nothing", async () => {
    const { client, socket } = await connectedClient({ maxMessageBytes: 200 });
    const error = await client.publish(CHANNEL, "m", "é".repeat(100)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HeraldError);
    expect(error).toMatchObject({ code: "message_too_large", temporary: false });
    const rpc = await client.rpc("m", "x".repeat(300)).catch((e: HeraldError) => e.code);
    expect(rpc).toBe("message_too_large");
    expect(socket.commands("publish")).toHaveLength(0);
    expect(socket.commands("rpc")).toHaveLength(0);
    expect(client.getConnectionState()).toBe("connected");
  });

  it("reconnects after a 4009 close", async () => {
    const { client, socket } = await connectedClient();
    socket.serverClose(4009, "message too large");
    await flush();
    expect(client.getConnectionState()).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(2000);
    expect(FakeWebSocket.instances).toHaveLength(2);
  });
});

describe("publish throttle", () => {
  useFakeClockAndSockets();

  it("sends at most 10 per channel per second, the rest in order as the window allows", async () => {
    const { client, socket } = await connectedClient();
    const results = Array.from({ length: 25 }, (_, n) => client.publish(CHANNEL, "n", n));
    const other = client.publish("org:acme:ch:other", "n", "x");
    const data = () =>
      socket
        .commands("publish")
        .filter((c) => c.params.channel === CHANNEL)
        .map((c) => c.params.data as number);
    expect(data()).toEqual([...Array(10).keys()]);
    // Another channel has its own budget.
    expect(socket.commands("publish").some((c) => c.params.channel === "org:acme:ch:other")).toBe(
      true,
    );
    await vi.advanceTimersByTimeAsync(999);
    expect(data()).toHaveLength(10);
    await vi.advanceTimersByTimeAsync(1);
    expect(data()).toEqual([...Array(20).keys()]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(data()).toEqual([...Array(25).keys()]);
    for (const command of socket.commands("publish")) {
      socket.receive({ id: command.id, result: { offset: command.id, epoch: "E" } });
    }
    await Promise.all([...results, other]);
  });

  it("keeps the order when throttled publishes outlive the connection", async () => {
    const { client, socket } = await connectedClient();
    const results = Array.from({ length: 12 }, (_, n) => client.publish(CHANNEL, "n", n));
    socket.serverClose(4200);
    const late = client.publish(CHANNEL, "n", 12);
    await vi.advanceTimersByTimeAsync(1000);
    const next = FakeWebSocket.last();
    next.accept();
    await flush();
    await vi.advanceTimersByTimeAsync(1000);
    const sent = next.commands("publish");
    expect(sent.map((c) => c.params.data)).toEqual([...Array(13).keys()]);
    // The first ten went out before the drop: same keys after it.
    const before = socket.commands("publish").map((c) => c.params.idempotencyKey);
    expect(sent.slice(0, 10).map((c) => c.params.idempotencyKey)).toEqual(before);
    for (const command of sent) next.receive({ id: command.id, result: { offset: 1, epoch: "E" } });
    await Promise.all([...results, late]);
  });

  it("uses the caller's idempotency key", async () => {
    const { client, socket } = await connectedClient();
    void client.publish(CHANNEL, "m", 1, { idempotencyKey: "order-7" });
    expect(socket.command("publish").params).toEqual({
      channel: CHANNEL,
      event: "m",
      data: 1,
      idempotencyKey: "order-7",
    });
  });
});

describe("offline", () => {
  useFakeClockAndSockets();
  const target = new EventTarget();
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  function stubWindow(onLine: boolean) {
    vi.stubGlobal("addEventListener", target.addEventListener.bind(target));
    vi.stubGlobal("removeEventListener", target.removeEventListener.bind(target));
    vi.stubGlobal("navigator", { onLine });
  }

  it("drops the connection on `offline`, waits in the offline state, reconnects on `online`", async () => {
    stubWindow(true);
    const { client, socket } = await connectedClient();
    const states: string[] = [];
    client.onConnectionChange((state) => states.push(state));
    target.dispatchEvent(new Event("offline"));
    expect(client.getConnectionState()).toBe("offline");
    expect(socket.closedByClient).not.toBeNull();
    const queued = client.publish(CHANNEL, "m", 1);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    target.dispatchEvent(new Event("online"));
    await flush();
    const next = FakeWebSocket.last();
    next.accept();
    await flush();
    expect(states).toEqual(["offline", "reconnecting", "connected"]);
    next.reply("publish", { offset: 1, epoch: "E" });
    expect(await queued).toEqual({ offset: 1, epoch: "E" });
    client.disconnect();
  });

  it("starts offline when the browser has no network", async () => {
    stubWindow(false);
    const { client } = fakeClient();
    void client.connect();
    expect(client.getConnectionState()).toBe("offline");
    expect(FakeWebSocket.instances).toHaveLength(0);
    client.disconnect();
  });

  it("persists the offline queue with persistOfflineQueue, and sends it from the next page", async () => {
    const store = new Map<string, string>();
    const storage = {
      getItem: (key: string) => store.get(key) ?? null,
      setItem: (key: string, value: string) => void store.set(key, value),
      removeItem: (key: string) => void store.delete(key),
    };
    const first = fakeClient({ persistOfflineQueue: { storage } }).client;
    void first.publish(CHANNEL, "m", { n: 1 }).catch(() => {});
    void first.publish(CHANNEL, "m", { n: 2 }).catch(() => {});
    const saved = JSON.parse(store.get("herald:offline-queue") ?? "[]");
    expect(saved.map((p: { data: unknown }) => p.data)).toEqual([{ n: 1 }, { n: 2 }]);

    // A reload: a new client on the same storage.
    const { client, socket } = await connectedClient({ persistOfflineQueue: { storage } });
    const sent = socket.commands("publish");
    expect(sent.map((c) => c.params.data)).toEqual([{ n: 1 }, { n: 2 }]);
    expect(sent.map((c) => c.params.idempotencyKey)).toEqual(
      saved.map((p: { idempotencyKey: string }) => p.idempotencyKey),
    );
    for (const command of sent)
      socket.receive({ id: command.id, result: { offset: 1, epoch: "E" } });
    await flush();
    expect(store.has("herald:offline-queue")).toBe(false);
    client.disconnect();
  });
});
