/**
 * A connection speaking Herald's JSON client protocol over `ws`, as a browser would: commands
 * answered by id, pushes kept in arrival order, every wait bounded.
 */
import WebSocket from "ws";

export interface Push {
  channel?: string;
  pub?: { event: string; data: unknown; offset?: number; epoch?: string };
  subscribe?: Record<string, unknown>;
  unsubscribe?: { code: number; reason: string };
  [kind: string]: unknown;
}

export interface CommandError {
  code: number;
  message: string;
  temporary: boolean;
}

export interface WsClient {
  /** The `connect` result: this connection's id, user and node. */
  readonly connected: { client: string; user: string; node: string };
  /** Sends a command; resolves with its result, rejects with its `error`. */
  command<T = Record<string, unknown>>(method: string, body: object): Promise<T>;
  /** Takes the first push (received before or after the call) that `accept` matches; one wait at a time. */
  push(what: string, accept: (push: Push) => boolean, timeoutMs?: number): Promise<Push>;
  /** Resolves with the close code and reason once the socket closed. */
  readonly closed: Promise<{ code: number; reason: string }>;
  close(): void;
}

export async function connectWs(url: string, token: string): Promise<WsClient> {
  const socket = new WebSocket(url, "herald.v1.json");
  const pending = new Map<number, { resolve: (v: never) => void; reject: (e: unknown) => void }>();
  const pushes: Push[] = [];
  let wake: () => void = () => {};
  let nextId = 1;

  socket.on("message", (frame) => {
    for (const line of frame.toString().split("\n")) {
      if (!line) continue;
      const message = JSON.parse(line) as {
        id?: number;
        result?: never;
        error?: CommandError;
        push?: Push;
      };
      if (message.push) {
        pushes.push(message.push);
        wake();
      } else if (message.id !== undefined) {
        const waiter = pending.get(message.id);
        pending.delete(message.id);
        if (message.error) waiter?.reject(message.error);
        else waiter?.resolve(message.result as never);
      }
    }
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.once("close", (code, reason) => {
      for (const waiter of pending.values()) waiter.reject(new Error(`closed ${code}`));
      resolve({ code, reason: reason.toString() });
    }),
  );
  await new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve());
    socket.once("error", reject);
  });

  const command = <T>(method: string, body: object) =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`no answer to ${method} within 10 s`));
      }, 10_000);
      pending.set(id, {
        resolve: (value) => (clearTimeout(timer), resolve(value)),
        reject: (error) => (clearTimeout(timer), reject(error)),
      });
      socket.send(JSON.stringify({ id, [method]: body }));
    });

  const connected = await command<WsClient["connected"]>("connect", { token });
  return {
    connected,
    command,
    push: (what, accept, timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          wake = () => {};
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
        }, timeoutMs);
        const look = () => {
          const index = pushes.findIndex(accept);
          if (index < 0) return;
          clearTimeout(timer);
          wake = () => {};
          resolve(pushes.splice(index, 1)[0] as Push);
        };
        wake = look;
        look();
      }),
    closed,
    close: () => socket.close(),
  };
}
