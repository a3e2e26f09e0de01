/** A server the compatibility suite runs against: the reference socket.io server, or Herald. */
import type { Backend } from "./backend.js";

export interface Target {
  /** `http://127.0.0.1:<port>`: what an app passes to `io()`. */
  readonly url: string;
  /** The HS256 secret connection tokens are signed with. */
  readonly secret: string;
  /** The app's backend behind the target. */
  readonly backend: Backend;
  /** Publishes `data` as `event` on `channel`, as the app's services do. */
  publish(channel: string, event: string, data: unknown): Promise<void>;
  /** Closes every connection of `user` with a close code (4200: reconnect now); answers how many. */
  disconnect(user: string, code: number): Promise<number>;
  /** Subscribes every connection of `user` to `channel` from the server side. */
  subscribe(user: string, channel: string): Promise<void>;
  /** Ends the server-side subscription of every connection of `user` to `channel`. */
  unsubscribe(user: string, channel: string): Promise<void>;
  /**
   * Loses what connection state recovery needs (the reference's sessions; Herald's history in
   * Redis), so a client reconnecting now gets `recovered === false`. Absent on a target that
   * cannot (the recovery-lost case is skipped there).
   */
  loseState?(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The heartbeat every target runs with, short so a case sees several pings: socket.io-client
 * drops a connection whose next ping is later than interval + timeout ("ping timeout"), and
 * the server drops one whose pong is later than the timeout. (Herald pings from a sweep
 * that runs once a second, so its pings come up to a second late: a one-second timeout
 * would leave no margin.)
 */
export const HEARTBEAT = { intervalSeconds: 1, timeoutSeconds: 2 };
