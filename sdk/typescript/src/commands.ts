import { HeraldError, type LocalErrorCode } from "./errors.js";
import { encodeCommand, type ServerMessage } from "./protocol.js";
import type { Transport } from "./transport/types.js";

interface Pending {
  method: string;
  resolve: (value: unknown) => void;
  reject: (error: HeraldError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * Commands in flight: numbers each one, matches replies to them by id, and fails them on
 * timeout or when the connection ends.
 */
export class Commands {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  /** Sends `method` on `transport`; resolves with the result, rejects with a {@link HeraldError}. */
  send<T>(transport: Transport, method: string, params: unknown, timeoutMs: number): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new HeraldError("timeout", `${method}: no reply within ${timeoutMs} ms`, true));
      }, timeoutMs);
      this.pending.set(id, { method, resolve: resolve as (value: unknown) => void, reject, timer });
      transport.send(encodeCommand(id, method, params));
    });
  }

  /** Settles the command a reply answers (replies to nothing pending are ignored). */
  reply(message: ServerMessage): void {
    const id = message.id as number;
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    if (message.error) pending.reject(HeraldError.fromWire(message.error, pending.method));
    else pending.resolve(message.result ?? {});
  }

  /** The connection ended: every command in flight fails with `code`. */
  failAll(code: LocalErrorCode): void {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const entry of pending) {
      clearTimeout(entry.timer);
      entry.reject(
        new HeraldError(
          code,
          `${entry.method}: the connection ended before the reply`,
          code !== "client_closed",
        ),
      );
    }
  }
}

/** A command waiting for the connection. */
interface Waiting {
  method: string;
  params: unknown;
  resolve: (value: unknown) => void;
  reject: (error: HeraldError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Commands issued while connecting: sent once connected, failed after the command timeout. */
export class WaitingCommands {
  private waiting: Waiting[] = [];

  /** Holds `method` until {@link flush}; it fails with `timeout` after `timeoutMs`. */
  hold<T>(method: string, params: unknown, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: Waiting = {
        method,
        params,
        resolve: resolve as (value: unknown) => void,
        reject,
        timer: setTimeout(() => {
          this.waiting = this.waiting.filter((w) => w !== entry);
          reject(new HeraldError("timeout", `${method}: not connected in time`, true));
        }, timeoutMs),
      };
      this.waiting.push(entry);
    });
  }

  /** Connected: sends everything held, in order, through `send`. */
  flush(send: (method: string, params: unknown) => Promise<unknown>): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const entry of waiting) {
      clearTimeout(entry.timer);
      send(entry.method, entry.params).then(entry.resolve, entry.reject);
    }
  }

  /** Fails everything held with `error`. */
  failAll(error: HeraldError): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const entry of waiting) {
      clearTimeout(entry.timer);
      entry.reject(error);
    }
  }
}
