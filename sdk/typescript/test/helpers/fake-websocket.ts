/** A fake WebSocket for unit tests: records what the client sends, plays the server. */
import { afterEach, beforeEach, vi } from "vitest";
import {
  createClient,
  type HeraldClient,
  type HeraldOptions,
  type WebSocketConstructor,
} from "../../src/index.js";

export interface SentCommand {
  id: number;
  method: string;
  params: any;
}

export class FakeWebSocket {
  static instances: FakeWebSocket[] = [];
  /** Answer `ping` commands by themselves (for tests that run past the ping timeout). */
  static autoPing = false;
  static reset(): void {
    FakeWebSocket.instances = [];
    FakeWebSocket.autoPing = false;
  }
  static last(): FakeWebSocket {
    const socket = FakeWebSocket.instances.at(-1);
    if (!socket) throw new Error("no WebSocket was created");
    return socket;
  }

  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  readonly sent: string[] = [];
  closedByClient: { code?: number; reason?: string } | null = null;

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeWebSocket.instances.push(this);
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(data);
    if (FakeWebSocket.autoPing && data.includes('"ping":')) {
      const { id } = JSON.parse(data) as { id: number };
      queueMicrotask(() => this.receive({ id, result: { ts: Date.now() } }));
    }
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.readyState = 3;
  }

  // ---- the server's side ----

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  /** Sends server messages in one frame. */
  receive(...messages: object[]): void {
    this.onmessage?.({ data: messages.map((m) => JSON.stringify(m)).join("\n") });
  }

  /** Closes from the server's side (or fails the handshake, if never opened). */
  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** Every command sent, decoded. */
  commands(method?: string): SentCommand[] {
    const all = this.sent.flatMap((frame) =>
      frame.split("\n").map((line) => {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        const { id, ...rest } = parsed;
        const [name, params] = Object.entries(rest)[0] as [string, unknown];
        return { id: id as number, method: name, params };
      }),
    );
    return method ? all.filter((c) => c.method === method) : all;
  }

  /** The last command of `method`. */
  command(method: string): SentCommand {
    const found = this.commands(method).at(-1);
    if (!found) throw new Error(`no ${method} command was sent; sent: ${this.sent.join(" | ")}`);
    return found;
  }

  /** Replies to the last `method` command with `result`. */
  reply(method: string, result: object = {}): void {
    this.receive({ id: this.command(method).id, result });
  }

  /** Replies to the last `method` command with an error. */
  fail(method: string, code: number, temporary = false, message = "error"): void {
    this.receive({ id: this.command(method).id, error: { code, message, temporary } });
  }

  /** Opens and answers `connect`. */
  accept(client = "c1", expires = Math.floor(Date.now() / 1000) + 3600): void {
    this.open();
    this.reply("connect", { client, user: "u1", node: "n1", ping: 25, expires });
  }
}

/**
 * Fake timers at a fixed date and fresh {@link FakeWebSocket}s (answering pings) for every
 * test of the calling `describe`, with real timers restored after each.
 */
export function useFakeClockAndSockets(): void {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date("2026-01-01T00:00:00Z"));
    FakeWebSocket.reset();
    FakeWebSocket.autoPing = true;
  });
  afterEach(() => {
    vi.useRealTimers();
  });
}

/** Lets pending promise callbacks run (fake timers keep time still). */
export async function flush(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}

/** A client on {@link FakeWebSocket}s with fixed jitter (random 0.5) unless overridden. */
export function fakeClient(options: Partial<HeraldOptions> = {}): {
  client: HeraldClient;
  getToken: ReturnType<typeof vi.fn>;
} {
  let n = 0;
  const getToken = vi.fn(() => `token-${++n}`);
  const client = createClient({
    url: "wss://rt.example.com/ws",
    WebSocket: FakeWebSocket as unknown as WebSocketConstructor,
    transport: "websocket",
    getToken,
    random: () => 0.5,
    ...options,
  });
  return { client, getToken };
}

/** Creates a client, connects it and accepts the connection. */
export async function connectedClient(options: Partial<HeraldOptions> = {}) {
  const made = fakeClient(options);
  made.client.connect();
  await flush();
  const socket = FakeWebSocket.last();
  socket.accept();
  await flush();
  return { ...made, socket };
}
