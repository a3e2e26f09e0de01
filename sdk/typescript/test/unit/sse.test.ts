import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createClient, type FetchLike, type WebSocketConstructor } from "../../src/index.js";
import { SseParser, type SseEvent } from "../../src/transport/sse-parser.js";
import { createSseTransport, sseEndpoints } from "../../src/transport/sse.js";
import type { TransportClose } from "../../src/transport/types.js";
import { FakeWebSocket, flush } from "../helpers/fake-websocket.js";

describe("SseParser", () => {
  const parse = (...chunks: string[]) => {
    const events: SseEvent[] = [];
    const parser = new SseParser((e) => events.push(e));
    for (const chunk of chunks) parser.push(chunk);
    return events;
  };

  it("joins data lines, names events, skips comments", () => {
    expect(
      parse('event: session\ndata: {"session":"s1"}\n\n: ping\n\ndata: a\ndata: b\n\n'),
    ).toEqual([
      { event: "session", data: '{"session":"s1"}' },
      { event: "message", data: "a\nb" },
    ]);
  });

  it("handles any chunking and CRLF, CR or LF line ends", () => {
    const text = "data: one\r\n\r\ndata:two\r\rdata: three\n\n";
    const whole = parse(text);
    expect(whole.map((e) => e.data)).toEqual(["one", "two", "three"]);
    for (let i = 1; i < text.length; i++) {
      expect(parse(text.slice(0, i), text.slice(i))).toEqual(whole);
    }
    expect(parse(...text.split(""))).toEqual(whole);
  });

  it("does not dispatch an event without data, or an unfinished one", () => {
    expect(parse("event: close\n\n", "data: x")).toEqual([]);
  });
});

describe("sseEndpoints", () => {
  it("maps the WebSocket URL to /sse and /rpc on the same host", () => {
    expect(sseEndpoints("wss://rt.example.com/ws")).toEqual({
      streamUrl: "https://rt.example.com/sse",
      rpcUrl: "https://rt.example.com/rpc",
    });
    expect(sseEndpoints("ws://127.0.0.1:8080/realtime/ws?x=1")).toEqual({
      streamUrl: "http://127.0.0.1:8080/realtime/sse",
      rpcUrl: "http://127.0.0.1:8080/realtime/rpc",
    });
  });
});

/** A fake server: a stream the test writes events into, and recorded POSTs. */
function fakeServer(options: { streamStatus?: number; rpcStatus?: () => number } = {}) {
  const encoder = new TextEncoder();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const posts: { url: string; body: string }[] = [];
  const fetch: FetchLike = async (url, init) => {
    if (init?.method === "POST") {
      posts.push({ url, body: String(init.body) });
      return new Response(null, { status: options.rpcStatus?.() ?? 202 });
    }
    const body = new ReadableStream<Uint8Array>({ start: (c) => void (controller = c) });
    init?.signal?.addEventListener("abort", () => {
      try {
        controller.error(new Error("aborted"));
      } catch {
        // already closed
      }
    });
    return new Response(options.streamStatus === undefined ? body : null, {
      status: options.streamStatus ?? 200,
      headers: { "content-type": "text/event-stream" },
    });
  };
  return {
    fetch: vi.fn(fetch),
    posts,
    write: (text: string) => controller.enqueue(encoder.encode(text)),
    end: () => controller.close(),
  };
}

const realTick = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("SSE transport", () => {
  it("opens on the session event, delivers frames, posts commands in batches, reports the close", async () => {
    const server = fakeServer();
    const frames: string[] = [];
    const closes: TransportClose[] = [];
    let opened = 0;
    const transport = createSseTransport(server.fetch, sseEndpoints("ws://h:1/ws"), {
      onOpen: () => (opened += 1),
      onFrame: (text) => frames.push(String(text)),
      onClose: (close) => closes.push(close),
    });
    await realTick();
    server.write('event: session\ndata: {"session":"abc"}\n\n');
    await realTick();
    expect(opened).toBe(1);
    transport.send('{"id":1,"connect":{}}');
    transport.send('{"id":2,"ping":{}}');
    transport.send('{"id":3,"ping":{}}');
    await realTick();
    expect(server.posts.map((p) => p.url)).toEqual([
      "http://h:1/rpc?session=abc",
      "http://h:1/rpc?session=abc",
    ]);
    expect(server.posts.map((p) => p.body)).toEqual([
      '{"id":1,"connect":{}}',
      '{"id":2,"ping":{}}\n{"id":3,"ping":{}}',
    ]);
    server.write('data: {"id":1,"result":{}}\ndata: {"id":2,"result":{}}\n\n: ping\n\n');
    server.write('event: close\ndata: {"code":4201,"reason":"slow consumer"}\n\n');
    server.end();
    await realTick();
    expect(frames).toEqual(['{"id":1,"result":{}}\n{"id":2,"result":{}}']);
    expect(closes).toEqual([{ code: 4201, reason: "slow consumer", opened: true }]);
  });

  it("answers each ping at once with a pong, beside a command request in flight", async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const server = fakeServer();
    const fetch: FetchLike = async (url, init) => {
      // The command request hangs (a full queue on the server); pongs must not wait for it.
      if (init?.method === "POST" && !url.endsWith("&pong")) await held;
      return server.fetch(url, init);
    };
    const closes: TransportClose[] = [];
    const transport = createSseTransport(fetch, sseEndpoints("ws://h:1/ws"), {
      onOpen: () => {},
      onFrame: () => {},
      onClose: (close) => closes.push(close),
    });
    await realTick();
    server.write("event: ping\ndata: {}\n\n");
    await realTick();
    expect(server.posts).toEqual([]);
    server.write('event: session\ndata: {"session":"a b"}\n\n');
    await realTick();
    transport.send('{"id":1,"ping":{}}');
    server.write("event: ping\ndata: {}\n\nevent: ping\ndata: {}\n\n");
    await realTick();
    expect(server.posts).toEqual([
      { url: "http://h:1/rpc?session=a%20b&pong", body: "undefined" },
      { url: "http://h:1/rpc?session=a%20b&pong", body: "undefined" },
    ]);
    release();
    await realTick();
    await realTick();
    expect(server.posts.map((p) => p.body)).toContain('{"id":1,"ping":{}}');
    expect(closes).toEqual([]);
    transport.close();
  });

  it("reports a stream that never opens, with its HTTP status", async () => {
    const server = fakeServer({ streamStatus: 404 });
    const closes: TransportClose[] = [];
    createSseTransport(server.fetch, sseEndpoints("ws://h:1/ws"), {
      onOpen: () => {},
      onFrame: () => {},
      onClose: (close) => closes.push(close),
    });
    await realTick();
    expect(closes).toMatchObject([{ code: 1006, opened: false, httpStatus: 404 }]);
  });

  it("closes when /rpc says the session is gone, preferring the stream's close event", async () => {
    const server = fakeServer({ rpcStatus: () => 404 });
    const closes: TransportClose[] = [];
    const transport = createSseTransport(server.fetch, sseEndpoints("ws://h:1/ws"), {
      onOpen: () => transport.send("x"),
      onFrame: () => {},
      onClose: (close) => closes.push(close),
    });
    await realTick();
    server.write('event: session\ndata: {"session":"abc"}\n\n');
    await realTick();
    await realTick();
    expect(closes).toEqual([]);
    server.write('event: close\ndata: {"code":4200,"reason":"server shutdown"}\n\n');
    server.end();
    await realTick();
    expect(closes).toEqual([{ code: 4200, reason: "server shutdown", opened: true }]);
  });

  it("closes with 1006 when a session is gone and no close event comes", async () => {
    vi.useFakeTimers();
    const server = fakeServer({ rpcStatus: () => 404 });
    const closes: TransportClose[] = [];
    const transport = createSseTransport(server.fetch, sseEndpoints("ws://h:1/ws"), {
      onOpen: () => transport.send("x"),
      onFrame: () => {},
      onClose: (close) => closes.push(close),
    });
    await vi.advanceTimersByTimeAsync(0);
    server.write('event: session\ndata: {"session":"abc"}\n\n');
    await vi.advanceTimersByTimeAsync(999);
    expect(closes).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(closes).toMatchObject([{ code: 1006, opened: true, httpStatus: 404 }]);
    vi.useRealTimers();
  });

  it("maps a 413 from /rpc to 4009, as a WebSocket would close", async () => {
    const server = fakeServer({ rpcStatus: () => 413 });
    const closes: TransportClose[] = [];
    const transport = createSseTransport(server.fetch, sseEndpoints("ws://h:1/ws"), {
      onOpen: () => transport.send("x".repeat(10)),
      onFrame: () => {},
      onClose: (close) => closes.push(close),
    });
    await realTick();
    server.write('event: session\ndata: {"session":"abc"}\n\n');
    await realTick();
    await realTick();
    expect(closes).toMatchObject([{ code: 4009, opened: true, httpStatus: 413 }]);
  });
});

describe("transport auto", () => {
  beforeEach(() => FakeWebSocket.reset());
  afterEach(() => vi.useRealTimers());

  it("falls back to SSE after two failed WebSocket handshakes", async () => {
    vi.useFakeTimers();
    const server = fakeServer();
    const client = createClient({
      url: "ws://h:1/ws",
      allowInsecureTransport: true,
      WebSocket: FakeWebSocket as unknown as WebSocketConstructor,
      fetch: server.fetch,
      getToken: () => "t",
      random: () => 0,
    });
    client.connect();
    await flush();
    FakeWebSocket.last().serverClose(1006);
    await vi.advanceTimersByTimeAsync(1000);
    FakeWebSocket.last().serverClose(1006);
    expect(server.fetch).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(2000);
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(server.fetch).toHaveBeenCalledWith(
      "http://h:1/sse",
      expect.objectContaining({ method: "GET" }),
    );
    client.disconnect();
  });

  it("uses SSE when there is no WebSocket at all", async () => {
    const server = fakeServer();
    const client = createClient({
      url: "ws://h:1/ws",
      allowInsecureTransport: true,
      fetch: server.fetch,
      getToken: () => "t",
    });
    vi.stubGlobal("WebSocket", undefined);
    client.connect();
    await realTick();
    expect(server.fetch).toHaveBeenCalledTimes(1);
    server.write('event: session\ndata: {"session":"s"}\n\n');
    await realTick();
    expect(JSON.parse(server.posts[0]?.body ?? "{}")).toMatchObject({
      id: 1,
      connect: { token: "t" },
    });
    client.disconnect();
    vi.unstubAllGlobals();
  });
});
